using System.Buffers.Binary;
using PfnBlock.Block;
using PfnBlock.Devices;
using PfnBlock.Exports.Nbd;
using PfnBlock.Management;
using PfnBlock.Management.Control;
using PfnBlock.Namespaces;
using PfnBlock.Targets.Flakey;
using PfnBlock.Targets.WriteCache;
using PfnBlock.Tests.Block;

namespace PfnBlock.Tests.Targets;

/// <summary>
/// The write cache's edges: bad table lines, unfit and foreign cache devices, another origin,
/// damaged metadata (refused, nothing lost), origin write errors (retried, reported, data kept),
/// cleaner mode, status counters, and readers racing with slot reuse under write-back.
/// </summary>
public sealed class WriteCacheTests : IDisposable
{
    private readonly Scratch _scratch = new();
    private readonly List<DeviceSet> _sets = [];
    private IoBuffers? _buffers;

    static WriteCacheTests() => DeviceTypes.RegisterAssembly(typeof(WriteCacheTests).Assembly);

    public void Dispose()
    {
        _buffers?.Dispose();
        foreach (DeviceSet s in _sets) s.Dispose();
        _scratch.Dispose();
    }

    private DeviceSet NewSet()
    {
        var set = new DeviceSet();
        _sets.Add(set);
        return set;
    }

    private string Table(params string[] lines)
    {
        string path = _scratch.NewPath("wc.table");
        File.WriteAllLines(path, lines);
        return "table:" + path;
    }

    private string Pmem(long size = 1 << 20) => "pmem:" + _scratch.NewNamespace(size);

    private IoBuffers Buffers(IBlockDevice dev) => _buffers ??= new IoBuffers(dev.AddressSpace, 4 << 20);

    /// <summary>
    /// What a read racing writes of the same block may return: every 16-byte stamp of the block is
    /// a version of this block acknowledged before the read began or written during it (a read
    /// that overlaps a write, here the write-back of a newer version to the origin, may see parts
    /// of both, as on any block device), or zeros while nothing was acknowledged. Data of another
    /// block, or a version older than one acknowledged before the read, is a slot-reuse bug.
    /// </summary>
    private static string? CheckRacingBlock(ReadOnlySpan<byte> data, int block, long floor)
    {
        for (int k = 0; k < data.Length; k += 16)
        {
            long v = BinaryPrimitives.ReadInt64LittleEndian(data[k..]);
            long owner = BinaryPrimitives.ReadInt64LittleEndian(data[(k + 8)..]);
            bool ok = v == 0 ? owner == 0 && floor == 0 : owner == block && v >= floor;
            if (!ok) return $"block {block} byte {k} reads version {v} of block {owner}; version {floor} was acknowledged before the read";
        }
        return null;
    }

    private static byte[] Block(long version, int block)
    {
        byte[] b = new byte[4096];
        for (int i = 0; i < b.Length; i += 16)
        {
            BinaryPrimitives.WriteInt64LittleEndian(b.AsSpan(i), version);
            BinaryPrimitives.WriteInt64LittleEndian(b.AsSpan(i + 8), block);
        }
        return b;
    }

    private BlockStatus Write(IBlockDevice dev, int block, byte[] data, BioFlags flags = BioFlags.None)
    {
        using IoBuffers.Layout layout = Buffers(dev).Single(data.Length);
        layout.Write(data);
        return TargetSeamProperties.RunOnce(dev, layout.AddTo(new Bio().Init(BioOp.Write, block * 8L, flags)));
    }

    private byte[] Read(IBlockDevice dev, int block, int blocks = 1)
    {
        using IoBuffers.Layout layout = Buffers(dev).Single(blocks * 4096);
        Assert.Equal(BlockStatus.Ok, TargetSeamProperties.RunOnce(dev, layout.AddTo(new Bio().Init(BioOp.Read, block * 8L))));
        return layout.Read();
    }

    private static WriteCacheTarget Cache(IBlockDevice dev) => (WriteCacheTarget)((MappedDevice)dev).Table[0].Target;

    private string Refused(string line)
    {
        using var set = new DeviceSet(); // disposed at once: a refused line must leave nothing claimed
        var e = Assert.ThrowsAny<Exception>(() => set.Open(Table(line)));
        return e.Message;
    }

    [Fact]
    public void BadTableLinesAreRefusedSayingWhy()
    {
        string origin = Pmem(), cache = Pmem();
        Assert.Contains("Only persistent memory mode 'p'", Refused($"0 1024 writecache s {origin} {cache} 4096 0"));
        Assert.Contains("Invalid block size '512'", Refused($"0 1024 writecache p {origin} {cache} 512 0"));
        Assert.Contains("the count says 2, the line has 1", Refused($"0 1024 writecache p {origin} {cache} 4096 2 cleaner"));
        Assert.Contains("Invalid optional argument 'fast'", Refused($"0 1024 writecache p {origin} {cache} 4096 2 fast 1"));
        Assert.Contains("Missing value for optional argument 'high_watermark'", Refused($"0 1024 writecache p {origin} {cache} 4096 1 high_watermark"));
        Assert.Contains("low_watermark 60 is above high_watermark 50", Refused($"0 1024 writecache p {origin} {cache} 4096 4 high_watermark 50 low_watermark 60"));
        Assert.Contains("Invalid high_watermark: '101'", Refused($"0 1024 writecache p {origin} {cache} 4096 2 high_watermark 101"));
        Assert.Contains("Device too small", Refused($"0 1048576 writecache p {origin} {cache} 4096 0"));
        Assert.Contains("has no direct access", Refused($"0 1024 writecache p {origin} ram:1M,name=wc-ram-{Guid.NewGuid():N} 4096 0"));
        // 64 KiB of cache cannot hold the superblock and 64 entries.
        string tiny = Table($"0 128 linear {cache} 0");
        Assert.Contains("too small", Refused($"0 1024 writecache p {origin} {tiny} 4096 0"));
    }

    [Fact]
    public void APrintedTableParsesBackToTheSameOptions()
    {
        string line = $"0 1024 writecache p {Pmem()} {Pmem()} 4096 9 high_watermark 60 low_watermark 40 writeback_jobs 8 autocommit_time 100 cleaner";
        IBlockDevice dev = NewSet().Open(Table(line));
        Assert.Equal(line, ((MappedDevice)dev).TableText);
        WriteCacheOptions o = Cache(dev).Options;
        Assert.Equal((60, 40, 8, 100, true), (o.HighWatermark, o.LowWatermark, o.WritebackJobs, o.AutocommitMs, o.Cleaner));
        Assert.Equal(4096, dev.Limits.LogicalBlockSize);
    }

    [Fact]
    public void ACacheFormattedForOneOriginRefusesAnotherAndKeepsItsData()
    {
        string a = Pmem(), b = Pmem(), cache = Pmem();
        using (var set = new DeviceSet())
        {
            IBlockDevice dev = set.Open(Table($"0 1024 writecache p {a} {cache} 4096 0"));
            Cache(dev).PauseWriteback();
            Assert.Equal(BlockStatus.Ok, Write(dev, 3, Block(7, 3), BioFlags.Fua));
        }
        string message = Refused($"0 1024 writecache p {b} {cache} 4096 0");
        Assert.Contains("the cache belongs to another origin", message);
        // The refusal wrote nothing: the cache still opens for its own origin, with the write in it.
        IBlockDevice again = NewSet().Open(Table($"0 1024 writecache p {a} {cache} 4096 0"));
        Assert.Equal(1, Cache(again).Log.RecoveredEntries);
        Assert.Equal(Block(7, 3), Read(again, 3));
    }

    [Fact]
    public void AnOriginFileThatChangedSizeIsRefused()
    {
        string file = _scratch.NewSizedFile("/var/tmp", 1 << 20, "wc-origin");
        string cache = Pmem();
        using (var set = new DeviceSet())
            Assert.Equal(BlockStatus.Ok, Write(set.Open(Table($"0 1024 writecache p file:{file} {cache} 4096 0")), 0, Block(1, 0), BioFlags.Fua));
        using (var f = File.OpenWrite(file)) f.SetLength(2 << 20);
        Assert.Contains("another origin", Refused($"0 1024 writecache p file:{file} {cache} 4096 0"));
    }

    [Fact]
    public unsafe void DamagedOrForeignMetadataIsRefusedAndLeftAsItWas()
    {
        string origin = Pmem(), cachePath = _scratch.NewNamespace(1 << 20), cache = "pmem:" + cachePath;
        string line = $"0 1024 writecache p {origin} {cache} 4096 0";
        using (var set = new DeviceSet())
        {
            IBlockDevice dev = set.Open(Table(line));
            Cache(dev).PauseWriteback();
            for (int i = 0; i < 4; i++) Assert.Equal(BlockStatus.Ok, Write(dev, i, Block(10 + i, i), BioFlags.Fua));
        }
        // A flipped byte in the superblock's static fields: refused as damaged, the bytes untouched.
        Flip(cachePath, 40);
        Assert.Contains("checksum mismatch", Refused(line));
        Flip(cachePath, 40);
        // An entry copied into the wrong place, checksum intact: the scan names it.
        byte[] saved = Bytes(cachePath, 4096 + 64 * 5, 64);
        Patch(cachePath, 4096 + 64 * 5, Bytes(cachePath, 4096 + 64 * 1, 64));
        Assert.Contains("belongs in entry 1", Refused(line));
        Patch(cachePath, 4096 + 64 * 5, saved);
        // A torn entry (checksum fails) is a hole: that write is gone, the others are there.
        Flip(cachePath, 4096 + 64 * 2 + 8); // sequence 2: block 1
        IBlockDevice again = NewSet().Open(Table(line));
        Assert.Equal((3L, 1L), (Cache(again).Log.RecoveredEntries, Cache(again).Log.RecoveredHoles));
        Assert.Equal(Block(10, 0), Read(again, 0));
        Assert.Equal(Block(12, 2), Read(again, 2));
        Assert.Equal(Block(13, 3), Read(again, 3));
        Assert.Equal(new byte[4096], Read(again, 1)); // origin data: never written back

        // A namespace holding something else is not formatted over.
        string foreign = _scratch.NewNamespace(1 << 20);
        Patch(foreign, 0, "not a cache"u8.ToArray());
        Assert.Contains("holds other data", Refused($"0 1024 writecache p {Pmem()} pmem:{foreign} 4096 0"));
        Assert.Equal("not a cache"u8.ToArray(), Bytes(foreign, 0, 11));
    }

    [Fact]
    public void CheckReportsWhatACacheWouldReplayAndFindsAMisplacedEntry()
    {
        string origin = Pmem(), cachePath = _scratch.NewNamespace(1 << 20);
        using (var set = new DeviceSet())
        {
            IBlockDevice dev = set.Open(Table($"0 1024 writecache p {origin} pmem:{cachePath} 4096 0"));
            Cache(dev).PauseWriteback();
            for (int i = 0; i < 3; i++) Assert.Equal(BlockStatus.Ok, Write(dev, 7, Block(i + 1, 7)));
            Assert.Equal(BlockStatus.Ok, Write(dev, 9, Block(4, 9), BioFlags.Fua));
        }
        (int exit, string stdout, string stderr) = ChildProcess.Run(ChildProcess.CliDll, ["check", "--path", cachePath]);
        Assert.True(exit == 0, stdout + stderr);
        Assert.Contains("would replay 4 entries (4 writes of 2 distinct blocks, 0 discards, 0 write-zeroes)", stdout);
        Assert.Contains("written back below sequence 1; log head 5", stdout);
        Assert.Contains("committed below sequence 5; 0 uncommitted entries", stdout); // the close committed the plain writes

        Patch(cachePath, 4096 + 64 * 6, Bytes(cachePath, 4096 + 64 * 2, 64));
        (exit, stdout, stderr) = ChildProcess.Run(ChildProcess.CliDll, ["check", "--path", cachePath]);
        Assert.True(exit == 1, stdout + stderr);
        Assert.Contains("entry 6 holds sequence number 2, which belongs in entry 2", stdout);
        Assert.Contains("write cache INCONSISTENT", stdout);
    }

    private static unsafe void Flip(string ns, long offset)
    {
        using PmemNamespace n = PmemNamespace.Open(ns);
        n.DataAddress[offset] ^= 0x40;
        n.Flush();
    }

    private static unsafe byte[] Bytes(string ns, long offset, int length)
    {
        using PmemNamespace n = PmemNamespace.Open(ns);
        return new ReadOnlySpan<byte>(n.DataAddress + offset, length).ToArray();
    }

    private static unsafe void Patch(string ns, long offset, byte[] data)
    {
        using PmemNamespace n = PmemNamespace.Open(ns);
        data.CopyTo(new Span<byte>(n.DataAddress + offset, data.Length));
        n.Flush();
    }

    [Fact]
    public void ACacheOfFormat10TakesEveryEntryAsCommittedAndGetsACommitWord()
    {
        string origin = Pmem(), cachePath = _scratch.NewNamespace(1 << 20);
        string line = $"0 1024 writecache p {origin} pmem:{cachePath} 4096 0";
        using (var set = new DeviceSet())
        {
            IBlockDevice dev = set.Open(Table(line));
            Cache(dev).PauseWriteback();
            for (int i = 0; i < 3; i++) Assert.Equal(BlockStatus.Ok, Write(dev, i, Block(20 + i, i)));
        }
        // A 1.1 cache without its commit word is damaged, not "everything committed".
        byte[] word = Bytes(cachePath, WriteCacheSuperblock.CommitOffset, 8);
        Patch(cachePath, WriteCacheSuperblock.CommitOffset, new byte[8]);
        Assert.Contains("committed-sequence word is damaged", Refused(line));
        // As a 1.0 build leaves a cache (version 1.0, no commit word; each entry was durable when written): all three count.
        WriteCacheSuperblock sb = WriteCacheSuperblock.TryParse(Bytes(cachePath, 0, 4096), long.MaxValue, out _, out string? error) ?? throw new InvalidOperationException(error);
        byte[] block = new byte[4096];
        (sb with { Minor = 0 }).Encode(block);
        Patch(cachePath, 0, block[..WriteCacheSuperblock.ChecksummedBytes]);
        (int exit, string stdout, string stderr) = ChildProcess.Run(ChildProcess.CliDll, ["check", "--path", cachePath]);
        Assert.True(exit == 0, stdout + stderr);
        Assert.Contains("no commit word", stdout);
        Assert.Contains("would replay 3 entries", stdout);
        using (var set = new DeviceSet())
        {
            IBlockDevice again = set.Open(Table(line));
            Assert.Equal(3L, Cache(again).Log.RecoveredEntries);
            for (int i = 0; i < 3; i++) Assert.Equal(Block(20 + i, i), Read(again, i));
        }
        // The writable open wrote the word: new entries follow the commit rule.
        Assert.Equal(word, Bytes(cachePath, WriteCacheSuperblock.CommitOffset, 8));
    }

    [Fact]
    public void OriginWriteErrorsAreRetriedAndReportedAndTheDataStaysInTheCache()
    {
        DeviceSet set = NewSet();
        string lower = Pmem();
        string origin = Table($"0 1024 flakey {lower} 0 3600 3600 1 error_writes");
        IBlockDevice dev = set.Open(Table($"0 1024 writecache p {origin} {Pmem()} 4096 0"));
        var flakey = (FlakeyTarget)((MappedDevice)set.Open(origin)).Table[0].Target;
        flakey.ForcedDown = true;
        for (int i = 0; i < 8; i++) Assert.Equal(BlockStatus.Ok, Write(dev, i, Block(i + 1, i)));
        WriteCacheTarget wc = Cache(dev);
        Assert.False(wc.WriteBackAll(TimeSpan.FromMilliseconds(300)));
        WriteCacheStatus failing = wc.Status;
        Assert.True(failing.WritebackErrors > 0);
        Assert.Contains("failed", failing.LastWritebackError);
        Assert.Equal(8, failing.Used);
        for (int i = 0; i < 8; i++) Assert.Equal(Block(i + 1, i), Read(dev, i)); // kept, and served from the cache

        flakey.ForcedDown = false;
        Assert.True(wc.WriteBackAll(TimeSpan.FromSeconds(30)));
        Assert.Equal(0, wc.Status.Used);
        IBlockDevice bare = set.Open(lower);
        for (int i = 0; i < 8; i++) Assert.Equal(Block(i + 1, i), Read(bare, i));
    }

    [Fact]
    public void AFullCacheWhoseOriginKeepsFailingFailsNewWritesAfterTheStallTimeoutAndKeepsWhatItHolds()
    {
        DeviceSet set = NewSet();
        string lower = Pmem();
        string origin = Table($"0 1024 flakey {lower} 0 3600 3600 1 error_writes");
        IBlockDevice dev = set.Open(Table($"0 1024 writecache p {origin} {Pmem()} 4096 2 stall_timeout 200"));
        var flakey = (FlakeyTarget)((MappedDevice)set.Open(origin)).Table[0].Target;
        flakey.ForcedDown = true;
        WriteCacheTarget wc = Cache(dev);
        long slots = wc.Log.Entries;
        // Overwrites take new log slots, so 128 blocks fill any number of slots.
        var acked = new Dictionary<int, long>();
        BlockStatus last = BlockStatus.Ok;
        long v = 0;
        while (v <= slots + 1)
        {
            v++;
            int block = (int)(v % 128);
            last = Write(dev, block, Block(v, block));
            if (last != BlockStatus.Ok) break;
            acked[block] = v;
        }
        Assert.Equal(BlockStatus.IoError, last); // after stall_timeout, not never
        Assert.True(v > slots, $"the write failed at {v} with {slots} slots: before the cache was full");
        Assert.True(wc.Status.WritebackErrors > 0);
        foreach ((int block, long version) in acked) Assert.Equal(Block(version, block), Read(dev, block)); // nothing acknowledged is lost

        // The origin is back: write-back drains the cache and writes are taken again.
        flakey.ForcedDown = false;
        Assert.True(wc.WriteBackAll(TimeSpan.FromSeconds(30)));
        Assert.Equal(BlockStatus.Ok, Write(dev, 5, Block(v + 1, 5)));
        IBlockDevice bare = set.Open(lower);
        foreach ((int block, long version) in acked)
            if (block != 5) Assert.Equal(Block(version, block), Read(bare, block));
    }

    [Fact]
    public void CleanerModeWritesEverythingBackThenPassesWritesToTheOrigin()
    {
        DeviceSet set = NewSet();
        string origin = Pmem(), cache = Pmem();
        IBlockDevice dev = set.Open(Table($"0 1024 writecache p {origin} {cache} 4096 0"));
        Cache(dev).PauseWriteback();
        for (int i = 0; i < 16; i++) Assert.Equal(BlockStatus.Ok, Write(dev, i, Block(i + 1, i)));
        Assert.Equal(16, Cache(dev).Status.Dirty);

        // dm's way: reload the table with "cleaner"; the new table shares the open cache.
        IBlockDevice cleaning = set.Open(Table($"0 1024 writecache p {origin} {cache} 4096 1 cleaner"));
        WriteCacheTarget wc = Cache(cleaning);
        Assert.Same(Cache(dev).Log, wc.Log);
        Assert.True(wc.WriteBackAll(TimeSpan.FromSeconds(30)));
        SpinWait.SpinUntil(() => wc.Status.PassThrough, TimeSpan.FromSeconds(30));
        WriteCacheStatus st = wc.Status;
        Assert.True(st.PassThrough, st.ToString());
        Assert.Equal((0L, 0L, 16L), (st.Used, st.Dirty, st.WrittenBack));

        long head = wc.Log.Head;
        Assert.Equal(BlockStatus.Ok, Write(cleaning, 20, Block(99, 20)));
        Assert.Equal(head, wc.Log.Head); // not logged
        Assert.Equal(Block(99, 20), Read(set.Open(origin), 20));
        Assert.Equal(Block(5, 4), Read(cleaning, 4));
    }

    [Fact]
    public void StatusCountsHitsMissesAndDirtyBlocks()
    {
        IBlockDevice dev = NewSet().Open(Table($"0 1024 writecache p {Pmem()} {Pmem()} 4096 0"));
        WriteCacheTarget wc = Cache(dev);
        wc.PauseWriteback();
        Assert.Equal(BlockStatus.Ok, Write(dev, 2, Block(1, 2)));
        Assert.Equal(BlockStatus.Ok, Write(dev, 2, Block(2, 2)));
        Read(dev, 1, 3); // blocks 1, 2, 3: one hit, two misses
        WriteCacheStatus st = wc.Status;
        Assert.Equal((2L, 1L, 1L, 1L, 2L), (st.Used, st.Dirty, st.WriteHits, st.ReadHits, st.ReadMisses));
        Assert.NotNull(st.OldestDirtyAge);
        Assert.Contains("used 2/", st.ToString());
    }

    [Fact]
    public void TheControlSocketCommandShowsAndSteersACache()
    {
        DeviceSet set = NewSet();
        string spec = Table($"0 1024 writecache p {Pmem()} {Pmem()} 4096 0");
        IBlockDevice dev = set.Open(spec);
        var exports = new NbdExportRegistry();
        exports.Add(new NbdExport("wc", dev));
        var server = new ServerContext(set, exports);
        ControlCommandRegistry commands = ControlCommandRegistry.CreateDefault();
        ControlCommand cmd = commands.Find("writecache")!;
        System.Text.Json.Nodes.JsonNode? Call(params string[] args) => cmd.Run(new ControlRequest(args, server, commands));

        Assert.True(Call(spec, "pause")!["paused"]!.GetValue<bool>());
        for (int i = 0; i < 5; i++) Assert.Equal(BlockStatus.Ok, Write(dev, i, Block(i + 1, i)));
        var all = (System.Text.Json.Nodes.JsonArray)Call()!;
        Assert.Equal(spec, Assert.Single(all)!["device"]!.GetValue<string>());
        Assert.Equal(5, all[0]!["dirty"]!.GetValue<long>());
        Assert.Equal(0, Call(spec, "writeback")!["used"]!.GetValue<long>());
        Assert.Equal(5, Call(spec)!["written_back"]!.GetValue<long>());
        Assert.False(Call(spec, "resume")!["paused"]!.GetValue<bool>());
        Assert.True(Call(spec, "cleaner", "on")!["cleaner"]!.GetValue<bool>());
        Assert.Contains("no write cache 'nope'", Assert.Throws<ControlException>(() => Call("nope")).Message);
        Assert.Contains("unknown action 'fast'", Assert.Throws<ControlException>(() => Call(spec, "fast")).Message);
    }

    /// <summary>
    /// Writers on their own blocks, a reader checking every block it reads, and write-back freeing
    /// and reusing slots all the while (a cache of ~80 slots): a read never returns another block's
    /// data nor a version older than one acknowledged before the read began.
    /// </summary>
    [Fact]
    public void ReadsRacingWithWritebackAndSlotReuseSeeOnlyCurrentData()
    {
        const int blocks = 64, writesPerWriter = 1500;
        string cacheTable = Table($"0 704 linear {Pmem()} 0");
        IBlockDevice dev = NewSet().Open(Table($"0 {blocks * 8} writecache p {Pmem()} {cacheTable} 4096 6 high_watermark 30 low_watermark 10 writeback_jobs 8"));
        var acked = new long[blocks];
        string? failure = null;
        int writersLeft = 2;
        var threads = new List<Thread>();
        for (int w = 0; w < 2; w++)
        {
            int writer = w;
            threads.Add(new Thread(() =>
            {
                using var buffers = new IoBuffers(dev.AddressSpace, 1 << 20);
                using IoBuffers.Layout layout = buffers.Single(4096);
                var rng = new Random(writer);
                for (long v = 1; v <= writesPerWriter && failure is null; v++)
                {
                    int b = rng.Next(blocks / 2) * 2 + writer; // writer 0: even blocks, 1: odd
                    layout.Write(Block(v, b));
                    if (dev.SubmitAndWait(layout.AddTo(new Bio().Init(BioOp.Write, b * 8L))) != BlockStatus.Ok) failure = "a write failed";
                    Volatile.Write(ref acked[b], v);
                }
                Interlocked.Decrement(ref writersLeft);
            }));
        }
        threads.Add(new Thread(() =>
        {
            using var buffers = new IoBuffers(dev.AddressSpace, 1 << 20);
            using IoBuffers.Layout layout = buffers.Single(4 * 4096);
            var rng = new Random(3);
            while (Volatile.Read(ref writersLeft) > 0 && failure is null)
            {
                int b = rng.Next(blocks - 3);
                long[] floor = [.. Enumerable.Range(b, 4).Select(i => Volatile.Read(ref acked[i]))];
                if (dev.SubmitAndWait(layout.AddTo(new Bio().Init(BioOp.Read, b * 8L))) != BlockStatus.Ok) { failure = "a read failed"; break; }
                byte[] data = layout.Read();
                for (int j = 0; j < 4 && failure is null; j++)
                    failure = CheckRacingBlock(data.AsSpan(j * 4096, 4096), b + j, floor[j]);
            }
        }));
        foreach (Thread t in threads) t.Start();
        foreach (Thread t in threads) t.Join();
        Assert.Null(failure);
        WriteCacheStatus st = Cache(dev).Status;
        Assert.True(st.WrittenBack > st.Entries, $"write-back should have wrapped the log: {st}");
    }
}
