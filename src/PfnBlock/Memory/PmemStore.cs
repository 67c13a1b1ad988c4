using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace PfnBlock.Memory;

/// <summary>
/// Ordinary (temporal) stores into persistent memory — metadata words, info blocks, cleared
/// areas — made through one place so that <see cref="PmemTrace"/> sees them. Untraced, each is
/// exactly the plain store it replaces.
/// </summary>
/// <remarks>
/// Durability is still the caller's business: a store reaches media when its cache line is written
/// back (<see cref="PersistentMemory.Persist"/>, msync).
/// </remarks>
public static unsafe class PmemStore
{
    /// <summary>Stores an aligned 8-byte word (one atomic store; release ordering).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Write64(ulong* address, ulong value)
    {
        Volatile.Write(ref *address, value);
        if (PmemTrace.Enabled) PmemTrace.Stored((byte*)address, sizeof(ulong), nonTemporal: false);
    }

    /// <summary>Stores an aligned 4-byte word (one atomic store; release ordering).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Write32(uint* address, uint value)
    {
        Volatile.Write(ref *address, value);
        if (PmemTrace.Enabled) PmemTrace.Stored((byte*)address, sizeof(uint), nonTemporal: false);
    }

    /// <summary>Copies <paramref name="source"/> to <paramref name="destination"/> with ordinary stores.</summary>
    public static void Copy(byte* destination, ReadOnlySpan<byte> source)
    {
        source.CopyTo(new Span<byte>(destination, source.Length));
        if (PmemTrace.Enabled) PmemTrace.Stored(destination, (nuint)source.Length, nonTemporal: false);
    }

    /// <summary>Zeroes <paramref name="length"/> bytes with ordinary stores.</summary>
    public static void Clear(byte* destination, nuint length)
    {
        NativeMemory.Clear(destination, length);
        if (PmemTrace.Enabled) PmemTrace.Stored(destination, length, nonTemporal: false);
    }
}
