using BenchmarkDotNet.Attributes;
using PfnBlock.Block;
using PfnBlock.Devices;
using PfnBlock.Devices.Null;
using PfnBlock.Memory;

namespace PfnBlock.Microbench;

/// <summary>The per-I/O cost of the block layer itself: pfn lookup, bio setup, validation, accounting, completion.</summary>
[MemoryDiagnoser]
public unsafe class BlockLayerBenchmarks
{
    private static readonly Action<Bio> s_done = _ => { };
    private DramArena _arena = null!;
    private NullDevice _null = null!;
    private DeviceSet _set = null!;
    private IBlockDevice _linear = null!;
    private IBlockDevice _linear2 = null!;
    private string _dir = null!;
    private Bio _bio = null!;
    private Pfn _pfn;

    [GlobalSetup]
    public void Setup()
    {
        _arena = DramArena.Create(64 << 20);
        _pfn = _arena.Allocator.Allocate(1).First;
        _null = new NullDevice(1L << 30);
        _bio = new Bio(4);
        _dir = Directory.CreateTempSubdirectory("pfnblock-microbench-").FullName;
        File.WriteAllText(Path.Combine(_dir, "l1.table"), "0 2097152 linear null:1G 0\n");
        File.WriteAllText(Path.Combine(_dir, "l2.table"), $"0 2097152 linear table:{_dir}/l1.table 0\n");
        _set = new DeviceSet();
        _linear = _set.Open($"table:{_dir}/l1.table");
        _linear2 = _set.Open($"table:{_dir}/l2.table");
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _null.Dispose();
        _set.Dispose();
        _arena.Dispose();
        Directory.Delete(_dir, recursive: true);
    }

    /// <summary>pfn → region → CPU address through the section table.</summary>
    [Benchmark]
    public nint Kmap() => (nint)_arena.AddressSpace!.TryKmap(_pfn, 128, 512);

    /// <summary>Build a one-vector 4 KiB read and push it through a null device.</summary>
    [Benchmark]
    public BlockStatus SubmitToNullDevice()
    {
        _bio.Init(BioOp.Read, 8).AddVec(_pfn, 0, 4096);
        _bio.EndIo = s_done;
        _null.Submit(_bio);
        return _bio.Status;
    }

    /// <summary>The same through one dm-linear level over a null device: the cost of one level of stacking.</summary>
    [Benchmark]
    public BlockStatus SubmitThroughLinear()
    {
        _bio.Init(BioOp.Read, 8).AddVec(_pfn, 0, 4096);
        _bio.EndIo = s_done;
        _linear.Submit(_bio);
        return _bio.Status;
    }

    /// <summary>The same through two dm-linear levels.</summary>
    [Benchmark]
    public BlockStatus SubmitThroughTwoLinearLevels()
    {
        _bio.Init(BioOp.Read, 8).AddVec(_pfn, 0, 4096);
        _bio.EndIo = s_done;
        _linear2.Submit(_bio);
        return _bio.Status;
    }
}
