using System.Buffers.Binary;
using System.Diagnostics;
using PfnBlock.Block;
using PfnBlock.CrashTest;
using PfnBlock.Devices;
using PfnBlock.Devices.Btt;
using PfnBlock.Memory;
using PfnBlock.Namespaces.Btt;
using Xunit.Abstractions;

namespace PfnBlock.Tests.Btt;

/// <summary>
/// Crash consistency with real processes: a child (PfnBlock.TestHelper) writes versioned,
/// self-checking sectors with several threads, flushing every few milliseconds and printing the
/// versions acknowledged before each completed flush; it is SIGKILLed at a random moment, 200
/// times in a row on the same namespace. After each kill, <c>pfnblock check</c> must find the
/// BTT consistent, and after reopening every sector must hold exactly one version written in
/// full, no older than what the last completed flush covered nor than what was read before.
/// </summary>
public sealed class BttCrashTests(ITestOutputHelper output) : IDisposable
{
    private readonly BttScratch _s = new(frames: 64);
    private FrameRun? _buf;

    public void Dispose() => _s.Dispose();

    [Theory]
    [InlineData("pmem-4k", 200)]
    [InlineData("pmemblk", 40)]
    public void KilledWritersLeaveOnlyWholeSectorsAndEveryFlushedWrite(string target, int iterations)
    {
        if (int.TryParse(Environment.GetEnvironmentVariable("PFNBLOCK_CRASH_ITERATIONS"), out int n) && n > 0) iterations = n;
        string path = target == "pmemblk" ? Pool() : _s.SectorNamespace("crash", size: 20 << 20, sectorSize: 4096);
        string helper = Path.Combine(AppContext.BaseDirectory, "PfnBlock.TestHelper.dll");
        var rng = new Random(20261125);
        long[]? floor = null;
        long nextVersion = 1;
        int recovered = 0, pending = 0, killedBeforeFlush = 0;
        var clock = Stopwatch.StartNew();
        for (int i = 0; i < iterations; i++)
        {
            uint[]? flushed = RunAndKill(helper, path, nextVersion, rng, out long nlba);
            if (flushed is null) killedBeforeFlush++;
            floor ??= new long[nlba];

            BttCheckReport check = BttCheck.Run(path, repair: false);
            Assert.True(check.Consistent, $"iteration {i}: " + string.Join("\n", check.Findings.Select(f => f.Message)));
            pending += check.Findings.Count(f => f.Message.Contains("interrupted"));

            using var dev = Assert.IsType<BttDevice>(DeviceSpec.Parse("pmem:" + path).Open());
            recovered += dev.Btt.RecoveredWrites;
            long maxSeen = VerifyAll(dev, floor, flushed, i);
            nextVersion = Math.Max(nextVersion, maxSeen + 1);
        }
        output.WriteLine($"{target}: {iterations} kills in {clock.Elapsed.TotalSeconds:F1} s; {recovered} interrupted map updates completed at open " +
                         $"({pending} seen pending by check); {killedBeforeFlush} kills before the first flush; last version {nextVersion - 1}");
        Assert.Equal(pending, recovered);
    }

    private string Pool()
    {
        string path = _s.File("crashpool");
        using Process p = Process.Start(new ProcessStartInfo("pmempool", ["create", "blk", "4096", path]))!;
        p.WaitForExit();
        Assert.Equal(0, p.ExitCode);
        return path;
    }

    /// <summary>Runs the helper until a random moment after it is ready, SIGKILLs it, and returns the last complete flushed snapshot.</summary>
    private static uint[]? RunAndKill(string helper, string path, long baseVersion, Random rng, out long nlba)
    {
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (string a in new[] { helper, "crash", "pmem:" + path, "3", baseVersion.ToString(), "10", rng.Next().ToString() }) psi.ArgumentList.Add(a);
        using Process p = Process.Start(psi)!;
        string? ready = p.StandardOutput.ReadLine();
        if (ready?.StartsWith("ready ") != true) Assert.Fail($"helper did not start: {ready} {p.StandardError.ReadToEnd()}");
        nlba = long.Parse(ready!["ready ".Length..]);
        int expectedLength = (int)((nlba * 4 + 2) / 3 * 4) + 2;
        long lines = nlba;
        string? last = null;
        var reader = Task.Run(() =>
        {
            string? line;
            while ((line = p.StandardOutput.ReadLine()) is not null)
                if (line.Length == expectedLength && line.StartsWith("F ")) last = line; // a line cut by the kill is shorter
        });
        Thread.Sleep(rng.Next(5, 200));
        p.Kill();
        p.WaitForExit();
        reader.Wait();
        if (last is null) return null;
        byte[] raw = Convert.FromBase64String(last[2..]);
        var snapshot = new uint[lines];
        for (long i = 0; i < lines; i++) snapshot[i] = BinaryPrimitives.ReadUInt32LittleEndian(raw.AsSpan((int)i * 4));
        return snapshot;
    }

    private long VerifyAll(BttDevice dev, long[] floor, uint[]? flushed, int iteration)
    {
        int lbs = dev.Limits.LogicalBlockSize;
        long nlba = dev.CapacityBytes / lbs;
        const int Chunk = 64;
        FrameRun buf = _buf ??= _s.Frames(Chunk * lbs / Pfn.PageSize);
        var bio = new Bio();
        long maxSeen = 0;
        for (long start = 0; start < nlba; start += Chunk)
        {
            int count = (int)Math.Min(Chunk, nlba - start);
            bio.Init(BioOp.Read, start * lbs >> Bio.SectorShift).AddVec(buf.First, 0, (uint)(count * lbs));
            Assert.Equal(BlockStatus.Ok, dev.SubmitAndWait(bio));
            Span<byte> data = _s.Span(buf, count * lbs);
            for (int i = 0; i < count; i++)
            {
                long lba = start + i;
                long v = SectorPattern.Decode(data.Slice(i * lbs, lbs), lba);
                Assert.True(v >= 0, $"iteration {iteration}: sector {lba} is torn or holds another sector's data");
                long mustHave = Math.Max(floor[lba], flushed?[lba] ?? 0);
                Assert.True(v >= mustHave, $"iteration {iteration}: sector {lba} holds version {v}, but version {mustHave} was acknowledged before a completed flush or read before");
                floor[lba] = v;
                maxSeen = Math.Max(maxSeen, v);
            }
        }
        return maxSeen;
    }
}
