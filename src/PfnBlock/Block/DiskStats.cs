using System.Diagnostics;
using System.Runtime.InteropServices;

namespace PfnBlock.Block;

/// <summary>
/// Per-device I/O counters in the shape of <c>/sys/block/*/stat</c>. Counters are striped by
/// processor so concurrent submitters do not fight over one cache line.
/// </summary>
public sealed class DiskStats
{
    private readonly Stripe[] _stripes;
    private readonly int _mask;

    /// <summary>Creates zeroed counters.</summary>
    public DiskStats()
    {
        int n = (int)System.Numerics.BitOperations.RoundUpToPowerOf2((uint)Math.Max(1, Environment.ProcessorCount));
        _stripes = new Stripe[n];
        _mask = n - 1;
    }

    internal void Start(BioOp op)
    {
        ref Stripe s = ref _stripes[Thread.GetCurrentProcessorId() & _mask];
        Interlocked.Increment(ref s.InFlight[Group(op)]);
    }

    internal void Done(BioOp op, uint bytes, long elapsedTicks)
    {
        ref Stripe s = ref _stripes[Thread.GetCurrentProcessorId() & _mask];
        int g = Group(op);
        Interlocked.Decrement(ref s.InFlight[g]);
        Interlocked.Increment(ref s.Ios[g]);
        Interlocked.Add(ref s.Sectors[g], bytes >> Bio.SectorShift);
        Interlocked.Add(ref s.Ticks[g], elapsedTicks);
    }

    internal void Merge(BioOp op)
    {
        ref Stripe s = ref _stripes[Thread.GetCurrentProcessorId() & _mask];
        Interlocked.Increment(ref s.Merges[Group(op)]);
    }

    private static int Group(BioOp op) => op switch
    {
        BioOp.Read => 0,
        BioOp.Write or BioOp.WriteZeroes => 1,
        BioOp.Discard => 2,
        _ => 3,
    };

    /// <summary>A consistent-enough copy of the counters now.</summary>
    public DiskStatsSnapshot Snapshot()
    {
        Span<long> ios = stackalloc long[4], merges = stackalloc long[4], sectors = stackalloc long[4], ticks = stackalloc long[4], inflight = stackalloc long[4];
        foreach (ref Stripe s in _stripes.AsSpan())
            for (int g = 0; g < 4; g++)
            {
                ios[g] += Volatile.Read(ref s.Ios[g]);
                merges[g] += Volatile.Read(ref s.Merges[g]);
                sectors[g] += Volatile.Read(ref s.Sectors[g]);
                ticks[g] += Volatile.Read(ref s.Ticks[g]);
                inflight[g] += Volatile.Read(ref s.InFlight[g]);
            }
        static long Ms(long t) => t * 1000 / Stopwatch.Frequency;
        return new DiskStatsSnapshot(
            new(ios[0], merges[0], sectors[0], Ms(ticks[0])),
            new(ios[1], merges[1], sectors[1], Ms(ticks[1])),
            new(ios[2], merges[2], sectors[2], Ms(ticks[2])),
            new(ios[3], merges[3], sectors[3], Ms(ticks[3])),
            inflight[0] + inflight[1] + inflight[2] + inflight[3]);
    }

    [StructLayout(LayoutKind.Sequential)]
    private struct Stripe
    {
        public Counters4 Ios, Merges, Sectors, Ticks, InFlight;
        // Keeps neighbouring stripes off each other's cache lines.
        private readonly Counters4 _pad1, _pad2, _pad3;
    }

    [System.Runtime.CompilerServices.InlineArray(4)]
    private struct Counters4 { private long _e0; }
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
