using PfnBlock.Block;
using PfnBlock.Memory;

namespace PfnBlock.Targets.Md;

/// <summary>
/// One RAID5 stripe's working memory (md's stripe_head pages): a chunk-sized buffer per member
/// and a spare, in DRAM frames the members can do I/O from, and one bio for that I/O.
/// </summary>
internal sealed unsafe class StripeBuffers(DramArena arena, long firstByte, int count, int bytes)
{
    private readonly DramArena _arena = arena;
    private readonly long _first = firstByte;

    /// <summary>Bytes per buffer (a chunk).</summary>
    public int Bytes { get; } = bytes;
    /// <summary>Buffers (members + 1).</summary>
    public int Count { get; } = count;
    /// <summary>The bio member I/O of this set goes through (one at a time).</summary>
    public Bio Bio { get; } = new(1);
    /// <summary>
    /// The bio a member write straight from the array bio's frames goes through (its vectors are the
    /// array bio's, so a chunk of it may need many; one that needs more goes through a buffer).
    /// </summary>
    public Bio Direct { get; } = new(Bio.MaxVecs);
    /// <summary>Per data chunk, the first sector a stripe write touches (scratch for the writer holding the set).</summary>
    public long[] From { get; } = new long[count];
    /// <summary>Per data chunk, the sector after the last one a stripe write touches.</summary>
    public long[] To { get; } = new long[count];
    /// <summary>The member ranges a stripe write changes, for its journal record (scratch for the writer holding the set).</summary>
    public Raid5JournalEntry[] JournalEntries { get; } = new Raid5JournalEntry[count];
    /// <summary>Its index in the pool.</summary>
    public int Index { get; init; }

    /// <summary>The CPU address of byte <paramref name="offset"/> of buffer <paramref name="i"/>.</summary>
    public byte* At(int i, long offset) => _arena.BaseAddress + _first + (long)i * Bytes + offset;

    /// <summary>The frame and in-frame offset of byte <paramref name="offset"/> of buffer <paramref name="i"/>.</summary>
    public (Pfn Pfn, uint Offset) FrameOf(int i, long offset)
    {
        long b = _first + (long)i * Bytes + offset;
        return (_arena.PfnAt(b >> Pfn.PageShift), (uint)(b & (Pfn.PageSize - 1)));
    }
}

/// <summary>
/// A fixed set of <see cref="StripeBuffers"/> rented without locks or allocation (a free flag per
/// set): the I/O path takes one per write or reconstruction and gives it back at once. Taking is a
/// compare-exchange; giving back is a plain store, because it comes right after the members'
/// non-temporal writes, and a locked instruction there would wait for them to reach memory.
/// </summary>
internal sealed class StripeBufferPool : IDisposable
{
    private readonly DramArena _arena;
    private readonly StripeBuffers[] _sets;
    // One flag per set, each on its own cache line: 1 free, 0 rented.
    private readonly PaddedFlag[] _free;

    /// <summary>Creates <paramref name="sets"/> (at most 64) sets of <paramref name="count"/> buffers of <paramref name="bytes"/> bytes.</summary>
    public StripeBufferPool(int sets, int count, int bytes, PhysicalAddressSpace? space, string name)
    {
        ArgumentOutOfRangeException.ThrowIfGreaterThan(sets, 64);
        long setBytes = (long)count * bytes;
        _arena = DramArena.Create(setBytes * sets, space, name);
        _sets = [.. Enumerable.Range(0, sets).Select(i => new StripeBuffers(_arena, i * setBytes, count, bytes) { Index = i })];
        _free = new PaddedFlag[sets];
        for (int i = 0; i < sets; i++) _free[i].Value = 1;
    }

    /// <summary>Takes a free set; false when all are in use.</summary>
    public bool TryRent(out StripeBuffers set)
    {
        for (int i = 0; i < _free.Length; i++)
        {
            ref int flag = ref _free[i].Value;
            if (Volatile.Read(ref flag) == 1 && Interlocked.CompareExchange(ref flag, 0, 1) == 1)
            {
                set = _sets[i];
                return true;
            }
        }
        set = null!;
        return false;
    }

    /// <summary>Gives a set back (a release store: what the renter wrote is visible to the next renter).</summary>
    public void Return(StripeBuffers set) => Volatile.Write(ref _free[set.Index].Value, 1);

    [System.Runtime.InteropServices.StructLayout(System.Runtime.InteropServices.LayoutKind.Explicit, Size = 64)]
    private struct PaddedFlag
    {
        [System.Runtime.InteropServices.FieldOffset(0)] public int Value;
    }

    public void Dispose() => _arena.Dispose();
}
