using System.Buffers.Binary;
using PfnBlock.Block;
using PfnBlock.Devices;
using PfnBlock.Memory;

namespace PfnBlock.TestHelper;

/// <summary>
/// Test and benchmark helper. <c>crash ...</c>: the child process of the crash-consistency test
/// (below); <c>bench ...</c>: the in-process measurement loop of bench/btt-bench.sh (<see cref="Bench"/>).
/// </summary>
public static class Program
{
    public static int Main(string[] args) => args.Length > 0 && args[0] == "bench" ? Bench.Run(args) : Crash.Run(args[1..]);
}

/// <summary>
/// Child process of the crash-consistency test: writes versioned, self-checking sectors to a
/// device with several threads until it is killed. Thread t owns the LBAs with lba % threads == t,
/// so each LBA's versions rise in acknowledgement order. Every few milliseconds the main thread
/// snapshots the acknowledged versions, flushes the device, and prints the snapshot on stdout as
/// "F &lt;base64 of u32 per LBA&gt;": everything in a printed snapshot was acknowledged before a
/// flush that completed.
/// Usage: PfnBlock.TestHelper DEVICE-SPEC THREADS BASE-VERSION FLUSH-MS SEED
/// </summary>
internal static class Crash
{
    public static int Run(string[] args)
    {
        // Never disposed: the process is killed while it writes.
        IBlockDevice device = new DeviceSet().Open(args[0]);
        int threads = int.Parse(args[1]);
        long version = long.Parse(args[2]) - 1;
        int flushMs = int.Parse(args[3]);
        int seed = int.Parse(args[4]);
        int lbs = device.Limits.LogicalBlockSize;
        long nlba = device.CapacityBytes / lbs;
        var acked = new uint[nlba];
        using var arena = DramArena.Create((threads + 1) * (long)Pfn.PageSize);
        var workers = new Thread[threads];
        for (int t = 0; t < threads; t++)
        {
            int me = t;
            FrameRun frame = arena.Allocator.Allocate(1);
            workers[t] = new Thread(() =>
            {
                var rng = new Random(seed * 31 + me);
                var bio = new Bio();
                Span<byte> buf = arena.AddressSpace!.KmapSpan(frame.First, 0, lbs);
                long mine = (nlba - me + threads - 1) / threads;
                while (true)
                {
                    long lba = me + rng.NextInt64(mine) * threads;
                    long v = Interlocked.Increment(ref version);
                    SectorPattern.Fill(buf, lba, v);
                    bio.Init(BioOp.Write, lba * lbs >> Bio.SectorShift).AddVec(frame.First, 0, (uint)lbs);
                    if (device.SubmitAndWait(bio) != BlockStatus.Ok) Environment.FailFast("write failed");
                    Volatile.Write(ref acked[lba], (uint)v);
                }
            }) { IsBackground = true };
        }
        var stdout = new StreamWriter(Console.OpenStandardOutput()) { AutoFlush = false };
        stdout.WriteLine($"ready {nlba}");
        stdout.Flush();
        foreach (Thread w in workers) w.Start();
        var flush = new Bio();
        byte[] snap = new byte[nlba * 4];
        while (true)
        {
            Thread.Sleep(flushMs);
            for (long i = 0; i < nlba; i++) BinaryPrimitives.WriteUInt32LittleEndian(snap.AsSpan((int)i * 4), Volatile.Read(ref acked[i]));
            flush.Init(BioOp.Flush, 0);
            if (device.SubmitAndWait(flush) != BlockStatus.Ok) Environment.FailFast("flush failed");
            stdout.Write("F ");
            stdout.WriteLine(Convert.ToBase64String(snap));
            stdout.Flush();
        }
    }
}
