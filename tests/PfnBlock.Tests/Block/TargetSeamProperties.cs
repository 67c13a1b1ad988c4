using CsCheck;
using PfnBlock.Block;
using PfnBlock.Devices;

namespace PfnBlock.Tests.Block;

/// <summary>
/// The target seam against a model: random stacks of targets that remap in place (linear at an
/// offset, tables that permute ranges so bios split at line boundaries), clone (bios fanned out
/// into chained pieces with end_io hooks) and requeue, over a RAM disk that may answer Busy. The
/// top of every stack is a bijection onto the bottom, so a flat byte array models it: bytes read
/// equal bytes written, every bio completes exactly once, every layer's statistics add up, and no
/// pool has a bio left out.
/// </summary>
public sealed class TargetSeamProperties
{
    private const long BottomSectors = 8192; // 4 MiB

    static TargetSeamProperties() => DeviceTypes.RegisterAssembly(typeof(TargetSeamProperties).Assembly);

    /// <summary>One level of a stack: permute (K lines), offset (sectors), clone (chunk), requeue (percent).</summary>
    private sealed record Layer(string Kind, int Param, int Seed);

    private sealed record Op(int Kind, long Sector, int Sectors, int Seed);

    private static readonly Gen<Layer> GenLayer = Gen.OneOf(
        Gen.Select(Gen.Int[2, 12], Gen.Int, (k, s) => new Layer("permute", k, s)),
        Gen.Select(Gen.Int[1, 64], Gen.Int, (o, s) => new Layer("offset", o * 8, s)),
        Gen.Select(Gen.Int[1, 64], Gen.Int, (c, s) => new Layer("clone", c, s)),
        Gen.Select(Gen.Int[10, 60], Gen.Int, (p, s) => new Layer("requeue", p, s)));

    // 0 read, 1 write, 2 discard, 3 write-zeroes, 4 flush; lengths up to 128 sectors.
    private static readonly Gen<Op> GenOp = Gen.Select(Gen.Frequency((4, Gen.Int[0, 1]), (1, Gen.Int[2, 4])), Gen.Long[0, BottomSectors], Gen.Int[1, 128], Gen.Int,
        (k, s, n, seed) => new Op(k, s, n, seed));

    [Fact]
    public void RandomStacksBehaveLikeAFlatDevice()
    {
        Gen.Select(GenLayer.Array[1, 4], Gen.Bool, GenOp.Array[5, 40]).Sample((layers, busy, ops) =>
        {
            using var scratch = new Scratch();
            using var set = new DeviceSet();
            (IBlockDevice top, List<IBlockDevice> levels) = Build(set, scratch, layers, busy);
            RunAgainstModel(top, levels, ops);
        }, iter: 60, threads: 1);
    }

    [Fact]
    public void ConcurrentSubmittersOnDisjointRangesOfARandomStack()
    {
        Gen.Select(GenLayer.Array[1, 3], GenOp.Array[20, 40].Array[4]).Sample((layers, perThread) =>
        {
            using var scratch = new Scratch();
            using var set = new DeviceSet();
            (IBlockDevice top, List<IBlockDevice> levels) = Build(set, scratch, layers, busy: true);
            long quarter = top.CapacitySectors / 4 / 8 * 8;
            using var buffers = new IoBuffers(top.AddressSpace, 8L << 20);
            var models = new byte[4][];
            Parallel.For(0, 4, t =>
            {
                models[t] = new byte[quarter << Bio.SectorShift];
                foreach (Op op in perThread[t])
                {
                    long sector = op.Sector % Math.Max(1, quarter - op.Sectors);
                    if (op.Sectors > quarter) continue;
                    Apply(top, buffers, models[t], t * quarter, op with { Sector = sector });
                }
            });
            for (int t = 0; t < 4; t++)
                Assert.True(ReadAll(top, buffers, t * quarter, quarter).AsSpan().SequenceEqual(models[t]), $"quarter {t} differs from its model");
            AssertQuiet(levels);
        }, iter: 15, threads: 1);
    }

    private static void RunAgainstModel(IBlockDevice top, List<IBlockDevice> levels, Op[] ops)
    {
        var model = new byte[top.CapacityBytes];
        using var buffers = new IoBuffers(top.AddressSpace, 8L << 20);
        int reads = 0, writes = 0;
        foreach (Op op in ops)
        {
            long sector = op.Sector % Math.Max(1, top.CapacitySectors - op.Sectors);
            if (op.Sectors > top.CapacitySectors) continue;
            Apply(top, buffers, model, 0, op with { Sector = sector });
            if (op.Kind == 0) reads++;
            if (op.Kind is 1 or 3) writes++;
        }
        DiskStatsSnapshot s = top.Stats.Snapshot();
        Assert.Equal(reads, s.Read.Ios);
        Assert.Equal(writes, s.Write.Ios);
        Assert.True(ReadAll(top, buffers, 0, top.CapacitySectors).AsSpan().SequenceEqual(model), "the device differs from its model");
        AssertQuiet(levels);
    }

    /// <summary>Runs one op at <paramref name="baseSector"/> + op.Sector and applies it to the model (indexed from <paramref name="baseSector"/>).</summary>
    private static void Apply(IBlockDevice dev, IoBuffers buffers, byte[] model, long baseSector, Op op)
    {
        var rng = new Random(op.Seed);
        int bytes = op.Sectors << Bio.SectorShift;
        long at = op.Sector << Bio.SectorShift;
        long deviceOffset = (baseSector + op.Sector) << Bio.SectorShift;
        switch (op.Kind)
        {
            case 0:
            {
                using IoBuffers.Layout layout = buffers.NewLayout(rng, bytes);
                layout.Fill(0xEE);
                Assert.Equal(BlockStatus.Ok, RunOnce(dev, layout.AddTo(new Bio().Init(BioOp.Read, baseSector + op.Sector))));
                Assert.True(layout.Read().AsSpan().SequenceEqual(model.AsSpan((int)at, bytes)), $"read of {op.Sectors} sectors at {op.Sector} differs");
                break;
            }
            case 1:
            {
                using IoBuffers.Layout layout = buffers.NewLayout(rng, bytes);
                byte[] data = Stamp.Make(deviceOffset, bytes, op.Seed);
                layout.Write(data);
                BioFlags flags = rng.Next(4) == 0 ? BioFlags.Fua | BioFlags.Preflush : BioFlags.None;
                Assert.Equal(BlockStatus.Ok, RunOnce(dev, layout.AddTo(new Bio().Init(BioOp.Write, baseSector + op.Sector, flags))));
                data.CopyTo(model, at);
                break;
            }
            case 2:
            case 3:
            {
                var bio = new Bio().Init(op.Kind == 2 ? BioOp.Discard : BioOp.WriteZeroes, baseSector + op.Sector);
                bio.Iter.Size = (uint)bytes;
                Assert.Equal(BlockStatus.Ok, RunOnce(dev, bio));
                Array.Clear(model, (int)at, bytes);
                break;
            }
            default:
                Assert.Equal(BlockStatus.Ok, RunOnce(dev, new Bio().Init(BioOp.Flush, 0)));
                break;
        }
    }

    private static byte[] ReadAll(IBlockDevice dev, IoBuffers buffers, long sector, long sectors)
    {
        var all = new byte[sectors << Bio.SectorShift];
        for (long done = 0; done < sectors; done += 256)
        {
            int n = (int)Math.Min(256, sectors - done);
            using IoBuffers.Layout layout = buffers.NewLayout(new Random((int)done), n << Bio.SectorShift);
            Assert.Equal(BlockStatus.Ok, RunOnce(dev, layout.AddTo(new Bio().Init(BioOp.Read, sector + done))));
            layout.Read().CopyTo(all, done << Bio.SectorShift);
        }
        return all;
    }

    /// <summary>Submits and waits, asserting that the bio completes exactly once and never shows Busy.</summary>
    internal static BlockStatus RunOnce(IBlockDevice dev, Bio bio)
    {
        int calls = 0;
        BlockStatus status = default;
        using var done = new ManualResetEventSlim();
        bio.EndIo = b => { status = b.Status; Interlocked.Increment(ref calls); done.Set(); };
        dev.Submit(bio);
        Assert.True(done.Wait(TimeSpan.FromSeconds(30)), "bio never completed");
        Thread.Sleep(0);
        Assert.Equal(1, Volatile.Read(ref calls));
        Assert.NotEqual(BlockStatus.Busy, status);
        Assert.Equal(0, bio.Depth);
        return status;
    }

    /// <summary>Every level idle, every pool with nothing out.</summary>
    private static void AssertQuiet(List<IBlockDevice> levels)
    {
        foreach (IBlockDevice d in levels)
        {
            // In-flight counts drop as frames unwind, which may finish just after the submitter's callback.
            SpinWait.SpinUntil(() => d.Stats.Snapshot().InFlight == 0, 2000);
            Assert.Equal(0, d.Stats.Snapshot().InFlight);
            if (d is MappedDevice m)
            {
                Assert.Equal(0, m.ClonesOutstanding);
                foreach (TableEntry e in m.Table)
                    if (e.Target is CloneTarget c) Assert.Equal(0, c.Pool.Outstanding);
            }
        }
    }

    private static (IBlockDevice Top, List<IBlockDevice> Levels) Build(DeviceSet set, Scratch scratch, Layer[] layers, bool busy)
    {
        string spec = busy ? $"busyram:{BottomSectors >> 11}M,percent=30" : $"ram:{BottomSectors >> 11}M";
        long sectors = BottomSectors;
        foreach (Layer l in layers)
        {
            var rng = new Random(l.Seed);
            var lines = new List<string>();
            switch (l.Kind)
            {
                case "permute":
                {
                    // K segments (multiples of 8 sectors) laid out below in a shuffled order: a bijection.
                    long units = sectors / 8;
                    var cuts = new SortedSet<long> { 0, units };
                    while (cuts.Count < Math.Min(l.Param, units) + 1) cuts.Add(rng.NextInt64(1, units));
                    long[] points = [.. cuts];
                    int k = points.Length - 1;
                    int[] order = [.. Enumerable.Range(0, k).OrderBy(_ => rng.Next())];
                    var lowerStart = new long[k];
                    long at = 0;
                    foreach (int seg in order) { lowerStart[seg] = at; at += (points[seg + 1] - points[seg]) * 8; }
                    for (int i = 0; i < k; i++)
                        lines.Add($"{points[i] * 8} {(points[i + 1] - points[i]) * 8} linear {spec} {lowerStart[i]}");
                    break;
                }
                case "offset":
                    if (l.Param >= sectors) continue;
                    lines.Add($"0 {sectors - l.Param} linear {spec} {l.Param}");
                    sectors -= l.Param;
                    break;
                case "clone":
                    lines.Add($"0 {sectors} clone {spec} {l.Param}");
                    break;
                default:
                    lines.Add($"0 {sectors} requeue {spec} {l.Param}");
                    break;
            }
            string path = scratch.NewPath("seam.table");
            File.WriteAllLines(path, lines);
            spec = "table:" + path;
        }
        IBlockDevice top = set.Open(spec);
        var levels = new List<IBlockDevice>();
        var todo = new Stack<IBlockDevice>([top]);
        while (todo.TryPop(out IBlockDevice? d))
        {
            if (levels.Contains(d)) continue;
            levels.Add(d);
            if (d is MappedDevice m) foreach (TableEntry e in m.Table) foreach (IBlockDevice lower in e.Target.Devices) todo.Push(lower);
        }
        return (top, levels);
    }
}
