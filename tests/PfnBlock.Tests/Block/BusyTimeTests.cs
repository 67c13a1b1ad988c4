using CsCheck;
using PfnBlock.Block;

namespace PfnBlock.Tests.Block;

/// <summary>
/// A device's busy time (io_ticks, iostat's %util) and error counts, driven through
/// <see cref="DiskStats"/> with chosen timestamps so the expected figures are exact: the stamp
/// moves at most once per granularity, so the count may be off by less than one granularity per
/// change between idle and busy, and never more.
/// </summary>
public sealed class BusyTimeTests
{
    private static readonly long G = DiskStats.BusyGranularityTicks;
    // Far from zero, as Stopwatch timestamps are.
    private static readonly long T0 = 1_000_000 * G;

    [Fact]
    public void BusyTimeIsTheUnionOfTheTimesSomethingWasInFlight()
    {
        var stats = new DiskStats();
        BlockThread t = BlockThread.Current;
        stats.Start(BioOp.Read, T0, t);
        stats.Done(BioOp.Read, 4096, 10 * G, T0 + 10 * G, failed: false, t);  // busy 10 G
        stats.Start(BioOp.Write, T0 + 20 * G, t);                             // idle 10 G before
        stats.Start(BioOp.Read, T0 + 30 * G, t);                              // overlapping
        stats.Done(BioOp.Write, 4096, 20 * G, T0 + 40 * G, failed: true, t);
        stats.Done(BioOp.Read, 4096, 20 * G, T0 + 50 * G, failed: false, t);  // busy 30 G
        DiskStatsSnapshot s = stats.Snapshot();
        Assert.Equal(40 * G, s.IoTicks);
        Assert.Equal(0, s.InFlight);
        Assert.Equal(1, s.Write.Errors);
        Assert.Equal(0, s.Read.Errors);
        Assert.Equal(2, s.Read.Ios);
        // In /sys/block/*/stat's field 10, milliseconds.
        Assert.Equal((40 * G * 1000 / System.Diagnostics.Stopwatch.Frequency).ToString(System.Globalization.CultureInfo.InvariantCulture),
            s.ToString().Split(' ')[9]);
    }

    [Fact]
    public void BusyTimeStaysWithinOneGranularityPerChangeOfTheExactFigure()
    {
        // Events: each a step forward in time (up to 3 granularities) and a request starting or ending.
        Gen<(int Step, bool Start)[]> events = Gen.Select(Gen.Int[0, 3 * (int)Math.Min(G, 1 << 20)], Gen.Bool).Array[1, 200];
        events.Sample(steps =>
        {
            var stats = new DiskStats();
            BlockThread t = BlockThread.Current;
            long now = T0, exact = 0, changes = 0;
            int inFlight = 0;
            var starts = new Queue<long>();
            foreach ((int step, bool start) in steps)
            {
                if (inFlight > 0) exact += step;
                now += step;
                if (start || inFlight == 0)
                {
                    if (inFlight == 0) changes++;
                    inFlight++;
                    starts.Enqueue(now);
                    stats.Start(BioOp.Read, now, t);
                }
                else
                {
                    inFlight--;
                    if (inFlight == 0) changes++;
                    stats.Done(BioOp.Read, 512, now - starts.Dequeue(), now, failed: false, t);
                }
            }
            long counted = stats.Snapshot().IoTicks;
            Assert.True(counted >= 0 && Math.Abs(counted - exact) <= G * (changes + 1),
                $"counted {counted} ticks, exact {exact}, {changes} changes of {G}-tick granularity");
        }, iter: 300);
    }

    [Fact]
    public void AlwaysBusyOrNeverBusyIsCountedExactly()
    {
        var stats = new DiskStats();
        BlockThread t = BlockThread.Current;
        // One request in flight throughout while others come and go: every stretch is busy.
        stats.Start(BioOp.Flush, T0, t);
        long now = T0;
        for (int i = 0; i < 100; i++)
        {
            now += G / 3 + 1;
            stats.Start(BioOp.Read, now, t);
            stats.Done(BioOp.Read, 512, 0, now, failed: false, t);
        }
        now += 5 * G;
        stats.Done(BioOp.Flush, 0, now - T0, now, failed: false, t);
        Assert.Equal(now - T0, stats.Snapshot().IoTicks);

        // Requests far apart that take no time: nothing is busy.
        var idle = new DiskStats();
        for (int i = 1; i <= 100; i++)
        {
            idle.Start(BioOp.Write, T0 + i * 10 * G, t);
            idle.Done(BioOp.Write, 512, 0, T0 + i * 10 * G, failed: false, t);
        }
        Assert.Equal(0, idle.Snapshot().IoTicks);
    }
}
