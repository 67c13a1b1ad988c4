namespace PfnBlock.Memory;

/// <summary>
/// Pins on page ranges of one region, kept per range in a fixed table of 64-bit slots (no
/// descriptor per page): the pin implementation of the <c>none</c> descriptor map (Dan's
/// position: pfns need no per-page object). Operations that must not run under a pin (discard,
/// write-zeroes, teardown) put up a fence on their range, which refuses new pins there, and wait
/// until the pins already taken are gone.
/// </summary>
/// <remarks>
/// <para>Pin: claim a free slot with one CAS (a full barrier), then look for a fence only if a
/// fence count is non-zero. Fence: publish the fence range, raise the count (a full barrier), then
/// scan the pin slots. Either the pinner sees the fence and backs out, or the fencer sees the pin
/// (the store-load ordering both barriers give; Dekker's argument).</para>
/// <para>A slot holds <c>first page &lt;&lt; 23 | page count</c>; 0 is free. Ranges up to
/// 2^23 - 1 pages (32 GiB) fit; a longer pin is refused.</para>
/// </remarks>
public sealed class RangePinTable : IFramePins
{
    /// <summary>Most pages one pin covers.</summary>
    public const long MaxPages = (1L << CountBits) - 1;
    private const int CountBits = 23;

    [ThreadStatic] private static int t_hint;

    private readonly long[] _pins;
    private readonly RangeFenceSet _fences;

    /// <summary>Creates a table with room for <paramref name="pins"/> simultaneous pins and <paramref name="fences"/> fences.</summary>
    public RangePinTable(int pins = 4096, int fences = 64)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(pins);
        _pins = new long[pins];
        _fences = new RangeFenceSet(fences);
    }

    /// <inheritdoc/>
    public DescriptorMapKind Kind => DescriptorMapKind.None;

    /// <summary>Pins held now (a scan; diagnostics and tests).</summary>
    public int PinnedCount
    {
        get
        {
            int n = 0;
            for (int s = 0; s < _pins.Length; s++) if (Volatile.Read(ref _pins[s]) != 0) n++;
            return n;
        }
    }

    /// <summary>Bytes of the table (slots and fences), whatever the region's size.</summary>
    public long Bytes => _pins.Length * sizeof(long);

    /// <summary>Pins <paramref name="pages"/> pages from <paramref name="firstPage"/>; false when a fence covers any of them or the table is full.</summary>
    public bool TryPin(long firstPage, long pages, out int slot)
    {
        slot = -1;
        if (pages <= 0 || pages > MaxPages || firstPage < 0 || firstPage >= 1L << (63 - CountBits)) return false;
        long value = firstPage << CountBits | pages;
        int n = _pins.Length;
        int start = (int)((uint)t_hint % (uint)n);
        for (int i = 0; i < n; i++)
        {
            int s = start + i;
            if (s >= n) s -= n;
            if (Volatile.Read(ref _pins[s]) != 0 || Interlocked.CompareExchange(ref _pins[s], value, 0) != 0) continue;
            t_hint = s + 1;
            if (_fences.Any && _fences.Overlaps(firstPage, pages))
            {
                Volatile.Write(ref _pins[s], 0);
                return false;
            }
            slot = s;
            return true;
        }
        return false;
    }

    /// <inheritdoc/>
    bool IFramePins.TryPin(long firstFrame, long frames, out long token)
    {
        bool pinned = TryPin(firstFrame, frames, out int slot);
        token = slot;
        return pinned;
    }

    /// <summary>Releases the pin in <paramref name="slot"/>.</summary>
    public void Unpin(int slot)
    {
        if (Interlocked.Exchange(ref _pins[slot], 0) == 0) throw new InvalidOperationException($"pin slot {slot} was not pinned (double unpin)");
    }

    /// <inheritdoc/>
    void IFramePins.Unpin(long firstFrame, long frames, long token) => Unpin((int)token);

    /// <inheritdoc/>
    public int Fence(long firstPage, long pages) => _fences.Add(firstPage, pages);

    /// <inheritdoc/>
    public void Unfence(int fence) => _fences.Remove(fence);

    /// <summary>True when a pin overlaps the range.</summary>
    public bool IsPinned(long firstPage, long pages)
    {
        long last = firstPage + pages - 1;
        for (int s = 0; s < _pins.Length; s++)
        {
            long v = Volatile.Read(ref _pins[s]);
            if (v != 0 && Overlaps(v, firstPage, last)) return true;
        }
        return false;
    }

    /// <summary>True when any pin is held.</summary>
    public bool AnyPinned => PinnedCount != 0;

    /// <summary>Pins whose range holds <paramref name="frame"/>.</summary>
    public int PinCount(long frame)
    {
        int n = 0;
        for (int s = 0; s < _pins.Length; s++)
        {
            long v = Volatile.Read(ref _pins[s]);
            if (v != 0 && Overlaps(v, frame, frame)) n++;
        }
        return n;
    }

    private static bool Overlaps(long packed, long first, long last)
    {
        long pFirst = packed >>> CountBits;
        long pLast = pFirst + (packed & MaxPages) - 1;
        return pFirst <= last && first <= pLast;
    }
}
