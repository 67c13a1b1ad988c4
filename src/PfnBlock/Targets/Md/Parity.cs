using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace PfnBlock.Targets.Md;

/// <summary>
/// RAID5 parity arithmetic: XOR of buffers, 64 bytes at a time with Vector512 where the CPU has
/// it (AVX-512), else Vector256 (two per 64 bytes), then a scalar tail. Unaligned loads and
/// stores: stripe buffers are page aligned, but a bio's vectors need not be.
/// </summary>
public static unsafe class Parity
{
    /// <summary>The widest vector the XOR uses on this machine ("Vector512", "Vector256" or "scalar").</summary>
    public static string Kernel => Vector512.IsHardwareAccelerated ? "Vector512" : Vector256.IsHardwareAccelerated ? "Vector256" : "scalar";

    /// <summary><paramref name="dst"/>[i] ^= <paramref name="src"/>[i] for <paramref name="length"/> bytes.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Xor(byte* dst, byte* src, nuint length)
    {
        nuint i = 0;
        if (Vector512.IsHardwareAccelerated)
        {
            // Four vectors per round: enough independent loads to keep the load ports busy.
            for (; i + 256 <= length; i += 256)
            {
                Vector512<byte> a = Vector512.Load(dst + i) ^ Vector512.Load(src + i);
                Vector512<byte> b = Vector512.Load(dst + i + 64) ^ Vector512.Load(src + i + 64);
                Vector512<byte> c = Vector512.Load(dst + i + 128) ^ Vector512.Load(src + i + 128);
                Vector512<byte> d = Vector512.Load(dst + i + 192) ^ Vector512.Load(src + i + 192);
                a.Store(dst + i);
                b.Store(dst + i + 64);
                c.Store(dst + i + 128);
                d.Store(dst + i + 192);
            }
            for (; i + 64 <= length; i += 64) (Vector512.Load(dst + i) ^ Vector512.Load(src + i)).Store(dst + i);
        }
        else if (Vector256.IsHardwareAccelerated)
        {
            for (; i + 128 <= length; i += 128)
            {
                Vector256<byte> a = Vector256.Load(dst + i) ^ Vector256.Load(src + i);
                Vector256<byte> b = Vector256.Load(dst + i + 32) ^ Vector256.Load(src + i + 32);
                Vector256<byte> c = Vector256.Load(dst + i + 64) ^ Vector256.Load(src + i + 64);
                Vector256<byte> d = Vector256.Load(dst + i + 96) ^ Vector256.Load(src + i + 96);
                a.Store(dst + i);
                b.Store(dst + i + 32);
                c.Store(dst + i + 64);
                d.Store(dst + i + 96);
            }
            for (; i + 32 <= length; i += 32) (Vector256.Load(dst + i) ^ Vector256.Load(src + i)).Store(dst + i);
        }
        for (; i + 8 <= length; i += 8) *(ulong*)(dst + i) ^= *(ulong*)(src + i);
        for (; i < length; i++) dst[i] ^= src[i];
    }

    /// <summary>
    /// <paramref name="dst"/>[i] = <paramref name="a"/>[i] ^ <paramref name="b"/>[i] ^ <paramref name="c"/>[i]
    /// for <paramref name="length"/> bytes: a read-modify-write's new parity (old parity, old data,
    /// new data) in one pass, so that the cache misses on the two old streams overlap instead of
    /// one copy waiting for the other, and nothing is read twice.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Xor3(byte* dst, byte* a, byte* b, byte* c, nuint length)
    {
        nuint i = 0;
        if (Vector512.IsHardwareAccelerated)
        {
            for (; i + 128 <= length; i += 128)
            {
                Vector512<byte> x = Vector512.Load(a + i) ^ Vector512.Load(b + i) ^ Vector512.Load(c + i);
                Vector512<byte> y = Vector512.Load(a + i + 64) ^ Vector512.Load(b + i + 64) ^ Vector512.Load(c + i + 64);
                x.Store(dst + i);
                y.Store(dst + i + 64);
            }
            for (; i + 64 <= length; i += 64) (Vector512.Load(a + i) ^ Vector512.Load(b + i) ^ Vector512.Load(c + i)).Store(dst + i);
        }
        else if (Vector256.IsHardwareAccelerated)
        {
            for (; i + 64 <= length; i += 64)
            {
                Vector256<byte> x = Vector256.Load(a + i) ^ Vector256.Load(b + i) ^ Vector256.Load(c + i);
                Vector256<byte> y = Vector256.Load(a + i + 32) ^ Vector256.Load(b + i + 32) ^ Vector256.Load(c + i + 32);
                x.Store(dst + i);
                y.Store(dst + i + 32);
            }
            for (; i + 32 <= length; i += 32) (Vector256.Load(a + i) ^ Vector256.Load(b + i) ^ Vector256.Load(c + i)).Store(dst + i);
        }
        for (; i + 8 <= length; i += 8) *(ulong*)(dst + i) = *(ulong*)(a + i) ^ *(ulong*)(b + i) ^ *(ulong*)(c + i);
        for (; i < length; i++) dst[i] = (byte)(a[i] ^ b[i] ^ c[i]);
    }

    /// <summary>True when <paramref name="length"/> bytes at <paramref name="p"/> are all zero (a parity check that found no mismatch).</summary>
    public static bool IsZero(byte* p, nuint length) => !new ReadOnlySpan<byte>(p, checked((int)length)).ContainsAnyExcept((byte)0);
}
