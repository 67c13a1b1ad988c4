using BenchmarkDotNet.Attributes;
using PfnBlock.Block;
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
    private Bio _bio = null!;
    private Pfn _pfn;

    [GlobalSetup]
    public void Setup()
    {
        _arena = DramArena.Create(64 << 20);
        _pfn = _arena.Allocator.Allocate(1).First;
        _null = new NullDevice(1L << 30);
        _bio = new Bio(4);
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _null.Dispose();
        _arena.Dispose();
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
}
