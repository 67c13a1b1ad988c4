namespace PfnBlock.Memory;

/// <summary>
/// The fences of a region's pins, shared by every pin implementation: a small table of ranges
/// that new pins must not overlap, and a count that lets pinners skip the table while no fence
/// is up (one plain load on the pin path).
/// </summary>
internal sealed class RangeFenceSet
{
    // A fence is first + 1 (0 = free slot) and its last frame, in two arrays: any length fits.
    private readonly long[] _firsts;
    private readonly long[] _lasts;
    private int _count;

    public RangeFenceSet(int fences)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(fences);
        _firsts = new long[fences];
        _lasts = new long[fences];
    }

    /// <summary>True while any fence is up; read after the pinner's own full barrier.</summary>
    public bool Any => Volatile.Read(ref _count) != 0;

    /// <summary>Publishes a fence, then raises the count (a full barrier, before the caller scans for pins).</summary>
    /// <returns>The slot, or -1 when all are taken.</returns>
    public int Add(long first, long frames)
    {
        for (int s = 0; s < _firsts.Length; s++)
        {
            if (Interlocked.CompareExchange(ref _firsts[s], first + 1, 0) != 0) continue;
            Volatile.Write(ref _lasts[s], first + frames - 1);
            // Pinners look at the table only once the count is up, so they never see half a fence.
            Interlocked.Increment(ref _count);
            return s;
        }
        return -1;
    }

    public void Remove(int fence)
    {
        Interlocked.Decrement(ref _count);
        Volatile.Write(ref _firsts[fence], 0);
    }

    /// <summary>True when a fence overlaps the range.</summary>
    public bool Overlaps(long first, long frames)
    {
        long last = first + frames - 1;
        for (int s = 0; s < _firsts.Length; s++)
        {
            long f = Volatile.Read(ref _firsts[s]) - 1;
            if (f < 0) continue;
            if (f <= last && first <= Volatile.Read(ref _lasts[s])) return true;
        }
        return false;
    }
}
