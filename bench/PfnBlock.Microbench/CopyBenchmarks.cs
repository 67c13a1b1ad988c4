using BenchmarkDotNet.Attributes;
using PfnBlock.Memory;

namespace PfnBlock.Microbench;

/// <summary>4 KiB copies into a shared /dev/shm mapping: non-temporal (the pmem write path) against memcpy.</summary>
public unsafe class CopyBenchmarks
{
    private const int Block = 4096;
    private DramArena _arena = null!;
    private PfnBlock.Namespaces.PmemNamespace _ns = null!;
    private byte* _src;
    private string _path = "";
    private long _blocks;
    private ulong _rng = 0x9E3779B97F4A7C15UL;

    [GlobalSetup]
    public void Setup()
    {
        _path = $"/dev/shm/pfnblock-microbench-{Environment.ProcessId}";
        _ns = PfnBlock.Namespaces.PmemNamespace.Create(_path, new PfnBlock.Namespaces.NamespaceCreateOptions { Size = 256 << 20, Force = true });
        _arena = DramArena.Create(1 << 20);
        _src = _arena.BaseAddress;
        new Span<byte>(_src, Block).Fill(0x5a);
        _blocks = _ns.DataSize / Block;
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _ns.Dispose();
        _arena.Dispose();
        File.Delete(_path);
    }

    private byte* NextBlock()
    {
        _rng ^= _rng >> 12; _rng ^= _rng << 25; _rng ^= _rng >> 27;
        return _ns.DataAddress + (long)(_rng * 0x2545F4914F6CDD1DUL % (ulong)_blocks) * Block;
    }

    /// <summary>Streaming stores plus a store fence per block (memcpy_flushcache + wmb).</summary>
    [Benchmark(Baseline = true)]
    public void NonTemporalRandom4k()
    {
        PersistentMemory.CopyNonTemporal(NextBlock(), _src, Block);
        PersistentMemory.Drain();
    }

    /// <summary>Cached stores (memcpy), no write-back.</summary>
    [Benchmark]
    public void MemcpyRandom4k() => Buffer.MemoryCopy(_src, NextBlock(), Block, Block);

    /// <summary>Cached stores followed by a cache-line write-back of every line and a fence (memcpy + clwb).</summary>
    [Benchmark]
    public void MemcpyFlushRandom4k()
    {
        byte* dst = NextBlock();
        Buffer.MemoryCopy(_src, dst, Block, Block);
        PersistentMemory.Persist(dst, Block);
    }

    /// <summary>Reading a cold random block out of the mapping.</summary>
    [Benchmark]
    public void ReadRandom4k() => Buffer.MemoryCopy(NextBlock(), _src, Block, Block);
}
