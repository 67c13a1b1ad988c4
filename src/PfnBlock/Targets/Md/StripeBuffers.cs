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
/// A fixed set of <see cref="StripeBuffers"/> rented without locks or allocation (a bitmask of free
/// sets): the I/O path takes one per write or reconstruction and gives it back at once.
/// </summary>
internal sealed class StripeBufferPool : IDisposable
{
    private readonly DramArena _arena;
    private readonly StripeBuffers[] _sets;
    private long _free;

    /// <summary>Creates <paramref name="sets"/> (at most 64) sets of <paramref name="count"/> buffers of <paramref name="bytes"/> bytes.</summary>
    public StripeBufferPool(int sets, int count, int bytes, PhysicalAddressSpace? space, string name)
    {
        ArgumentOutOfRangeException.ThrowIfGreaterThan(sets, 64);
        long setBytes = (long)count * bytes;
        _arena = DramArena.Create(setBytes * sets, space, name);
        _sets = [.. Enumerable.Range(0, sets).Select(i => new StripeBuffers(_arena, i * setBytes, count, bytes) { Index = i })];
        _free = sets == 64 ? -1L : (1L << sets) - 1;
    }

    /// <summary>Takes a free set; false when all are in use.</summary>
    public bool TryRent(out StripeBuffers set)
    {
        while (true)
        {
            long free = Volatile.Read(ref _free);
            if (free == 0)
            {
                set = null!;
                return false;
            }
            int i = System.Numerics.BitOperations.TrailingZeroCount(free);
            if (Interlocked.CompareExchange(ref _free, free & ~(1L << i), free) == free)
            {
                set = _sets[i];
                return true;
            }
        }
    }

    /// <summary>Gives a set back.</summary>
    public void Return(StripeBuffers set) => Interlocked.Or(ref _free, 1L << set.Index);

    public void Dispose() => _arena.Dispose();
}
