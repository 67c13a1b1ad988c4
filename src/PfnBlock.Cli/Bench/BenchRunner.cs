using System.Diagnostics;
using HdrHistogram;
using PfnBlock.Block;
using PfnBlock.Memory;

namespace PfnBlock.Cli.Bench;

/// <summary>
/// Runs one workload on an open device: an optional fill pass (for --verify), the measured run,
/// an optional verify pass; then aggregates the jobs' figures. Jobs are dedicated threads.
/// </summary>
internal sealed class BenchRunner
{
    private readonly IBlockDevice _device;
    private readonly BenchOptions _options;

    public BenchRunner(IBlockDevice device, BenchOptions options)
    {
        _device = device;
        _options = options;
    }

    /// <summary>Called about every 250 ms of the measured phase with (elapsed seconds, bytes, ios) so far.</summary>
    public Action<double, long, long>? Progress { get; init; }

    /// <summary>How often the measured phase is sampled for the result's <see cref="BenchResult.Timeline"/>.</summary>
    public static readonly TimeSpan SampleInterval = TimeSpan.FromMilliseconds(250);

    public BenchResult Run()
    {
        BenchOptions o = _options;
        long deviceBytes = _device.CapacityBytes;
        long regionBytes = o.Size > 0 ? o.Size : deviceBytes;
        if (regionBytes > deviceBytes) throw new ArgumentException($"--size {regionBytes} is larger than the device ({deviceBytes} bytes)");
        if (o.BlockSize % _device.Limits.LogicalBlockSize != 0)
            throw new ArgumentException($"--bs {o.BlockSize} is not a multiple of the device's logical block size {_device.Limits.LogicalBlockSize}");
        long totalBlocks = regionBytes / o.BlockSize;
        // Verify and sequential runs give each job its own slice, so jobs never race on a block.
        bool partition = o.Verify || !o.IsRandom;
        long blocksPerJob = partition ? totalBlocks / o.Jobs : totalBlocks;
        if (blocksPerJob < 1) throw new ArgumentException($"the device region ({regionBytes} bytes) is too small for {o.Jobs} jobs of --bs {o.BlockSize}");

        int framesPerBlock = (o.BlockSize + Pfn.PageSize - 1) / Pfn.PageSize;
        long arenaBytes = (long)framesPerBlock * Pfn.PageSize * o.IoDepth * o.Jobs;
        using DramArena arena = DramArena.Create(arenaBytes, _device.AddressSpace, "bench-buffers");

        string? error = null;
        if (o.Verify)
        {
            // Give every block a pattern first, so reads always have something to check.
            error = RunPass(arena, RwMode.Write, partition, blocksPerJob, timeBased: false, counted: false, out _);
        }

        BenchJob[] jobs = [];
        PassTimes times = default;
        long requeuesBefore = Requeues(_device);
        var timeline = new List<BenchSample>();
        if (error is null)
            error = RunPass(arena, o.Rw, partition, blocksPerJob, timeBased: o.RuntimeSeconds > 0, counted: true, out jobs, out times, timeline);
        long requeues = Requeues(_device) - requeuesBefore;

        if (error is null && o.Verify && o.HasWrites)
            error = RunPass(arena, RwMode.Read, partition, blocksPerJob, timeBased: false, counted: false, out _);

        var readLat = new LongHistogram(60_000_000_000L, 3);
        var writeLat = new LongHistogram(60_000_000_000L, 3);
        long rIos = 0, wIos = 0, rBytes = 0, wBytes = 0, allocated = 0;
        foreach (BenchJob j in jobs)
        {
            readLat.Add(j.ReadLatency);
            writeLat.Add(j.WriteLatency);
            rIos += j.ReadIos; wIos += j.WriteIos; rBytes += j.ReadBytes; wBytes += j.WriteBytes;
            allocated += j.AllocatedBytes;
        }
        long ios = rIos + wIos;
        return new BenchResult(o, _device.Description,
            new DirectionResult(rIos, rBytes, times.Seconds, readLat),
            new DirectionResult(wIos, wBytes, times.Seconds, writeLat),
            ios > 0 ? (double)allocated / ios : 0, times.UserCpu, times.SystemCpu, error) { Requeues = requeues, Timeline = timeline };
    }

    /// <summary>Requeues counted by every device of the stack under <paramref name="top"/>.</summary>
    private static long Requeues(IBlockDevice top)
    {
        var seen = new HashSet<IBlockDevice>(ReferenceEqualityComparer.Instance);
        var todo = new Stack<IBlockDevice>([top]);
        long n = 0;
        while (todo.TryPop(out IBlockDevice? d))
        {
            if (!seen.Add(d)) continue;
            n += d.Stats.Snapshot().Requeues;
            if (d is MappedDevice m)
                foreach (TableEntry e in m.Table)
                    foreach (IBlockDevice lower in e.Target.Devices) todo.Push(lower);
        }
        return n;
    }

    private string? RunPass(DramArena arena, RwMode rw, bool partition, long blocksPerJob, bool timeBased, bool counted, out BenchJob[] jobs) =>
        RunPass(arena, rw, partition, blocksPerJob, timeBased, counted, out jobs, out _);

    /// <summary>Wall time and process CPU time of a pass's measured phase.</summary>
    private readonly record struct PassTimes(double Seconds, double UserCpu, double SystemCpu);

    private string? RunPass(DramArena arena, RwMode rw, bool partition, long blocksPerJob, bool timeBased, bool counted, out BenchJob[] jobs, out PassTimes times,
        List<BenchSample>? timeline = null)
    {
        BenchOptions o = _options;
        var clock = new BenchClock();
        long bytesPerJob = timeBased ? 0 : blocksPerJob * o.BlockSize;
        jobs = new BenchJob[o.Jobs];
        for (int i = 0; i < o.Jobs; i++)
            jobs[i] = new BenchJob(_device, o, rw, clock, i, arena.Allocator, partition ? i * blocksPerJob : 0, blocksPerJob, bytesPerJob, counted);

        var threads = new Thread[o.Jobs];
        for (int i = 0; i < o.Jobs; i++)
        {
            BenchJob job = jobs[i];
            threads[i] = new Thread(job.Run) { IsBackground = true, Name = $"bench-job-{i}" };
        }
        using var process = Process.GetCurrentProcess();
        TimeSpan user0 = default, sys0 = default;
        void StartMeasuring()
        {
            process.Refresh();
            (user0, sys0) = (process.UserProcessorTime, process.PrivilegedProcessorTime);
            clock.StartMeasuring();
        }

        if (!timeBased || o.RampSeconds == 0) StartMeasuring();
        foreach (Thread t in threads) t.Start();

        var sw = Stopwatch.StartNew();
        double seconds;
        if (timeBased)
        {
            if (o.RampSeconds > 0)
            {
                WaitOrFinish(threads, TimeSpan.FromSeconds(o.RampSeconds), sw, null, jobs);
                StartMeasuring();
            }
            sw.Restart();
            WaitOrFinish(threads, TimeSpan.FromSeconds(o.RuntimeSeconds), sw, Progress, jobs, timeline);
            seconds = sw.Elapsed.TotalSeconds;
            clock.RequestStop();
            foreach (Thread t in threads) t.Join();
        }
        else
        {
            WaitOrFinish(threads, Timeout.InfiniteTimeSpan, sw, counted ? Progress : null, jobs, timeline);
            seconds = sw.Elapsed.TotalSeconds;
        }
        process.Refresh();
        times = new PassTimes(seconds, (process.UserProcessorTime - user0).TotalSeconds, (process.PrivilegedProcessorTime - sys0).TotalSeconds);
        foreach (BenchJob j in jobs) j.FreeBuffers(arena.Allocator);
        return jobs.Select(j => j.Error).FirstOrDefault(e => e is not null);
    }

    private static void WaitOrFinish(Thread[] threads, TimeSpan duration, Stopwatch sw, Action<double, long, long>? progress, BenchJob[] jobs,
        List<BenchSample>? timeline = null)
    {
        TimeSpan end = duration == Timeout.InfiniteTimeSpan ? TimeSpan.MaxValue : sw.Elapsed + duration;
        // Samples are times since sw started (just before this call): the first interval starts at 0,
        // not at a later read of the clock, which a preempted thread may take milliseconds after.
        double lastTime = 0;
        (long r, long w, long rb, long wb) last = Totals(jobs);
        while (true)
        {
            TimeSpan left = end - sw.Elapsed;
            if (left <= TimeSpan.Zero) break;
            if (threads.All(t => !t.IsAlive)) break;
            Thread.Sleep(left < SampleInterval ? left : SampleInterval);
            if (jobs.Any(j => j.Error is not null)) break;
            double now = sw.Elapsed.TotalSeconds;
            (long r, long w, long rb, long wb) totals = Totals(jobs);
            Sample(now, totals);
            progress?.Invoke(now, totals.rb + totals.wb, totals.r + totals.w);
        }
        Sample(sw.Elapsed.TotalSeconds, Totals(jobs)); // the tail of the last interval

        void Sample(double now, (long r, long w, long rb, long wb) totals)
        {
            double dt = now - lastTime;
            if (timeline is null || dt < 0.01) return;
            timeline.Add(new BenchSample(now, (totals.r - last.r) / dt, (totals.w - last.w) / dt, (totals.rb - last.rb + totals.wb - last.wb) / dt));
            (lastTime, last) = (now, totals);
        }
    }

    private static (long ReadIos, long WriteIos, long ReadBytes, long WriteBytes) Totals(BenchJob[] jobs)
    {
        long r = 0, w = 0, rb = 0, wb = 0;
        foreach (BenchJob j in jobs)
        {
            r += Volatile.Read(ref j.ReadIos);
            w += Volatile.Read(ref j.WriteIos);
            rb += Volatile.Read(ref j.ReadBytes);
            wb += Volatile.Read(ref j.WriteBytes);
        }
        return (r, w, rb, wb);
    }
}
