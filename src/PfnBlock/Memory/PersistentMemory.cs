using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace PfnBlock.Memory;

/// <summary>How writes to a mapping reach the persistence domain.</summary>
public enum PersistenceMode
{
    /// <summary>Volatile memory (DRAM): nothing persists.</summary>
    Volatile,
    /// <summary>
    /// A DAX mapping made with MAP_SYNC: data is durable once it leaves the CPU caches, so
    /// non-temporal stores or cache-line flushes plus a store fence suffice (libpmem's
    /// <c>pmem_is_pmem() == 1</c>).
    /// </summary>
    CpuCache,
    /// <summary>
    /// A page-cache mapping (no DAX, e.g. tmpfs or ext4 without -o dax): writes survive a process
    /// kill at once, but survive power loss only after <c>msync</c>.
    /// </summary>
    Msync,
}

/// <summary>
/// Persistence primitives after libpmem: copy with non-temporal stores (<c>memcpy_flushcache</c>),
/// flush a range from the CPU caches, drain the store buffers. Each uses the widest vector unit
/// present (AVX-512, AVX2, SSE2).
/// </summary>
/// <remarks>
/// The copy path needs few flushes: non-temporal stores bypass the caches, and only the
/// unaligned head and tail lines of a copy are written back.
/// </remarks>
public static unsafe class PersistentMemory
{
    /// <summary>CPU cache line size on x86-64.</summary>
    public const int CacheLine = 64;

    /// <summary>The vector path in use, for reports ("avx512", "avx2", "sse2", "scalar").</summary>
    public static string CopyPath { get; } =
        Vector512.IsHardwareAccelerated && Avx512F.IsSupported ? "avx512"
        : Avx2.IsSupported ? "avx2" : Sse2.IsSupported ? "sse2" : "scalar";

    /// <summary>
    /// Copies <paramref name="length"/> bytes to persistent memory bypassing the caches where the
    /// destination is line-aligned, and flushing the partial lines at either end. Call
    /// <see cref="Drain"/> before relying on durability (one fence can cover many copies).
    /// </summary>
    public static void CopyNonTemporal(byte* dst, byte* src, nuint length)
    {
        if (length == 0) return;
        nuint head = (nuint)((CacheLine - ((nint)dst & (CacheLine - 1))) & (CacheLine - 1));
        if (head != 0)
        {
            nuint n = head < length ? head : length;
            Buffer.MemoryCopy(src, dst, n, n);
            if (PmemTrace.Enabled) PmemTrace.Stored(dst, n, nonTemporal: false);
            Flush(dst, n);
            dst += n; src += n; length -= n;
            if (length == 0) return;
        }
        nuint body = length & ~(nuint)(CacheLine - 1);
        if (body != 0)
        {
            StreamAligned(dst, src, body);
            if (PmemTrace.Enabled) PmemTrace.Stored(dst, body, nonTemporal: StreamsNonTemporally);
        }
        nuint tail = length - body;
        if (tail != 0)
        {
            Buffer.MemoryCopy(src + body, dst + body, tail, tail);
            if (PmemTrace.Enabled) PmemTrace.Stored(dst + body, tail, nonTemporal: false);
            Flush(dst + body, tail);
        }
    }

    /// <summary>Fills <paramref name="length"/> bytes with zeros using non-temporal stores where aligned.</summary>
    public static void ZeroNonTemporal(byte* dst, nuint length)
    {
        nuint head = (nuint)((CacheLine - ((nint)dst & (CacheLine - 1))) & (CacheLine - 1));
        if (head > length) head = length;
        if (head != 0)
        {
            new Span<byte>(dst, (int)head).Clear();
            if (PmemTrace.Enabled) PmemTrace.Stored(dst, head, nonTemporal: false);
            Flush(dst, head);
            dst += head; length -= head;
        }
        nuint body = length & ~(nuint)(CacheLine - 1);
        if (Vector512.IsHardwareAccelerated && Avx512F.IsSupported)
        {
            Vector512<byte> z = Vector512<byte>.Zero;
            for (nuint i = 0; i < body; i += 64) Avx512F.StoreAlignedNonTemporal(dst + i, z);
            if (PmemTrace.Enabled && body != 0) PmemTrace.Stored(dst, body, nonTemporal: true);
        }
        else if (Avx.IsSupported)
        {
            Vector256<byte> z = Vector256<byte>.Zero;
            for (nuint i = 0; i < body; i += 32) Avx.StoreAlignedNonTemporal(dst + i, z);
            if (PmemTrace.Enabled && body != 0) PmemTrace.Stored(dst, body, nonTemporal: true);
        }
        else
        {
            NativeClear(dst, body);
            if (PmemTrace.Enabled && body != 0) PmemTrace.Stored(dst, body, nonTemporal: false);
            Flush(dst, body);
        }
        nuint tail = length - body;
        if (tail != 0)
        {
            NativeClear(dst + body, tail);
            if (PmemTrace.Enabled) PmemTrace.Stored(dst + body, tail, nonTemporal: false);
            Flush(dst + body, tail);
        }
    }

    /// <summary>Writes back the cache lines covering the range (CLWB, else CLFLUSHOPT, else CLFLUSH); see <see cref="FlushInstruction"/>.</summary>
    public static void Flush(byte* address, nuint length) => CacheLineFlush.Flush(address, length);

    /// <summary>The cache-line write-back instruction in use ("clwb", "clflushopt", "clflush", "none").</summary>
    public static string FlushInstruction => CacheLineFlush.Instruction;

    /// <summary>Orders all earlier non-temporal stores and flushes before later stores (SFENCE).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Drain()
    {
        if (Sse.IsSupported) Sse.StoreFence();
        else Interlocked.MemoryBarrier();
        if (PmemTrace.Enabled) PmemTrace.Fenced();
    }

    /// <summary>Flush then drain: the range is in the persistence domain on return (in <see cref="PersistenceMode.CpuCache"/> mode).</summary>
    public static void Persist(byte* address, nuint length)
    {
        Flush(address, length);
        Drain();
    }

    /// <summary>True when <see cref="StreamAligned"/> uses streaming stores (else plain copies, for the trace).</summary>
    internal static bool StreamsNonTemporally => Avx.IsSupported || Sse2.IsSupported || (Vector512.IsHardwareAccelerated && Avx512F.IsSupported);

    private static void NativeClear(byte* p, nuint length) => System.Runtime.InteropServices.NativeMemory.Clear(p, length);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void StreamAligned(byte* dst, byte* src, nuint length)
    {
        if (Vector512.IsHardwareAccelerated && Avx512F.IsSupported)
        {
            nuint i = 0;
            for (; i + 256 <= length; i += 256)
            {
                Vector512<byte> a = Vector512.Load(src + i);
                Vector512<byte> b = Vector512.Load(src + i + 64);
                Vector512<byte> c = Vector512.Load(src + i + 128);
                Vector512<byte> d = Vector512.Load(src + i + 192);
                Avx512F.StoreAlignedNonTemporal(dst + i, a);
                Avx512F.StoreAlignedNonTemporal(dst + i + 64, b);
                Avx512F.StoreAlignedNonTemporal(dst + i + 128, c);
                Avx512F.StoreAlignedNonTemporal(dst + i + 192, d);
            }
            for (; i < length; i += 64) Avx512F.StoreAlignedNonTemporal(dst + i, Vector512.Load(src + i));
        }
        else if (Avx.IsSupported)
        {
            for (nuint i = 0; i < length; i += 64)
            {
                Vector256<byte> a = Vector256.Load(src + i);
                Vector256<byte> b = Vector256.Load(src + i + 32);
                Avx.StoreAlignedNonTemporal(dst + i, a);
                Avx.StoreAlignedNonTemporal(dst + i + 32, b);
            }
        }
        else if (Sse2.IsSupported)
        {
            for (nuint i = 0; i < length; i += 16) Sse2.StoreAlignedNonTemporal(dst + i, Vector128.Load(src + i));
        }
        else
        {
            Buffer.MemoryCopy(src, dst, length, length);
        }
    }
}
