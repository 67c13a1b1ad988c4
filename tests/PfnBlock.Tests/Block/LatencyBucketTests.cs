using PfnBlock.Block;
using PfnBlock.Devices.Ram;
using PfnBlock.Memory;

namespace PfnBlock.Tests.Block;

/// <summary>The log2 latency buckets every device counts its requests in, per thread, per operation group.</summary>
public sealed class LatencyBucketTests
{
    [Fact]
    public void BucketsArePowersOfTwoFrom256TicksWithAnOverflowBucket()
    {
        Assert.Equal(0, LatencyBuckets.Of(0));
        Assert.Equal(0, LatencyBuckets.Of(255));
        Assert.Equal(1, LatencyBuckets.Of(256));
        Assert.Equal(1, LatencyBuckets.Of(511));
        Assert.Equal(2, LatencyBuckets.Of(512));
        Assert.Equal(30, LatencyBuckets.Of((1L << 38) - 1));
        Assert.Equal(31, LatencyBuckets.Of(1L << 38));
        Assert.Equal(31, LatencyBuckets.Of(long.MaxValue));
        Assert.Equal(31, LatencyBuckets.Of(-1));
        for (int b = 0; b < LatencyBuckets.Count; b++)
        {
            Assert.Equal(b, LatencyBuckets.Of(LatencyBuckets.LowerBoundTicks(b)));
            if (b < LatencyBuckets.Count - 1) Assert.Equal(b + 1, LatencyBuckets.Of(LatencyBuckets.UpperBoundTicks(b)));
        }
    }

    [Fact]
    public void EveryCompletedRequestIsInOneBucketOfItsGroupWhicheverThreadCompletedIt()
    {
        using RamDevice device = RamDevice.Create(16 << 20);
        using var arena = DramArena.Create(1 << 20, device.AddressSpace, "latency-buffers");
        Pfn buffer = arena.Allocator.Allocate(1).First;
        void Run(int seed)
        {
            var pool = new BioPool();
            var rng = new Random(seed);
            for (int i = 0; i < 500; i++)
            {
                BioOp op = rng.Next(4) switch { 0 => BioOp.Read, 1 => BioOp.Write, 2 => BioOp.Discard, _ => BioOp.WriteZeroes };
                Bio bio = pool.Rent(op, rng.Next(0, 4000) * 8L);
                if (op is BioOp.Read or BioOp.Write) bio.AddVec(buffer, 0, Pfn.PageSize);
                else bio.Iter.Size = Pfn.PageSize;
                Assert.Equal(BlockStatus.Ok, device.SubmitAndWait(bio));
                bio.Release();
            }
        }
        Thread[] threads = [.. Enumerable.Range(1, 3).Select(seed => new Thread(() => Run(seed)))];
        foreach (Thread t in threads) t.Start();
        foreach (Thread t in threads) t.Join();

        DiskStatsSnapshot s = device.Stats.Snapshot();
        DiskLatencySnapshot latency = device.Stats.LatencySnapshot();
        Assert.Equal(1500, s.Read.Ios + s.Write.Ios + s.Discard.Ios);
        Assert.Equal(s.Read.Ios, latency.Read.Sum());
        Assert.Equal(s.Write.Ios, latency.Write.Sum());
        Assert.Equal(s.Discard.Ios, latency.Discard.Sum());
        Assert.Equal(0, latency.Flush.Sum());
        Assert.True(s.Read.Ticks > 0 && s.Write.Ticks > 0);
        // The time sum lies within what the buckets allow.
        long low = latency.Write.Select((n, b) => n * LatencyBuckets.LowerBoundTicks(b)).Sum();
        Assert.True(s.Write.Ticks >= low, $"{s.Write.Ticks} ticks is below the buckets' floor {low}");
    }
}
