namespace PfnBlock.Memory;

/// <summary>
/// Pins on page ranges of one region, kept per range in a fixed table of 64-bit slots (no
/// descriptor per page): the simple pin behind <c>IDaxDevice.DirectAccess</c>. Operations that
/// must not run under a pin (discard, write-zeroes, teardown) put up a fence on their range,
/// which refuses new pins there, and wait until the pins already taken are gone.
/// </summary>
/// <remarks>
/// <para>Pin: claim a free slot with one CAS (a full barrier), then look for a fence only if a
/// fence count is non-zero. Fence: publish the fence range, raise the count (a full barrier), then
/// scan the pin slots. Either the pinner sees the fence and backs out, or the fencer sees the pin
/// (the store-load ordering both barriers give; Dekker's argument).</para>
/// <para>A slot holds <c>first page &lt;&lt; 23 | page count</c>; 0 is free. Ranges up to
/// 2^23 - 1 pages (32 GiB) fit; a longer pin is refused.</para>
/// </remarks>
public sealed class RangePinTable
{
    /// <summary>Most pages one pin covers.</summary>
    public const long MaxPages = (1L << CountBits) - 1;
    private const int CountBits = 23;

    [ThreadStatic] private static int t_hint;

    private readonly long[] _pins;
    private readonly long[] _fences;
    private int _fenceCount;

    /// <summary>Creates a table with room for <paramref name="pins"/> simultaneous pins and <paramref name="fences"/> fences.</summary>
    public RangePinTable(int pins = 4096, int fences = 64)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(pins);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(fences);
        _pins = new long[pins];
        _fences = new long[fences];
    }

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
            if (Volatile.Read(ref _fenceCount) != 0 && FenceOverlaps(firstPage, pages))
            {
                Volatile.Write(ref _pins[s], 0);
                return false;
            }
            slot = s;
            return true;
        }
        return false;
    }

    /// <summary>Releases the pin in <paramref name="slot"/>.</summary>
    public void Unpin(int slot)
    {
        if (Interlocked.Exchange(ref _pins[slot], 0) == 0) throw new InvalidOperationException($"pin slot {slot} was not pinned (double unpin)");
    }

    /// <summary>
    /// Puts up a fence on a range: new pins overlapping it are refused until <see cref="Unfence"/>.
    /// Pins taken before stay; <see cref="IsPinned"/> tells whether any is left.
    /// </summary>
    /// <returns>The fence's slot, or -1 when every fence slot is taken (the caller retries later).</returns>
    public int Fence(long firstPage, long pages)
    {
        long value = firstPage << CountBits | Math.Min(pages, MaxPages);
        for (int s = 0; s < _fences.Length; s++)
        {
            if (Interlocked.CompareExchange(ref _fences[s], value, 0) != 0) continue;
            Interlocked.Increment(ref _fenceCount);
            return s;
        }
        return -1;
    }

    /// <summary>Takes down the fence in <paramref name="fence"/>.</summary>
    public void Unfence(int fence)
    {
        Interlocked.Decrement(ref _fenceCount);
        Volatile.Write(ref _fences[fence], 0);
    }

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

    private bool FenceOverlaps(long firstPage, long pages)
    {
        long last = firstPage + pages - 1;
        for (int s = 0; s < _fences.Length; s++)
        {
            long v = Volatile.Read(ref _fences[s]);
            if (v != 0 && Overlaps(v, firstPage, last)) return true;
        }
        return false;
    }

    private static bool Overlaps(long packed, long first, long last)
    {
        long pFirst = packed >>> CountBits;
        long pLast = pFirst + (packed & MaxPages) - 1;
        return pFirst <= last && first <= pLast;
    }
}
