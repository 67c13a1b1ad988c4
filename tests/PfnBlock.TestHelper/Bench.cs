using System.Diagnostics;
using System.Text.Json;
using PfnBlock.Block;
using PfnBlock.Common;
using PfnBlock.Devices;
using PfnBlock.Memory;

namespace PfnBlock.TestHelper;

/// <summary>
/// <c>bench DEVICE-SPEC randread|randwrite|fill BS JOBS SECONDS</c>: an in-process fio-like loop
/// (one thread per job, one synchronous bio at a time, uniform random block-aligned offsets over
/// the whole device) printing one JSON line {iops, mib_s, ops, seconds}. <c>fill</c> writes
/// every block once, sequentially, so later runs see no first-touch page faults.
/// </summary>
internal static class Bench
{
    public static int Run(string[] args)
    {
        using var devices = new DeviceSet();
        IBlockDevice device = devices.Open(args[1]);
        string rw = args[2];
        int bs = (int)SizeParser.Parse(args[3]);
        int jobs = int.Parse(args[4]);
        double seconds = double.Parse(args[5], System.Globalization.CultureInfo.InvariantCulture);
        long blocks = device.CapacityBytes / bs;
        using var arena = DramArena.Create((long)jobs * ((bs + Pfn.PageSize - 1) / Pfn.PageSize) * Pfn.PageSize);
        if (rw == "fill")
        {
            FrameRun f = arena.Allocator.Allocate((bs + Pfn.PageSize - 1) / Pfn.PageSize);
            arena.AddressSpace!.KmapSpan(f.First, 0, bs).Fill(0x5A);
            var bio = new Bio();
            var sw = Stopwatch.StartNew();
            for (long b = 0; b < blocks; b++)
            {
                bio.Init(BioOp.Write, b * bs >> Bio.SectorShift).AddVec(f.First, 0, (uint)bs);
                if (device.SubmitAndWait(bio) != BlockStatus.Ok) throw new IOException($"fill write of block {b} failed");
            }
            Print(blocks, sw.Elapsed.TotalSeconds, bs);
            return 0;
        }
        BioOp op = rw switch { "randread" => BioOp.Read, "randwrite" => BioOp.Write, _ => throw new ArgumentException($"unknown workload '{rw}'") };
        var frames = Enumerable.Range(0, jobs).Select(_ => arena.Allocator.Allocate((bs + Pfn.PageSize - 1) / Pfn.PageSize)).ToArray();
        long total = 0;
        using var start = new Barrier(jobs + 1);
        long warmEnd = 0, end = 0;
        var threads = Enumerable.Range(0, jobs).Select(j => new Thread(() =>
        {
            var rng = new Random(j + 1);
            var bio = new Bio();
            FrameRun f = frames[j];
            start.SignalAndWait();
            long ops = 0;
            bool measuring = false;
            while (true)
            {
                for (int i = 0; i < 256; i++)
                {
                    long b = rng.NextInt64(blocks);
                    bio.Init(op, b * bs >> Bio.SectorShift).AddVec(f.First, 0, (uint)bs);
                    if (device.SubmitAndWait(bio) != BlockStatus.Ok) throw new IOException($"{rw} of block {b} failed");
                }
                long now = Stopwatch.GetTimestamp();
                if (measuring) ops += 256;
                else if (now >= Volatile.Read(ref warmEnd)) measuring = true; // one second of warm-up (JIT tiers, caches) is not counted
                if (now >= Volatile.Read(ref end)) break;
            }
            Interlocked.Add(ref total, ops);
        })).ToArray();
        foreach (Thread t in threads) t.Start();
        long t0 = Stopwatch.GetTimestamp();
        Volatile.Write(ref warmEnd, t0 + Stopwatch.Frequency);
        Volatile.Write(ref end, t0 + Stopwatch.Frequency + (long)(seconds * Stopwatch.Frequency));
        start.SignalAndWait();
        foreach (Thread t in threads) t.Join();
        Print(total, Stopwatch.GetElapsedTime(t0).TotalSeconds - 1, bs);
        return 0;
    }

    private static void Print(long ops, double seconds, int bs) =>
        Console.WriteLine(JsonSerializer.Serialize(new { iops = ops / seconds, mib_s = ops * (double)bs / seconds / (1 << 20), ops, seconds }));
}
