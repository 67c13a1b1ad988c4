using System.Diagnostics;
using PfnBlock.Block;
using PfnBlock.Devices;
using PfnBlock.Memory;

namespace PfnBlock.Tests.Block;

/// <summary>
/// A stack 64 devices deep and a bio split 10 000 ways: data arrives, every level counts the bio
/// once, and neither submission nor completion grows the call stack with the depth or the width
/// (the per-thread dispatch queue and the iterative bio_endio loop).
/// </summary>
public sealed class StackDepthTests : IDisposable
{
    private readonly Scratch _scratch = new();
    private readonly DeviceSet _set = new();

    static StackDepthTests() => DeviceTypes.RegisterAssembly(typeof(StackDepthTests).Assembly);

    public void Dispose()
    {
        _set.Dispose();
        _scratch.Dispose();
    }

    private string Table(params string[] lines)
    {
        string path = _scratch.NewPath("depth.table");
        File.WriteAllLines(path, lines);
        return "table:" + path;
    }

    /// <summary>A stack of <paramref name="depth"/> targets of <paramref name="kind"/> over a probe device of 1 MiB.</summary>
    private (IBlockDevice Top, StackProbeDevice Probe, List<IBlockDevice> Levels) Stack(int depth, string kind)
    {
        string spec = $"probe:1M";
        for (int i = 0; i < depth; i++)
            spec = Table(kind switch { "linear" => $"0 2048 linear {spec} 0", "clone" => $"0 2048 clone {spec} 8", _ => $"0 2048 clone {spec} 8 now" });
        IBlockDevice top = _set.Open(spec);
        var levels = new List<IBlockDevice>();
        IBlockDevice d = top;
        while (d is MappedDevice m) { levels.Add(d); d = m.Table[0].Target.Devices[0]; }
        return (top, (StackProbeDevice)d, levels);
    }

    /// <summary>Writes and reads 8 KiB at sector 16; returns the stack depth the read's completion callback ran at.</summary>
    private static int WriteReadAndMeasure(IBlockDevice top)
    {
        using var arena = DramArena.Create(1 << 20, top.AddressSpace);
        byte[] data = Stamp.Make(16 << 9, 8192, 7);
        data.CopyTo(arena.AddressSpace!.KmapSpan(arena.PfnAt(0), 0, 8192));
        Assert.Equal(BlockStatus.Ok, TargetSeamProperties.RunOnce(top, new Bio().Init(BioOp.Write, 16).AddVec(arena.PfnAt(0), 0, 8192)));
        int depth = 0;
        var read = new Bio().Init(BioOp.Read, 16).AddVec(arena.PfnAt(4), 0, 8192);
        using var done = new ManualResetEventSlim();
        read.EndIo = _ => { depth = new StackTrace().FrameCount; done.Set(); };
        top.Submit(read);
        Assert.True(done.Wait(10_000));
        Assert.True(arena.AddressSpace.KmapSpan(arena.PfnAt(4), 0, 8192).SequenceEqual(data));
        return depth;
    }

    [Theory]
    [InlineData("linear")]
    [InlineData("clone")]
    public void A64DeepStackNeitherSubmitsNorCompletesRecursively(string kind)
    {
        (IBlockDevice one, StackProbeDevice probeOne, _) = Stack(1, kind);
        int shallowCompletion = WriteReadAndMeasure(one);
        int shallowSubmit = probeOne.DeepestSubmit;

        (IBlockDevice deep, StackProbeDevice probeDeep, List<IBlockDevice> levels) = Stack(64, kind);
        int deepCompletion = WriteReadAndMeasure(deep);
        int deepSubmit = probeDeep.DeepestSubmit;

        Assert.Equal(64, levels.Count);
        // A recursive design would add several frames per level (hundreds here); allow a few constant ones.
        Assert.True(deepSubmit - shallowSubmit < 12, $"submission at depth 64 ran {deepSubmit} frames deep, depth 1 ran {shallowSubmit}");
        Assert.True(deepCompletion - shallowCompletion < 12, $"completion at depth 64 ran {deepCompletion} frames deep, depth 1 ran {shallowCompletion}");
        for (int i = 0; i < levels.Count; i++)
        {
            DiskStatsSnapshot s = levels[i].Stats.Snapshot();
            // A clone target cuts the 8 KiB bios into two 4 KiB pieces, which pass the levels below whole.
            long ios = kind == "clone" && i > 0 ? 2 : 1;
            Assert.Equal((ios, ios, 0L), (s.Read.Ios, s.Write.Ios, s.InFlight));
            Assert.Equal((16L, 16L), (s.Read.Sectors, s.Write.Sectors));
            Assert.Equal(0, ((MappedDevice)levels[i]).ClonesOutstanding);
        }
    }

    [Fact]
    public void PiecesDispatchedBeforeMapReturnsNestOnlyBoundedlyDeep()
    {
        // SubmitNow opens a nested dispatch loop per level up to a bound, then queues: a stack 64
        // deep submits no deeper than one just past the bound, and still moves the data and counts.
        // The stacks share one probe device (one spec, one open device), whose deepest submission
        // only grows: each is read right after its run, shallowest first.
        int Run(int depth, out List<IBlockDevice> levels)
        {
            (IBlockDevice top, StackProbeDevice probe, levels) = Stack(depth, "clone-now");
            WriteReadAndMeasure(top);
            return probe.DeepestSubmit;
        }
        int one = Run(1, out _), two = Run(2, out _), eight = Run(8, out _), deep = Run(64, out List<IBlockDevice> levels);
        // A nested loop does go deeper than a queued one: the bound is what holds it.
        Assert.True(two > one, $"depth 2 submitted {two} frames deep, depth 1 {one}");
        Assert.True(deep - eight < 12, $"submission at depth 64 ran {deep} frames deep, depth 8 ran {eight}");
        foreach (IBlockDevice level in levels) Assert.Equal(0, ((MappedDevice)level).ClonesOutstanding);
    }

    [Theory]
    [InlineData("table")]
    [InlineData("clone")]
    public void A10000WaySplitCompletesOnceWithoutRecursion(string how)
    {
        const int ways = 10_000;
        // A table of 10 000 one-sector lines over one shared device, in reverse order (each line names
        // the same spec: one open device), or a clone target cutting every bio into 1-sector pieces.
        string spec = how == "table"
            ? Table([.. Enumerable.Range(0, ways).Select(i => $"{i} 1 linear probe:8M {ways - 1 - i}")])
            : Table($"0 {ways} clone probe:8M 1");
        IBlockDevice top = _set.Open(spec);
        using var arena = DramArena.Create(16 << 20, top.AddressSpace);
        byte[] data = Stamp.Make(0, ways * 512, 9);
        data.CopyTo(arena.AddressSpace!.KmapSpan(arena.PfnAt(0), 0, data.Length));
        var write = new Bio().Init(BioOp.Write, 0).AddVec(arena.PfnAt(0), 0, (uint)data.Length);
        Assert.Equal(BlockStatus.Ok, TargetSeamProperties.RunOnce(top, write));

        // The same callback on a bio that is not split, for the frames the test harness itself adds.
        int baseline = 0;
        var one = new Bio().Init(BioOp.Read, 0).AddVec(arena.PfnAt(4000), 0, 512);
        using var oneDone = new ManualResetEventSlim();
        one.EndIo = _ => { baseline = new StackTrace().FrameCount; oneDone.Set(); };
        top.Submit(one);
        Assert.True(oneDone.Wait(10_000));

        int depth = 0;
        var read = new Bio().Init(BioOp.Read, 0).AddVec(arena.PfnAt(2048), 0, (uint)data.Length);
        using var done = new ManualResetEventSlim();
        int calls = 0;
        read.EndIo = _ => { depth = new StackTrace().FrameCount; Interlocked.Increment(ref calls); done.Set(); };
        top.Submit(read);
        Assert.True(done.Wait(30_000));
        Assert.Equal(1, calls);
        Assert.Equal(BlockStatus.Ok, read.Status);
        Assert.True(arena.AddressSpace.KmapSpan(arena.PfnAt(2048), 0, data.Length).SequenceEqual(data));
        Assert.True(depth - baseline < 12, $"the completion of a {ways}-way split ran {depth} frames deep, an unsplit bio's {baseline}");

        var probe = (StackProbeDevice)_set.OpenDevices.Single(d => d.Device is StackProbeDevice).Device;
        Assert.True(probe.DeepestSubmit - baseline < 12, $"pieces were submitted {probe.DeepestSubmit} frames deep");
        DiskStatsSnapshot top1 = top.Stats.Snapshot();
        Assert.Equal((2, 1), (top1.Read.Ios, top1.Write.Ios));
        DiskStatsSnapshot lower = probe.Stats.Snapshot();
        Assert.Equal((ways + 1, ways), (lower.Read.Ios, lower.Write.Ios));
        Assert.Equal(0, ((MappedDevice)top).ClonesOutstanding);
    }
}
