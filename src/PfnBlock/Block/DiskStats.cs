using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace PfnBlock.Block;

/// <summary>
/// Per-device I/O counters in the shape of <c>/sys/block/*/stat</c>, plus requeues. Each thread that
/// submits or completes I/O counts into its own block of counters with plain stores (like the
/// kernel's per-cpu part_stat), so the I/O path pays no locked instruction; a snapshot sums the
/// blocks. A thread finds its block by the device's index in its <see cref="BlockThread"/> table,
/// looked up once per I/O, so every level of a stack finds its block with one array load.
/// Completed requests are also counted by latency (<see cref="LatencyBuckets"/>, per operation
/// group) for histograms that operators scrape; <see cref="LatencySnapshot"/> sums those.
/// <para>
/// The time the device had any request in flight (the kernel's io_ticks, iostat's %util) is kept
/// the kernel's way (update_io_ticks): one shared stamp per device, read by every request's start
/// and end and moved at most once per <see cref="BusyGranularityTicks"/>; whoever moves it adds
/// the stretch since the old stamp as busy time if the device was busy through it (a request
/// ends now, or one was in flight when another starts). The shared line is written at most
/// 10 000 times a second, whatever the I/O rate; busy time is exact to within that granularity
/// per busy period, and unbiased over many.
/// </para>
/// </summary>
public sealed unsafe class DiskStats
{
    private const int Groups = 4;
    // Each thread's block is native memory, one 64-byte cache line per group (ios, merges, sectors,
    // ticks, in-flight, errors) and a fifth line for requeues and busy time, then each group's
    // latency buckets (four lines a group): completing a request touches its group's line and the
    // line of its bucket, which stays in the cache while a thread's requests take similar times.
    private const int LineLongs = 8, Ios = 0, Merges = 1, Sectors = 2, Ticks = 3, InFlight = 4, Errors = 5;
    private const int RequeueField = Groups * LineLongs, IoTicksField = RequeueField + 1, HistogramBase = (Groups + 1) * LineLongs;
    private const int BlockLongs = HistogramBase + Groups * LatencyBuckets.Count;

    /// <summary>How often, at most, the busy-time stamp moves: 100 µs in <see cref="Stopwatch"/> ticks.</summary>
    public static readonly long BusyGranularityTicks = Math.Max(Stopwatch.Frequency / 10_000, 1);

    private static int s_nextIndex = -1;

    // The busy-time stamp, alone on a cache line of its own: the per-thread blocks never share it.
    private readonly long* _stamp = (long*)NativeMemory.AlignedAlloc(64, 64);

    private readonly int _index = Interlocked.Increment(ref s_nextIndex);
    private readonly Lock _lock = new();
    private nint[] _threads = [];

    /// <summary>Creates zeroed counters for one device.</summary>
    public DiskStats() => *_stamp = 0;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private long* Mine(BlockThread t)
    {
        nint[] blocks = t.StatsBlocks;
        if ((uint)_index < (uint)blocks.Length && blocks[_index] != 0) return (long*)blocks[_index];
        return Register(t);
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private long* Register(BlockThread t)
    {
        nint[] blocks = t.StatsBlocks;
        if (blocks.Length <= _index) Array.Resize(ref blocks, Math.Max(_index + 1, blocks.Length * 2));
        t.StatsBlocks = blocks;
        var mine = (long*)NativeMemory.AlignedAlloc(BlockLongs * sizeof(long), 64);
        NativeMemory.Clear(mine, BlockLongs * sizeof(long));
        blocks[_index] = (nint)mine;
        lock (_lock) _threads = [.. _threads, (nint)mine];
        return mine;
    }

    /// <summary>
    /// Frees the threads' blocks once nothing can count into them any more: the device that owned
    /// these statistics is unreachable, so no I/O is in flight on it, and its index is never reused
    /// (a thread's table may keep the stale pointer, which nothing reads again).
    /// </summary>
    ~DiskStats()
    {
        foreach (nint block in _threads) NativeMemory.AlignedFree((void*)block);
        NativeMemory.AlignedFree(_stamp);
    }

    /// <summary>A request of <paramref name="op"/> entered the device at <paramref name="now"/> (Stopwatch ticks).</summary>
    internal void Start(BioOp op, long now, BlockThread t)
    {
        long* block = Mine(t);
        // Before counting this one in flight: busy time so far is decided by the others.
        if (now - *_stamp >= BusyGranularityTicks) AccountBusy(now, block, end: false);
        block[Group(op) * LineLongs + InFlight]++;
    }

    /// <summary>A request of <paramref name="op"/> moving <paramref name="bytes"/> completed at <paramref name="now"/> after <paramref name="elapsedTicks"/> Stopwatch ticks, <paramref name="failed"/> or not.</summary>
    internal void Done(BioOp op, uint bytes, long elapsedTicks, long now, bool failed, BlockThread t)
    {
        long* block = Mine(t);
        int g = Group(op);
        long* v = block + g * LineLongs;
        v[Ios]++;
        v[Sectors] += bytes >> Bio.SectorShift;
        v[Ticks] += elapsedTicks;
        v[InFlight]--;
        if (failed) v[Errors]++;
        block[HistogramBase + g * LatencyBuckets.Count + LatencyBuckets.Of(elapsedTicks)]++;
        if (now - *_stamp >= BusyGranularityTicks) AccountBusy(now, block, end: true);
    }

    /// <summary>Moves the busy-time stamp to <paramref name="now"/> and, if the device was busy since the old one, counts that stretch (update_io_ticks).</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private void AccountBusy(long now, long* block, bool end)
    {
        long stamp = Volatile.Read(ref *_stamp);
        if (now - stamp < BusyGranularityTicks) return;
        // One thread wins each stretch; the others' requests fall inside the next one.
        if (Interlocked.CompareExchange(ref *_stamp, now, stamp) != stamp) return;
        if (stamp != 0 && (end || InFlightNow() > 0)) block[IoTicksField] += now - stamp;
    }

    /// <summary>Requests in flight, summed over the threads' blocks (a thread may end what another started, so one block alone means nothing).</summary>
    private long InFlightNow()
    {
        long n = 0;
        foreach (nint c in Volatile.Read(ref _threads))
            for (int g = 0; g < Groups; g++) n += Volatile.Read(ref ((long*)c)[g * LineLongs + InFlight]);
        return n;
    }

    /// <summary>A request left the device to be resubmitted later (it answered Busy): in flight no more, counted once when it finally completes.</summary>
    internal void Requeued(BioOp op)
    {
        long* v = Mine(BlockThread.Current);
        v[Group(op) * LineLongs + InFlight]--;
        v[RequeueField]++;
    }

    // Read, Write, Flush, Discard, WriteZeroes -> read, write, flush, discard, write groups.
    private static ReadOnlySpan<byte> Groups4 => [0, 1, 3, 2, 1];

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static int Group(BioOp op) => (uint)op < (uint)Groups4.Length ? Groups4[(int)op] : 3;

    /// <summary>A copy of the counters now (each thread's block is read without stopping it).</summary>
    public DiskStatsSnapshot Snapshot()
    {
        long[] sum = new long[BlockLongs];
        foreach (nint c in Volatile.Read(ref _threads))
            for (int i = 0; i < sum.Length; i++) sum[i] += Volatile.Read(ref ((long*)c)[i]);
        GC.KeepAlive(this);
        OpStats Group(int g) => new(sum[g * LineLongs + Ios], sum[g * LineLongs + Merges], sum[g * LineLongs + Sectors],
            sum[g * LineLongs + Ticks] * 1000 / Stopwatch.Frequency) { Ticks = sum[g * LineLongs + Ticks], Errors = sum[g * LineLongs + Errors] };
        long inFlight = sum[InFlight] + sum[LineLongs + InFlight] + sum[2 * LineLongs + InFlight] + sum[3 * LineLongs + InFlight];
        return new DiskStatsSnapshot(Group(0), Group(1), Group(2), Group(3), inFlight) { Requeues = sum[RequeueField], IoTicks = sum[IoTicksField] };
    }

    /// <summary>
    /// The completed requests by latency bucket (<see cref="LatencyBuckets"/>), per operation group,
    /// summed over the threads without stopping them (read apart from <see cref="Snapshot"/>, so the
    /// two may differ by requests completing in between).
    /// </summary>
    public DiskLatencySnapshot LatencySnapshot()
    {
        var groups = new long[Groups][];
        for (int g = 0; g < Groups; g++) groups[g] = new long[LatencyBuckets.Count];
        foreach (nint c in Volatile.Read(ref _threads))
            for (int g = 0; g < Groups; g++)
                for (int b = 0; b < LatencyBuckets.Count; b++)
                    groups[g][b] += Volatile.Read(ref ((long*)c)[HistogramBase + g * LatencyBuckets.Count + b]);
        GC.KeepAlive(this);
        return new DiskLatencySnapshot(groups[0], groups[1], groups[2], groups[3]);
    }
}

/// <summary>Counters of one operation group.</summary>
/// <param name="Ios">Completed requests.</param>
/// <param name="Merges">Requests merged into others (always 0 so far: nothing merges requests).</param>
/// <param name="Sectors">512-byte sectors transferred (or discarded/zeroed).</param>
/// <param name="TicksMs">Milliseconds spent on the requests, summed.</param>
public readonly record struct OpStats(long Ios, long Merges, long Sectors, long TicksMs)
{
    /// <summary>The time spent on the requests, summed, in <see cref="Stopwatch"/> ticks (<see cref="TicksMs"/> rounds it to milliseconds, too coarse for memory-speed devices).</summary>
    public long Ticks { get; init; }

    /// <summary><see cref="Ticks"/> in seconds.</summary>
    public double Seconds => LatencyBuckets.Seconds(Ticks);

    /// <summary>Completed requests that failed (counted in <see cref="Ios"/> too; not in /sys/block/*/stat).</summary>
    public long Errors { get; init; }
}

/// <summary>A device's completed requests by latency bucket (<see cref="LatencyBuckets"/>), per operation group.</summary>
/// <param name="Read">Reads.</param>
/// <param name="Write">Writes and write-zeroes.</param>
/// <param name="Discard">Discards.</param>
/// <param name="Flush">Flushes.</param>
public sealed record DiskLatencySnapshot(long[] Read, long[] Write, long[] Discard, long[] Flush);

/// <summary>A copy of a device's counters.</summary>
/// <param name="Read">Reads.</param>
/// <param name="Write">Writes and write-zeroes.</param>
/// <param name="Discard">Discards.</param>
/// <param name="Flush">Flushes.</param>
/// <param name="InFlight">Requests submitted and not yet completed (requeued ones excluded until resubmitted).</param>
public readonly record struct DiskStatsSnapshot(OpStats Read, OpStats Write, OpStats Discard, OpStats Flush, long InFlight)
{
    /// <summary>Times a request answered Busy and was requeued by the block layer (not in /sys/block/*/stat).</summary>
    public long Requeues { get; init; }

    /// <summary>Time the device had at least one request in flight, in <see cref="Stopwatch"/> ticks (io_ticks; see <see cref="DiskStats"/> for its granularity).</summary>
    public long IoTicks { get; init; }

    /// <summary><see cref="IoTicks"/> in seconds.</summary>
    public double BusySeconds => LatencyBuckets.Seconds(IoTicks);

    /// <summary>The counters in /sys/block/*/stat field order (time_in_queue as recent kernels give it: the request times summed).</summary>
    public override string ToString() =>
        $"{Read.Ios} {Read.Merges} {Read.Sectors} {Read.TicksMs} {Write.Ios} {Write.Merges} {Write.Sectors} {Write.TicksMs} {InFlight} " +
        $"{IoTicks * 1000 / Stopwatch.Frequency} {Read.TicksMs + Write.TicksMs + Discard.TicksMs + Flush.TicksMs} " +
        $"{Discard.Ios} {Discard.Merges} {Discard.Sectors} {Discard.TicksMs} {Flush.Ios} {Flush.TicksMs}";
}
