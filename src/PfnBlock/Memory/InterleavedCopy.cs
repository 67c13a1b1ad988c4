using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace PfnBlock.Memory;

/// <summary>One copy of a batch: <see cref="Length"/> bytes from <see cref="Source"/> to <see cref="Destination"/>.</summary>
public readonly unsafe struct CopyPiece(byte* destination, byte* source, uint length)
{
    /// <summary>Where the bytes go.</summary>
    public readonly byte* Destination = destination;
    /// <summary>Where they come from.</summary>
    public readonly byte* Source = source;
    /// <summary>How many; a multiple of <see cref="InterleavedCopy.Granule"/>.</summary>
    public readonly uint Length = length;
}

/// <summary>
/// Copies several independent blocks side by side, <see cref="Step"/> bytes of each in turn, so
/// that the page walks and cache misses that start each block overlap instead of following one
/// another. One 4 KiB block at random in a 4 KiB-page mapping costs a TLB miss and a cold line
/// before its loads stream; copied alone, with other code between blocks, those stalls add up
/// (bench/qd1-ceiling.c: 0.71× of the independent loop). In a C probe of this shape, eight side by side
/// ran 2.5× as fast as one at a time with some code between blocks (docs/BENCHMARKS.md §1).
/// </summary>
public static unsafe class InterleavedCopy
{
    /// <summary>Bytes of one piece copied before moving on to the next piece (four 64-byte lines).</summary>
    public const int Step = 256;

    /// <summary>
    /// Pieces copied side by side; a longer batch goes in groups of this many. Measured with 4 KiB
    /// random reads and writes at iodepth 32 (pfnblock bench, two alternations): 4 ways 1.6 M
    /// reads/s, 8 ways 2.1 M, 16 and 32 ways 1.7–2.1 M; eight keeps each group's lines and pages
    /// well inside the L1 cache and the first-level TLB.
    /// </summary>
    public const int Ways = 8;

    /// <summary>The unit every piece's length is a multiple of (a cache line).</summary>
    public const int Granule = 64;

    /// <summary>True when <paramref name="length"/> can be a piece's length.</summary>
    public static bool Fits(uint length) => length != 0 && (length & (Granule - 1)) == 0;

    /// <summary>Copies every piece with ordinary (cached) stores.</summary>
    public static void Copy(ReadOnlySpan<CopyPiece> pieces)
    {
        if (Vectorised) Run(pieces, nonTemporal: false);
        else foreach (CopyPiece p in pieces) Buffer.MemoryCopy(p.Source, p.Destination, p.Length, p.Length);
    }

    /// <summary>
    /// Copies every piece with non-temporal stores, as <see cref="PersistentMemory.CopyNonTemporal"/>
    /// does one block, and records them in the persistence trace when it is on. Every destination must
    /// be 64-byte aligned. The stores are not fenced: the caller fences once for the batch
    /// (<see cref="PersistentMemory.Drain"/>).
    /// </summary>
    public static void Stream(ReadOnlySpan<CopyPiece> pieces)
    {
        if (!Vectorised)
        {
            // One by one, as the single-block path would do it.
            foreach (CopyPiece p in pieces) PersistentMemory.CopyNonTemporal(p.Destination, p.Source, p.Length);
            return;
        }
        Run(pieces, nonTemporal: true);
        if (PmemTrace.Enabled)
            foreach (CopyPiece p in pieces) PmemTrace.Stored(p.Destination, p.Length, nonTemporal: true);
    }

    private static bool Vectorised => (Vector512.IsHardwareAccelerated && Avx512F.IsSupported) || Avx.IsSupported;

    private static void Run(ReadOnlySpan<CopyPiece> pieces, bool nonTemporal)
    {
        for (int g = 0; g < pieces.Length; g += Ways) RunGroup(pieces.Slice(g, Math.Min(Ways, pieces.Length - g)), nonTemporal);
    }

    private static void RunGroup(ReadOnlySpan<CopyPiece> pieces, bool nonTemporal)
    {
        bool wide = Vector512.IsHardwareAccelerated && Avx512F.IsSupported;
        uint longest = 0;
        foreach (CopyPiece p in pieces) longest = Math.Max(longest, p.Length);
        for (uint at = 0; at < longest; at += Step)
        {
            foreach (CopyPiece p in pieces)
            {
                if (at >= p.Length) continue;
                byte* d = p.Destination + at, s = p.Source + at;
                uint n = Math.Min(Step, p.Length - at);
                if (wide && n == Step)
                {
                    Step512(d, s, nonTemporal);
                    continue;
                }
                for (uint i = 0; i < n; i += Granule)
                    if (wide) Line512(d + i, s + i, nonTemporal);
                    else Line256(d + i, s + i, nonTemporal);
            }
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Step512(byte* d, byte* s, bool nonTemporal)
    {
        // Four loads before the four stores: the misses of one step's lines overlap too.
        Vector512<byte> a = Vector512.Load(s), b = Vector512.Load(s + 64), c = Vector512.Load(s + 128), e = Vector512.Load(s + 192);
        if (nonTemporal)
        {
            Avx512F.StoreAlignedNonTemporal(d, a);
            Avx512F.StoreAlignedNonTemporal(d + 64, b);
            Avx512F.StoreAlignedNonTemporal(d + 128, c);
            Avx512F.StoreAlignedNonTemporal(d + 192, e);
        }
        else
        {
            a.Store(d);
            b.Store(d + 64);
            c.Store(d + 128);
            e.Store(d + 192);
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Line512(byte* d, byte* s, bool nonTemporal)
    {
        Vector512<byte> a = Vector512.Load(s);
        if (nonTemporal) Avx512F.StoreAlignedNonTemporal(d, a);
        else a.Store(d);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Line256(byte* d, byte* s, bool nonTemporal)
    {
        Vector256<byte> a = Vector256.Load(s), b = Vector256.Load(s + 32);
        if (nonTemporal)
        {
            Avx.StoreAlignedNonTemporal(d, a);
            Avx.StoreAlignedNonTemporal(d + 32, b);
        }
        else
        {
            a.Store(d);
            b.Store(d + 32);
        }
    }
}
