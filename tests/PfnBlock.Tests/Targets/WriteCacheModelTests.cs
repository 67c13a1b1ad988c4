using System.Buffers.Binary;
using CsCheck;
using PfnBlock.Block;
using PfnBlock.Devices;
using PfnBlock.Memory;
using PfnBlock.Namespaces;
using PfnBlock.Targets.WriteCache;
using PfnBlock.Tests.Block;

namespace PfnBlock.Tests.Targets;

/// <summary>
/// The write cache against a model: random sequences of writes (1..8 blocks, some FUA), flushes,
/// discards, write-back steps, read checks and crashes, on a cache small enough to wrap often.
/// Reads through the cache equal the model at every check; after each write-back step the origin
/// alone equals the model's state after exactly the log's written-back prefix. The commit rule:
/// a write is durable once FUA, once a flush followed it, or once <c>autocommit_blocks</c> plain
/// blocks were written since the last commit (the model counts them as dm-writecache does). A
/// power loss loses every write not durable by that rule (some of their lines torn, the others
/// whole but uncommitted: recovery must erase them, or a later commit would revive them); a clean
/// close loses nothing. After either, reads equal the model without the lost writes. With
/// <c>read_cache</c> on, the same sequences run while every read check also fills clean copies of
/// origin blocks into the free slots (and later reads are served from them): reads still equal
/// the model, so no copy outlives a write, a discard, a write-back or a crash.
/// </summary>
public sealed class WriteCacheModelTests
{
    private const int Blocks = 64;
    private const int AutocommitBlocks = 16;
    private const int BlockSize = WriteCacheLayout.BlockSize;
    static WriteCacheModelTests() => DeviceTypes.RegisterAssembly(typeof(WriteCacheModelTests).Assembly);

    /// <summary>One step of a scenario.</summary>
    /// <param name="Kind">0-5 write, 6 flush, 7 discard, 8-9 write-back step, 10 read check, 11 crash.</param>
    /// <param name="Block">First block.</param>
    /// <param name="Count">Blocks (writes and discards).</param>
    /// <param name="Fua">FUA on a write or discard.</param>
    /// <param name="Lose">For a crash: bit 63 set, a power loss, which tears the line of the i-th non-durable entry when bit i (i &lt; 63) is set; else a clean close.</param>
    public sealed record Step(int Kind, int Block, int Count, bool Fua, long Lose);

    /// <summary>A block's write or a range's discard, as the log holds it.</summary>
    private sealed record Logged(long Seq, int Block, int Count, long Version, bool Discard)
    {
        public bool Durable { get; set; }
    }

    private static readonly Gen<Step> GenStep =
        Gen.Select(Gen.Int[0, 11], Gen.Int[0, Blocks - 1], Gen.Int[1, 8], Gen.Bool, Gen.Long, (k, b, c, f, l) => new Step(k, b, Math.Min(c, Blocks - b), f, l));

    [Fact]
    public void ReadsFollowTheModelTheOriginIsAlwaysALogPrefixAndCrashesKeepDurableWrites()
    {
        GenStep.Array[1, 60].Sample(steps => Run(steps), iter: 40, threads: 1);
    }

    /// <summary>
    /// The same with read caching of origin data in the free slots (half the log): reads equal the
    /// model whatever writes, discards, write-backs and crashes came between the copies being made
    /// and being read. The runs together must have used the read cache (hits, inserts, and
    /// evictions by the log reaching a copy's slot), or the property would say nothing about it.
    /// </summary>
    [Fact]
    public void WithReadCachingReadsStillFollowTheModel()
    {
        var total = new WriteCacheReadCacheStatus();
        GenStep.Array[1, 60].Sample(steps =>
        {
            total = Add(total, Run(steps, readCache: 50));
        }, iter: 40, threads: 1);
        Assert.True(total.Hits > 0 && total.Inserts > 0 && total.Evictions > 0 && total.Dropped > 0, $"the read cache was hardly used: {total}");
    }

    /// <summary>A crash with nothing lost replays exactly; the entries all come back.</summary>
    [Fact]
    public void ReopeningRecoversEveryEntry()
    {
        Run([new Step(0, 3, 4, false, 0), new Step(0, 5, 1, true, 0), new Step(7, 0, 2, false, 0), new Step(11, 0, 0, false, 0), new Step(10, 0, 0, false, 0)]);
    }

    /// <summary>
    /// Unflushed writes lost in a power loss stay lost: recovery erases their whole but uncommitted
    /// entries, so the flush after the next writes (which reuse their sequence numbers and commit
    /// past them) does not bring them back at the following recovery.
    /// </summary>
    [Fact]
    public void UncommittedEntriesAreErasedAndNeverRevived()
    {
        Run([new Step(0, 10, 6, false, 0), new Step(11, 0, 0, false, long.MinValue), new Step(0, 20, 2, false, 0), new Step(6, 0, 0, false, 0),
            new Step(11, 0, 0, false, long.MinValue), new Step(10, 0, 0, false, 0)]);
    }

    /// <summary>Runs one scenario; returns the read cache's counters summed over the opens (zeros without one).</summary>
    private static WriteCacheReadCacheStatus Run(Step[] steps, int readCache = 0)
    {
        using var s = new Scratch();
        string origin = "pmem:" + s.NewNamespace(1 << 20);
        // The cache: 352 KiB of a namespace through a linear table, so the log has ~80 entries and wraps often.
        string cacheTable = s.NewPath("cache.table"), cacheNs = s.NewNamespace(1 << 20);
        File.WriteAllText(cacheTable, $"0 704 linear pmem:{cacheNs} 0\n");
        string table = s.NewPath("wc.table");
        string options = $"high_watermark 100 low_watermark 100 autocommit_blocks {AutocommitBlocks} autocommit_time 0" + (readCache > 0 ? $" read_cache {readCache}" : "");
        File.WriteAllText(table, $"0 {Blocks * 8} writecache p {origin} table:{cacheTable} 4096 {options.Split(' ').Length} {options}\n");
        var used = new WriteCacheReadCacheStatus();
        void Count(WriteCacheTarget wc)
        {
            if (wc.Status.ReadCache is { } r) used = Add(used, r);
        }

        var ops = new List<Logged>();
        long version = 0, uncommitted = 0;
        var set = new DeviceSet();
        try
        {
            (IBlockDevice dev, WriteCacheTarget wc) = Open(set, table);
            using var buffers = new IoBuffers(dev.AddressSpace, 4 << 20);
            var rng = new Random(steps.Length);
            foreach (Step step in steps)
            {
                WriteCacheLog log = wc.Log;
                switch (step.Kind)
                {
                    case <= 5 or 7:
                    {
                        bool discard = step.Kind == 7;
                        // Keep room: the test steps write-back itself, so a full log would wait forever.
                        while (log.Entries - log.Used < step.Count + 1) Assert.True(wc.Writeback.Step(), "a full log made no progress");
                        long head = log.Head;
                        Bio bio;
                        IoBuffers.Layout? data = null;
                        if (discard)
                        {
                            bio = new Bio().Init(BioOp.Discard, step.Block * 8L, step.Fua ? BioFlags.Fua : BioFlags.None);
                            bio.Iter.Size = (uint)(step.Count * BlockSize);
                        }
                        else
                        {
                            data = buffers.NewLayout(rng, step.Count * BlockSize);
                            byte[] bytes = new byte[step.Count * BlockSize];
                            for (int j = 0; j < step.Count; j++) Fill(bytes.AsSpan(j * BlockSize, BlockSize), version + 1 + j, step.Block + j);
                            data.Write(bytes);
                            bio = data.AddTo(new Bio().Init(BioOp.Write, step.Block * 8L, step.Fua ? BioFlags.Fua : BioFlags.None));
                        }
                        Assert.Equal(BlockStatus.Ok, TargetSeamProperties.RunOnce(dev, bio));
                        data?.Dispose();
                        if (discard) ops.Add(new Logged(head, step.Block, step.Count, 0, true) { Durable = step.Fua });
                        else
                            for (int j = 0; j < step.Count; j++) ops.Add(new Logged(head + j, step.Block + j, 1, ++version, false) { Durable = step.Fua });
                        Assert.Equal(head + (discard ? 1 : step.Count), log.Head);
                        // autocommit_blocks: plain entries count (a discard is one), FUA ones are durable anyway.
                        if (!step.Fua && (uncommitted += discard ? 1 : step.Count) >= AutocommitBlocks)
                        {
                            foreach (Logged o in ops) o.Durable = true;
                            uncommitted = 0;
                        }
                        break;
                    }
                    case 6:
                        Assert.Equal(BlockStatus.Ok, TargetSeamProperties.RunOnce(dev, new Bio().Init(BioOp.Flush, 0)));
                        foreach (Logged o in ops) o.Durable = true;
                        uncommitted = 0;
                        break;
                    case 8 or 9:
                        wc.Writeback.Step();
                        CheckOrigin(set, origin, ops, log.Tail, buffers);
                        break;
                    case 10:
                        CheckReads(dev, ops, buffers, rng);
                        break;
                    default:
                    {
                        // Power fails: every entry not yet durable is lost, some of them torn (line zeroed),
                        // the others whole; durable ones stay. A clean close commits everything.
                        bool powerLoss = step.Lose < 0;
                        long tail = log.Tail;
                        int i = 0, torn = 0;
                        var lost = new HashSet<Logged>();
                        foreach (Logged o in ops)
                        {
                            if (!powerLoss || o.Durable || o.Seq < tail) continue;
                            if (!lost.Add(o) || (step.Lose >> (i++ % 63) & 1) == 0) continue;
                            Zero(log, o.Seq);
                            torn++;
                        }
                        ops.RemoveAll(lost.Contains);
                        ulong commitWord = CommitWord(log);
                        Count(wc);
                        set.Dispose();
                        // A power loss never ran the close: its commit did not happen.
                        if (powerLoss) SetCommitWord(cacheNs, commitWord);
                        set = new DeviceSet();
                        uncommitted = 0;
                        (dev, wc) = Open(set, table);
                        Assert.Equal(ops.Count(o => o.Seq >= wc.Log.Tail), wc.Log.RecoveredEntries);
                        Assert.Equal(lost.Count - torn, wc.Log.UncommittedFound);
                        Assert.Equal(0, wc.Log.ReadCache?.Count ?? 0); // clean copies are DRAM state: none survives
                        foreach (Logged o in ops) o.Durable = true; // whatever recovery found is on the cache device now
                        CheckReads(dev, ops, buffers, rng);
                        CheckOrigin(set, origin, ops, wc.Log.Tail, buffers);
                        break;
                    }
                }
            }
            CheckReads(dev, ops, buffers, rng);
            Assert.True(wc.WriteBackAll(TimeSpan.FromSeconds(30)));
            CheckOrigin(set, origin, ops, wc.Log.Tail, buffers);
            Assert.Equal(0, wc.Status.Used);
            Count(wc);
        }
        finally
        {
            set.Dispose();
        }
        return used;
    }

    private static WriteCacheReadCacheStatus Add(WriteCacheReadCacheStatus a, WriteCacheReadCacheStatus b) =>
        a with { Hits = a.Hits + b.Hits, Inserts = a.Inserts + b.Inserts, Evictions = a.Evictions + b.Evictions, Dropped = a.Dropped + b.Dropped };

    private static (IBlockDevice, WriteCacheTarget) Open(DeviceSet set, string table)
    {
        var dev = (MappedDevice)set.Open("table:" + table);
        var wc = (WriteCacheTarget)dev.Table[0].Target;
        wc.PauseWriteback();
        return (dev, wc);
    }

    private static unsafe void Zero(WriteCacheLog log, long seq) =>
        PmemStore.Clear(log.Base + log.Layout.EntryOffset(seq), WriteCacheLayout.EntrySize);

    private static unsafe ulong CommitWord(WriteCacheLog log) => *(ulong*)(log.Base + WriteCacheSuperblock.CommitOffset);

    /// <summary>Puts the commit word back as it was before the close (the linear table maps the namespace from byte 0).</summary>
    private static unsafe void SetCommitWord(string ns, ulong word)
    {
        using PmemNamespace n = PmemNamespace.Open(ns);
        *(ulong*)(n.DataAddress + WriteCacheSuperblock.CommitOffset) = word;
        n.Flush();
    }

    /// <summary>The model's blocks after the logged operations with sequence below <paramref name="upTo"/>: a version per block, 0 for zeros.</summary>
    private static long[] State(List<Logged> ops, long upTo)
    {
        long[] state = new long[Blocks];
        foreach (Logged o in ops.Where(o => o.Seq < upTo).OrderBy(o => o.Seq))
            for (int b = o.Block; b < o.Block + o.Count; b++) state[b] = o.Discard ? 0 : o.Version;
        return state;
    }

    private static void CheckReads(IBlockDevice dev, List<Logged> ops, IoBuffers buffers, Random rng) =>
        Compare(ReadAll(dev, buffers, rng), State(ops, long.MaxValue), "read through the cache");

    private static void CheckOrigin(DeviceSet set, string origin, List<Logged> ops, long tail, IoBuffers buffers) =>
        Compare(ReadAll(set.Open(origin), buffers, new Random(1)), State(ops, tail), $"origin alone, written back below sequence {tail}");

    private static byte[] ReadAll(IBlockDevice dev, IoBuffers buffers, Random rng)
    {
        byte[] all = new byte[Blocks * BlockSize];
        for (int b = 0; b < Blocks; b += 8)
        {
            using IoBuffers.Layout layout = buffers.NewLayout(rng, 8 * BlockSize);
            Assert.Equal(BlockStatus.Ok, TargetSeamProperties.RunOnce(dev, layout.AddTo(new Bio().Init(BioOp.Read, b * 8L))));
            layout.Read().CopyTo(all, b * BlockSize);
        }
        return all;
    }

    private static void Compare(byte[] actual, long[] expected, string what)
    {
        byte[] block = new byte[BlockSize];
        for (int b = 0; b < Blocks; b++)
        {
            if (expected[b] == 0) Array.Clear(block);
            else Fill(block, expected[b], b);
            if (!actual.AsSpan(b * BlockSize, BlockSize).SequenceEqual(block))
            {
                long found = BinaryPrimitives.ReadInt64LittleEndian(actual.AsSpan(b * BlockSize));
                Assert.Fail($"{what}: block {b} holds version {found}, the model says {expected[b]}");
            }
        }
    }

    private static void Fill(Span<byte> block, long version, int blockIndex)
    {
        for (int i = 0; i < BlockSize; i += 16)
        {
            BinaryPrimitives.WriteInt64LittleEndian(block[i..], version);
            BinaryPrimitives.WriteInt64LittleEndian(block[(i + 8)..], blockIndex * 1000L + i);
        }
    }
}
