using System.Diagnostics;

namespace PfnBlock.Block;

/// <summary>
/// Per-device I/O counters in the shape of <c>/sys/block/*/stat</c>. Each thread that submits or
/// completes I/O counts into its own block of counters with plain stores (like the kernel's
/// per-cpu part_stat), so the I/O path pays no locked instruction; a snapshot sums the blocks.
/// </summary>
public sealed class DiskStats
{
    private const int Groups = 4;
    // Per group: ios, merges, sectors, ticks, in-flight; the last slots pad to a cache line.
    private const int Fields = 5, Stride = Fields * Groups + 4;

    [ThreadStatic] private static ThreadCounters? t_last;
    [ThreadStatic] private static List<ThreadCounters>? t_all;

    private readonly Lock _lock = new();
    private ThreadCounters[] _threads = [];

    private sealed class ThreadCounters(DiskStats owner)
    {
        public readonly DiskStats Owner = owner;
        public readonly long[] Values = new long[Stride];
    }

    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveInlining)]
    private long[] Mine()
    {
        ThreadCounters? c = t_last;
        return c is not null && c.Owner == this ? c.Values : Register();
    }

    private long[] Register()
    {
        List<ThreadCounters> all = t_all ??= [];
        foreach (ThreadCounters c in all)
            if (c.Owner == this) { t_last = c; return c.Values; }
        var mine = new ThreadCounters(this);
        all.Add(mine);
        lock (_lock) _threads = [.. _threads, mine];
        t_last = mine;
        return mine.Values;
    }

    internal void Start(BioOp op) => Mine()[Group(op) * Fields + 4]++;

    internal void Done(BioOp op, uint bytes, long elapsedTicks)
    {
        long[] v = Mine();
        int g = Group(op) * Fields;
        v[g]++;
        v[g + 2] += bytes >> Bio.SectorShift;
        v[g + 3] += elapsedTicks;
        v[g + 4]--;
    }

    internal void Merge(BioOp op) => Mine()[Group(op) * Fields + 1]++;

    private static int Group(BioOp op) => op switch
    {
        BioOp.Read => 0,
        BioOp.Write or BioOp.WriteZeroes => 1,
        BioOp.Discard => 2,
        _ => 3,
    };

    /// <summary>A copy of the counters now (each thread's block is read without stopping it).</summary>
    public DiskStatsSnapshot Snapshot()
    {
        long[] sum = new long[Fields * Groups];
        foreach (ThreadCounters c in Volatile.Read(ref _threads))
            for (int i = 0; i < sum.Length; i++) sum[i] += Volatile.Read(ref c.Values[i]);
        OpStats Group(int g) => new(sum[g * Fields], sum[g * Fields + 1], sum[g * Fields + 2], sum[g * Fields + 3] * 1000 / Stopwatch.Frequency);
        long inFlight = sum[4] + sum[Fields + 4] + sum[2 * Fields + 4] + sum[3 * Fields + 4];
        return new DiskStatsSnapshot(Group(0), Group(1), Group(2), Group(3), inFlight);
    }
}

/// <summary>Counters of one operation group.</summary>
/// <param name="Ios">Completed requests.</param>
/// <param name="Merges">Requests merged into others.</param>
/// <param name="Sectors">512-byte sectors transferred.</param>
/// <param name="TicksMs">Milliseconds spent on the requests, summed.</param>
public readonly record struct OpStats(long Ios, long Merges, long Sectors, long TicksMs);

/// <summary>A copy of a device's counters.</summary>
/// <param name="Read">Reads.</param>
/// <param name="Write">Writes and write-zeroes.</param>
/// <param name="Discard">Discards.</param>
/// <param name="Flush">Flushes.</param>
/// <param name="InFlight">Requests submitted and not yet completed.</param>
public readonly record struct DiskStatsSnapshot(OpStats Read, OpStats Write, OpStats Discard, OpStats Flush, long InFlight)
{
    /// <summary>The counters in /sys/block/*/stat field order (io_ticks and time_in_queue are not kept and print as 0).</summary>
    public override string ToString() =>
        $"{Read.Ios} {Read.Merges} {Read.Sectors} {Read.TicksMs} {Write.Ios} {Write.Merges} {Write.Sectors} {Write.TicksMs} {InFlight} 0 0 " +
        $"{Discard.Ios} {Discard.Merges} {Discard.Sectors} {Discard.TicksMs} {Flush.Ios} {Flush.TicksMs}";
}
