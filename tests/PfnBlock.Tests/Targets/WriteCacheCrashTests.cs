using System.Buffers.Binary;
using System.Diagnostics;
using PfnBlock.Block;
using PfnBlock.CrashChild;
using PfnBlock.Devices;
using PfnBlock.Targets.WriteCache;
using PfnBlock.Tests.Block;
using Xunit.Abstractions;

namespace PfnBlock.Tests.Targets;

/// <summary>
/// A write cache in a real process that is SIGKILLed: a child writes versioned blocks through a
/// <c>writecache</c> table (a pmem cache small enough that write-back runs nearly all the time,
/// over an O_DIRECT file), each made durable by FUA or by a flush before it prints its
/// acknowledgement. After every kill, before the cache is opened again, the origin alone must be a
/// prefix of the writes (every version older than the newest one on it, but for the last flush
/// epoch, present or overwritten); then, through the cache, every acknowledged write must be there.
/// With <c>read_cache</c> on, the child also reads random blocks after each acknowledgement (and
/// checks them), so clean copies of origin data fill the free slots, some next to the head, when
/// it is killed: none may come back as data after the restart (a block would then read an older
/// version than its acknowledged one).
/// </summary>
public sealed class WriteCacheCrashTests(ITestOutputHelper output) : IDisposable
{
    private const int Blocks = 256;
    private readonly Scratch _scratch = new();

    static WriteCacheCrashTests() => DeviceTypes.RegisterAssembly(typeof(WriteCacheCrashTests).Assembly);

    public void Dispose() => _scratch.Dispose();

    [Fact]
    public void KilledWritersLoseNoAcknowledgedWriteAndTheOriginStaysAPrefix() =>
        Run("6 high_watermark 20 low_watermark 5 writeback_jobs 16", reads: 0, defaultIterations: 40);

    [Fact]
    public void WithReadCachingKilledWritersLoseNothingAndNoCleanCopyComesBackAsData() =>
        Run("8 high_watermark 20 low_watermark 5 writeback_jobs 16 read_cache 90", reads: 2, defaultIterations: 16);

    private void Run(string options, int reads, int defaultIterations)
    {
        int iterations = int.TryParse(Environment.GetEnvironmentVariable("PFNBLOCK_CRASH_ITERATIONS"), out int n) && n > 0 ? n : defaultIterations;
        string origin = "file:" + _scratch.NewSizedFile("/var/tmp", Blocks * 4096L, "wc-origin");
        string cache = "pmem:" + _scratch.NewNamespace(1 << 20);
        string table = _scratch.NewPath("wc.table");
        File.WriteAllText(table, $"0 {Blocks * 8} writecache p {origin} {cache} 4096 {options}\n");
        int seed = Random.Shared.Next();
        var rng = new Random(seed);
        // The versions each block may hold: exactly one once a write to it was acknowledged; the
        // version in flight at a kill may or may not have landed.
        var allowed = new HashSet<long>[Blocks];
        for (int b = 0; b < Blocks; b++) allowed[b] = [0];
        var optional = new HashSet<long>();
        long next = 1, acked = 0, writtenBack = 0, inserts = 0;
        double emptiest = 100;
        var clock = Stopwatch.StartNew();
        for (int round = 0; round < iterations; round++)
        {
            string ctx = $"seed {seed}, round {round}";
            List<(long Version, int Block)> acks = RunAndKill("table:" + table, seed, next, reads, rng.Next(0, 60), ctx);
            for (int i = 0; i < acks.Count; i++)
            {
                (long v, int b) = acks[i];
                Assert.Equal(next + i, v);
                allowed[b] = [v];
            }
            long inFlight = (acks.Count > 0 ? acks[^1].Version : next - 1) + 1;
            allowed[CrashProtocol.BlockFor(seed, inFlight, Blocks)].Add(inFlight);
            optional.Add(inFlight);
            next = inFlight + 1;
            acked += acks.Count;

            writtenBack += CheckOriginIsPrefix(origin, seed, next, optional, ctx);
            using var set = new DeviceSet();
            var dev = (MappedDevice)set.Open("table:" + table);
            var wc = (WriteCacheTarget)dev.Table[0].Target;
            wc.PauseWriteback();
            CheckBlocks(dev, b => allowed[b], ctx + ", through the cache");
            inserts += wc.Status.ReadCache?.Inserts ?? 0;
            emptiest = Math.Min(emptiest, wc.Status.UsedPercent);
        }
        output.WriteLine($"{iterations} kills in {clock.Elapsed.TotalSeconds:F1} s, {acked} acknowledged writes, {writtenBack} block versions found on the origin after the kills, {inserts} clean copies made by the checks' reads, the emptiest log at a check {emptiest:F0} % used");
        Assert.True(acked > iterations, $"too few acknowledged writes ({acked}) to mean anything");
        Assert.True(writtenBack > 0, "write-back never reached the origin before a kill");
        if (reads > 0) CheckReadCacheFillsOnceWrittenBack(table, allowed);
    }

    /// <summary>
    /// The read cache is on in this table (the child's copies are not visible from here): once the
    /// log is written back, reading every block through the cache must make clean copies and read
    /// the acknowledged versions. Not counted during the rounds: copies go only where the log has
    /// room (not within N/8 of its head), and on a loaded machine write-back may trail the writer
    /// so far that every check opens a log more than 7/8 full, leaving no room at all.
    /// </summary>
    private static void CheckReadCacheFillsOnceWrittenBack(string table, HashSet<long>[] allowed)
    {
        using var set = new DeviceSet();
        var dev = (MappedDevice)set.Open("table:" + table);
        var wc = (WriteCacheTarget)dev.Table[0].Target;
        Assert.True(wc.WriteBackAll(TimeSpan.FromSeconds(120)), $"write-back did not finish: {wc.Status}");
        CheckBlocks(dev, b => allowed[b], "after write-back, through the cache");
        Assert.True(wc.Status.ReadCache?.Inserts > 0, $"the read cache made no clean copy of a written-back log: {wc.Status}");
    }

    /// <summary>
    /// The origin alone: with M the newest version on it, every block holds at least the newest
    /// version written to it up to M − 2 (versions of one flush epoch are at most two apart), unless
    /// that version was in flight at a kill. Returns how many blocks hold a version.
    /// </summary>
    private static int CheckOriginIsPrefix(string origin, int seed, long next, HashSet<long> optional, string ctx)
    {
        using var set = new DeviceSet();
        IBlockDevice dev = set.Open(origin);
        long[] versions = CheckBlocks(dev, _ => null, ctx + ", origin alone");
        long max = versions.Max();
        var newest = new long[Blocks];
        for (long v = 1; v <= max - 2; v++)
            if (!optional.Contains(v)) newest[CrashProtocol.BlockFor(seed, v, Blocks)] = v;
        for (int b = 0; b < Blocks; b++)
            Assert.True(versions[b] >= newest[b],
                $"origin block {b} holds version {versions[b]} but version {newest[b]}, older than the newest on the origin ({max}) by more than a flush epoch, was written to it ({ctx})");
        Assert.True(max < next, $"the origin holds version {max}, never written ({ctx})");
        return versions.Count(v => v != 0);
    }

    /// <summary>Reads every block: each must be whole (one version in every word, of that block) and, when <paramref name="allowed"/> says, one of the allowed versions.</summary>
    private static long[] CheckBlocks(IBlockDevice dev, Func<int, HashSet<long>?> allowed, string ctx)
    {
        using var buffers = new IoBuffers(dev.AddressSpace, 2 << 20);
        var versions = new long[Blocks];
        for (int first = 0; first < Blocks; first += 16)
        {
            using IoBuffers.Layout layout = buffers.Single(16 * CrashProtocol.BlockSize);
            Assert.Equal(BlockStatus.Ok, TargetSeamProperties.RunOnce(dev, layout.AddTo(new Bio().Init(BioOp.Read, first * 8L))));
            byte[] data = layout.Read();
            for (int j = 0; j < 16; j++)
            {
                int b = first + j;
                long version = -1;
                for (int i = 0; i < CrashProtocol.WordsPerBlock; i++)
                {
                    ulong word = BinaryPrimitives.ReadUInt64LittleEndian(data.AsSpan(j * CrashProtocol.BlockSize + i * 8));
                    long v = 0;
                    if (word != 0)
                    {
                        (v, int block, int index) = CrashProtocol.Decode(word);
                        Assert.True(block == b && index == i, $"block {b} word {i} holds data of block {block} word {index} ({ctx})");
                    }
                    if (version < 0) version = v;
                    Assert.True(v == version, $"block {b} mixes versions {version} and {v} ({ctx})");
                }
                if (allowed(b) is { } set)
                    Assert.True(set.Contains(version), $"block {b} holds version {version}; allowed {string.Join(",", set)} ({ctx})");
                versions[b] = version;
            }
        }
        return versions;
    }

    /// <summary>Runs the writer until a random moment after its first acknowledgement, SIGKILLs it and returns every acknowledgement it printed.</summary>
    private static List<(long Version, int Block)> RunAndKill(string spec, int seed, long first, int reads, int runMs, string ctx) =>
        CrashWriter.RunAndKill(["write-spec", spec, seed.ToString(), first.ToString(), Blocks.ToString(), reads.ToString()], runMs, ctx);
}
