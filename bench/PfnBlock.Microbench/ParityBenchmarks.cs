using BenchmarkDotNet.Attributes;
using PfnBlock.Targets.Md;

namespace PfnBlock.Microbench;

/// <summary>
/// The RAID5 parity XOR (<see cref="Parity.Xor"/>): on a cache-resident 64 KiB chunk (L2), and on
/// 64 MiB buffers (from memory) beside a 64 MiB memcpy in the same run, which gives the machine's
/// memory bandwidth to compare it with. Bytes per second = Bytes / mean.
/// </summary>
public unsafe class ParityBenchmarks
{
    [Params(64 << 10, 64 << 20)]
    public int Bytes;

    private byte* _dst, _src;

    [GlobalSetup]
    public void Setup()
    {
        _dst = (byte*)System.Runtime.InteropServices.NativeMemory.AlignedAlloc((nuint)Bytes, 4096);
        _src = (byte*)System.Runtime.InteropServices.NativeMemory.AlignedAlloc((nuint)Bytes, 4096);
        new Random(1).NextBytes(new Span<byte>(_dst, Bytes));
        new Random(2).NextBytes(new Span<byte>(_src, Bytes));
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        System.Runtime.InteropServices.NativeMemory.AlignedFree(_dst);
        System.Runtime.InteropServices.NativeMemory.AlignedFree(_src);
    }

    /// <summary>dst ^= src: reads 2 × Bytes, writes Bytes.</summary>
    [Benchmark(Baseline = true)]
    public void Xor() => Parity.Xor(_dst, _src, (nuint)Bytes);

    /// <summary>memcpy of the same size: reads Bytes, writes Bytes.</summary>
    [Benchmark]
    public void Memcpy() => Buffer.MemoryCopy(_src, _dst, Bytes, Bytes);
}
