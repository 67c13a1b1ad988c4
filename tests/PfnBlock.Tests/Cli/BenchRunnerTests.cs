using PfnBlock.Block;
using PfnBlock.Cli.Bench;
using PfnBlock.Devices;

namespace PfnBlock.Tests.Cli;

/// <summary>
/// What <c>pfnblock bench</c> reports is what was done: I/O counts match the work (a size-based
/// run moves exactly the region), verify finds the data it wrote, and the CPU accounting is
/// consistent (CPU per I/O is the process's CPU time over the I/Os, percentages over wall time).
/// Nothing here is timed.
/// </summary>
public sealed class BenchRunnerTests
{
    [Theory]
    [InlineData(RwMode.Write, 1, 1)]
    [InlineData(RwMode.RandRw, 4, 2)]
    [InlineData(RwMode.Read, 8, 1)]
    public void ASizeBasedRunMovesTheRegionOnceAndReportsItsCpu(RwMode rw, int depth, int jobs)
    {
        using var set = new DeviceSet();
        IBlockDevice dev = set.Open("ram:4M");
        var options = new BenchOptions { Device = DeviceSpec.Parse("ram:4M"), Rw = rw, IoDepth = depth, Jobs = jobs, Verify = true };
        BenchResult r = new BenchRunner(dev, options).Run();
        Assert.Null(r.Error);
        // Sequential and verify runs give each job its slice: every 4 KiB block exactly once.
        if (rw != RwMode.RandRw) Assert.Equal(4L << 20, r.Read.Bytes + r.Write.Bytes);
        Assert.Equal(r.TotalIos * 4096, r.Read.Bytes + r.Write.Bytes);
        Assert.True(r.CpuSecondsUser + r.CpuSecondsSystem > 0, "no CPU time measured");
        Assert.Equal((r.CpuSecondsUser + r.CpuSecondsSystem) * 1e9 / r.TotalIos, r.CpuNanosPerIo, 6);
        double wall = Math.Max(r.Read.Seconds, r.Write.Seconds);
        Assert.Equal(100 * r.CpuSecondsUser / wall, r.CpuPercent.User, 6);
        var json = r.ToJson();
        Assert.Equal(r.CpuNanosPerIo, (double)json["cpu_ns_per_io"]!);
        Assert.Equal(r.TotalIos, (long)json["read"]!["total_ios"]! + (long)json["write"]!["total_ios"]!);
    }

    [Fact]
    public void TheTimelineAccountsForTheMeasuredIos()
    {
        using var set = new DeviceSet();
        IBlockDevice dev = set.Open("ram:4M");
        var options = new BenchOptions { Device = DeviceSpec.Parse("ram:4M"), Rw = RwMode.RandRw, RuntimeSeconds = 1.2 };
        BenchResult r = new BenchRunner(dev, options).Run();
        Assert.Null(r.Error);
        Assert.InRange(r.Timeline.Count, 4, 6); // 250 ms samples and the tail
        Assert.True(r.Timeline.Zip(r.Timeline.Skip(1)).All(p => p.First.Seconds < p.Second.Seconds), "samples out of order");
        double previous = 0, reads = 0, writes = 0;
        foreach (BenchSample s in r.Timeline)
        {
            reads += s.ReadIops * (s.Seconds - previous);
            writes += s.WriteIops * (s.Seconds - previous);
            previous = s.Seconds;
        }
        // The samples cover the measured phase; only I/Os completing after the last sample, before the jobs stop, are missing.
        Assert.InRange(reads, 0.9 * r.Read.Ios, r.Read.Ios + 1);
        Assert.InRange(writes, 0.9 * r.Write.Ios, r.Write.Ios + 1);
        Assert.Equal(r.Timeline.Count, r.ToJson()["timeline"]!.AsArray().Count);
    }

    [Fact]
    public void ABenchOfNoIoHasNoCpuPerIo()
    {
        var empty = new DirectionResult(0, 0, 0, new HdrHistogram.LongHistogram(1, 1000, 3));
        var r = new BenchResult(new BenchOptions { Device = DeviceSpec.Parse("null:1M") }, "d", empty, empty, 0, 0.5, 0.1, "failed");
        Assert.Equal(0, r.CpuNanosPerIo);
        Assert.Equal((0.0, 0.0), r.CpuPercent);
    }
}
