using System.Diagnostics;
using System.Runtime.CompilerServices;

namespace PfnBlock.Common;

/// <summary>
/// A fixed number of slots, each one 64-bit word on its own cache line, that threads claim and
/// release without a lock: a claim is one compare-and-swap that takes a free slot and publishes a
/// value in it at once. Other threads scan the published values (a BTT writer looking for readers
/// of its free block, a discard looking for pinned ranges). The BTT's lanes and read tracking
/// table are built on it.
/// </summary>
/// <remarks>
/// <para>0 (<see cref="Free"/>) marks a free slot, so a published value is never 0. A claim starts
/// at the slot of the CPU the thread runs on, which is usually free and already in that CPU's
/// cache, and otherwise scans the others (reading before it swaps, so a taken slot's line is not
/// pulled away from its holder).</para>
/// <para>Ordering: <see cref="Claim"/>, <see cref="TryClaim"/> and <see cref="Publish"/> are
/// interlocked operations, hence full fences: a load the caller makes after them (e.g. re-reading
/// a map entry) cannot be satisfied before the value is visible to scanners. <see cref="Release"/>
/// is a release store: everything the holder did before it is visible to the next claimer.</para>
/// <para>No allocation after construction; no operation blocks in the kernel except the
/// <see cref="SpinWait"/> back-off when every slot is taken.</para>
/// </remarks>
public sealed class SlotTable
{
    /// <summary>The value of a slot nobody holds.</summary>
    public const long Free = 0;

    // longs per slot: 64 bytes, so holders on different CPUs never share a line. Slot i lives at
    // (i + 1) * Stride, keeping slot 0 off the line that holds the array's length.
    private const int Stride = 8;
    private readonly long[] _words;

    /// <summary>Creates <paramref name="count"/> free slots.</summary>
    public SlotTable(int count)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(count);
        Count = count;
        _words = new long[(count + 1) * Stride];
    }

    /// <summary>Number of slots; slot indexes run from 0 to <c>Count - 1</c>.</summary>
    public int Count { get; }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private ref long Word(int slot) => ref _words[(slot + 1) * Stride];

    /// <summary>
    /// Claims a free slot and publishes <paramref name="value"/> (not <see cref="Free"/>) in it;
    /// spins, then yields and sleeps, while every slot is taken.
    /// </summary>
    /// <returns>The slot index, to pass to <see cref="Publish"/> and <see cref="Release"/>.</returns>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public int Claim(long value)
    {
        Debug.Assert(value != Free, "0 marks a free slot");
        int first = Thread.GetCurrentProcessorId() % Count;
        if (Interlocked.CompareExchange(ref Word(first), value, Free) == Free) return first;
        return ClaimSlow(value, first);
    }

    private int ClaimSlow(long value, int first)
    {
        var spin = new SpinWait();
        int slot;
        while (!TryClaimFrom(value, first, out slot))
            spin.SpinOnce(); // yields, then sleeps, when the holders are not running
        return slot;
    }

    /// <summary>Claims a free slot for <paramref name="value"/> if one is free now; never waits.</summary>
    /// <returns>False when every slot was taken during one pass over them.</returns>
    public bool TryClaim(long value, out int slot)
    {
        Debug.Assert(value != Free, "0 marks a free slot");
        return TryClaimFrom(value, Thread.GetCurrentProcessorId() % Count, out slot);
    }

    private bool TryClaimFrom(long value, int first, out int slot)
    {
        int n = Count;
        for (int i = 0; i < n; i++)
        {
            slot = first + i < n ? first + i : first + i - n;
            ref long word = ref Word(slot);
            if (Volatile.Read(ref word) == Free && Interlocked.CompareExchange(ref word, value, Free) == Free) return true;
        }
        slot = -1;
        return false;
    }

    /// <summary>Replaces the value a claimed slot publishes, with a full fence. Only the slot's holder calls it.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Publish(int slot, long value)
    {
        Debug.Assert(value != Free, "0 marks a free slot; use Release");
        Interlocked.Exchange(ref Word(slot), value);
    }

    /// <summary>Frees a claimed slot (a release store). Only the slot's holder calls it.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Release(int slot) => Volatile.Write(ref Word(slot), Free);

    /// <summary>The value slot <paramref name="slot"/> publishes now, or <see cref="Free"/> (an acquire load; for scans).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public long Read(int slot) => Volatile.Read(ref Word(slot));

    /// <summary>
    /// Returns once no slot publishes <paramref name="value"/>: each slot found holding it is
    /// waited on until its holder releases or republishes it. A value published in a slot after
    /// the scan passed it is not waited for: the protocol above must make that harmless (a BTT
    /// reader re-reads the map after publishing, so a late reader of a freed block moves on).
    /// </summary>
    public void WaitWhilePublished(long value)
    {
        for (int slot = 0; slot < Count; slot++)
        {
            ref long word = ref Word(slot);
            if (Volatile.Read(ref word) != value) continue;
            var spin = new SpinWait();
            while (Volatile.Read(ref word) == value) spin.SpinOnce();
        }
    }
}
