using System.Buffers.Binary;
using PfnBlock.Block;
using PfnBlock.Devices;
using PfnBlock.Exports.Nbd;
using PfnBlock.Management;
using PfnBlock.Management.Control;
using PfnBlock.Targets.WriteCache;
using PfnBlock.Tests.Block;

namespace PfnBlock.Tests.Targets;

/// <summary>
/// Read caching of origin data in the write cache (<c>read_cache PCT</c>): misses become clean
/// copies and later reads hit them; writes, discards, the log reaching a copy's slot, and cleaner
/// mode's pass-through all win over a copy; a read that raced a write of its block never publishes
/// the older data (deterministically, and on dedicated threads through a slow origin).
/// </summary>
public sealed class WriteCacheReadCacheTests : IDisposable
{
    private readonly Scratch _scratch = new();
    private readonly DeviceSet _set = new();
    private IoBuffers? _buffers;

    static WriteCacheReadCacheTests() => DeviceTypes.RegisterAssembly(typeof(WriteCacheReadCacheTests).Assembly);

    public void Dispose()
    {
        _buffers?.Dispose();
        _set.Dispose();
        _scratch.Dispose();
    }

    private string Table(string line)
    {
        string path = _scratch.NewPath("t.table");
        File.WriteAllText(path, line + "\n");
        return "table:" + path;
    }

    private string Pmem(long size = 1 << 20) => "pmem:" + _scratch.NewNamespace(size);

    /// <summary>A cache of ~80 slots (352 KiB through a linear table): the log wraps after a few dozen writes.</summary>
    private string SmallCache() => Table($"0 704 linear {Pmem()} 0");

    private static WriteCacheTarget Cache(IBlockDevice dev) => (WriteCacheTarget)((MappedDevice)dev).Table[0].Target;

    private IoBuffers Buffers(IBlockDevice dev) => _buffers ??= new IoBuffers(dev.AddressSpace, 4 << 20);

    private BlockStatus Write(IBlockDevice dev, int block, byte[] data)
    {
        using IoBuffers.Layout layout = Buffers(dev).Single(data.Length);
        layout.Write(data);
        return TargetSeamProperties.RunOnce(dev, layout.AddTo(new Bio().Init(BioOp.Write, block * 8L)));
    }

    private byte[] Read(IBlockDevice dev, int block, int blocks = 1)
    {
        using IoBuffers.Layout layout = Buffers(dev).Single(blocks * 4096);
        Assert.Equal(BlockStatus.Ok, TargetSeamProperties.RunOnce(dev, layout.AddTo(new Bio().Init(BioOp.Read, block * 8L))));
        return layout.Read();
    }

    private static byte[] Block(long version, int block, int blocks = 1)
    {
        byte[] b = new byte[4096 * blocks];
        for (int i = 0; i < b.Length; i += 16)
        {
            BinaryPrimitives.WriteInt64LittleEndian(b.AsSpan(i), version);
            BinaryPrimitives.WriteInt64LittleEndian(b.AsSpan(i + 8), block + i / 4096);
        }
        return b;
    }

    /// <summary>Blocks <paramref name="first"/>.. of the origin written directly (not through the cache) with version <paramref name="version"/>.</summary>
    private void FillOrigin(string origin, int first, int blocks, long version) =>
        Assert.Equal(BlockStatus.Ok, Write(_set.Open(origin), first, Block(version, first, blocks)));

    /// <summary>An origin whose blocks <paramref name="first"/>.. hold <paramref name="version"/>, behind a writecache with <c>read_cache 50</c>.</summary>
    private (string Origin, string Spec, IBlockDevice Dev, WriteCacheTarget Cache) CachedOrigin(int first, int blocks, long version)
    {
        string origin = Pmem();
        FillOrigin(origin, first, blocks, version);
        string spec = Table($"0 1024 writecache p {origin} {Pmem()} 4096 2 read_cache 50");
        IBlockDevice dev = _set.Open(spec);
        return (origin, spec, dev, Cache(dev));
    }

    [Fact]
    public void TheOptionIsParsedPrintedBackAndRefusedOutOfRange()
    {
        string origin = Pmem();
        var e = Assert.ThrowsAny<Exception>(() => new DeviceSet().Open(Table($"0 1024 writecache p {origin} {Pmem()} 4096 2 read_cache 101")));
        Assert.Contains("Invalid read_cache: '101'", e.Message);
        IBlockDevice dev = _set.Open(Table($"0 1024 writecache p {origin} {Pmem()} 4096 2 read_cache 40"));
        WriteCacheTarget wc = Cache(dev);
        Assert.Equal(40, wc.Options.ReadCachePercent);
        Assert.EndsWith("4096 2 read_cache 40", wc.Arguments);
        Assert.Equal(40, wc.Status.ReadCache?.Percent);
        // Off by default: no read cache at all, and the status says so.
        Assert.Null(Cache(_set.Open(Table($"0 1024 writecache p {Pmem()} {Pmem()} 4096 0"))).Status.ReadCache);
    }

    /// <summary>A miss is read from the origin and kept; the second read of the same blocks hits the copies; status and the control socket count both.</summary>
    [Fact]
    public void AMissIsKeptAndTheSecondReadHitsTheCopy()
    {
        (string origin, string spec, IBlockDevice dev, WriteCacheTarget wc) = CachedOrigin(0, 16, version: 7);
        Assert.Equal(Block(7, 0, 16), Read(dev, 0, 16));
        WriteCacheReadCacheStatus rc = wc.Status.ReadCache!.Value;
        Assert.Equal((16L, 16L, 0L), (rc.Inserts, rc.CleanBlocks, rc.Hits));

        // The origin changes behind the cache's back (only a test does that): a hit returns the copy.
        FillOrigin(origin, 0, 16, version: 8);
        Assert.Equal(Block(7, 4, 4), Read(dev, 4, 4));
        WriteCacheStatus st = wc.Status;
        Assert.Equal((4L, 4L), (st.ReadCache!.Value.Hits, st.ReadHits));
        Assert.Equal(0, st.Used); // clean copies take no log entry
        Assert.Contains("read cache 50%: 16 clean, hits 4", st.ToString());

        var exports = new NbdExportRegistry();
        exports.Add(new NbdExport("wc", dev));
        ControlCommandRegistry commands = ControlCommandRegistry.CreateDefault();
        System.Text.Json.Nodes.JsonNode json = commands.Find("writecache")!.Run(new ControlRequest([spec], new ServerContext(_set, exports), commands))!;
        Assert.Equal(16, json["read_cache"]!["clean_blocks"]!.GetValue<long>());
        Assert.Equal(4, json["read_cache"]!["hits"]!.GetValue<long>());
        Assert.Equal(16, json["read_cache"]!["misses"]!.GetValue<long>());
    }

    /// <summary>A write drops the copy at once (even after the write is written back and leaves the index), and so does a discard.</summary>
    [Fact]
    public void WritesAndDiscardsDropTheCopiesOfTheirBlocks()
    {
        (_, _, IBlockDevice dev, WriteCacheTarget wc) = CachedOrigin(0, 8, version: 1);
        Read(dev, 0, 8);
        Assert.Equal(8, wc.Status.ReadCache!.Value.CleanBlocks);
        Assert.Equal(BlockStatus.Ok, Write(dev, 3, Block(2, 3)));
        Bio discard = new Bio().Init(BioOp.Discard, 5 * 8L);
        discard.Iter.Size = 2 * 4096;
        Assert.Equal(BlockStatus.Ok, TargetSeamProperties.RunOnce(dev, discard));
        Assert.Equal((5L, 3L), (wc.Status.ReadCache!.Value.CleanBlocks, wc.Status.ReadCache!.Value.Dropped));
        Assert.True(wc.WriteBackAll(TimeSpan.FromSeconds(30)));
        Assert.Equal(0, wc.Status.Dirty);
        byte[] expected = Block(1, 0, 8);
        Block(2, 3).CopyTo(expected, 3 * 4096);
        Array.Clear(expected, 5 * 4096, 2 * 4096);
        Assert.Equal(expected, Read(dev, 0, 8));
    }

    /// <summary>
    /// The deterministic form of the race: a read looked block 9 up (a miss), a write of block 9
    /// landed, and only then did the read's origin data come back. Its insert is refused, even after
    /// write-back took the write out of the index; an insert after a fresh lookup is published.
    /// </summary>
    [Fact]
    public void AReadThatRacedAWriteNeverPublishesTheOlderData()
    {
        (_, _, IBlockDevice dev, WriteCacheTarget wc) = CachedOrigin(9, 1, version: 1);
        WriteCacheLog log = wc.Log;
        Span<long> seqs = stackalloc long[1];
        log.Lookup(9, seqs, out long before);
        Assert.Equal(0, seqs[0]);
        Assert.Equal(BlockStatus.Ok, Write(dev, 9, Block(2, 9)));
        Assert.True(wc.WriteBackAll(TimeSpan.FromSeconds(30)));
        Assert.Equal(0, wc.Status.Dirty);
        var stale = new BytesSource(Block(1, 9));
        Assert.Equal(0, log.InsertClean(9, 1, before, ref stale));
        Assert.Equal(1, wc.Status.ReadCache!.Value.Refused);
        Assert.Equal(Block(2, 9), Read(dev, 9)); // a miss again: the origin's current data

        log.Lookup(9, seqs, out long after);
        var current = new BytesSource(Block(2, 9));
        Assert.Equal(1, log.InsertClean(9, 1, after, ref current));
        Assert.Equal(Block(2, 9), Read(dev, 9));
        Assert.Equal(1, wc.Status.ReadCache!.Value.Hits);
    }

    /// <summary>
    /// The log wraps over the read cache's window again and again: each slot the head reaches loses
    /// its copy first (counted as an eviction), and every read still returns the newest data.
    /// </summary>
    [Fact]
    public void TheLogEvictsCopiesFromTheSlotsItNeeds()
    {
        const int blocks = 48;
        string origin = Pmem();
        FillOrigin(origin, 0, blocks, version: 1);
        IBlockDevice dev = _set.Open(Table($"0 {blocks * 8} writecache p {origin} {SmallCache()} 4096 6 read_cache 60 high_watermark 20 low_watermark 0"));
        WriteCacheTarget wc = Cache(dev);
        long[] versions = [.. Enumerable.Repeat(1L, blocks)];
        var rng = new Random(5);
        for (int round = 0; round < 300; round++)
        {
            int b = rng.Next(blocks);
            if (round % 3 == 0)
            {
                Assert.Equal(BlockStatus.Ok, Write(dev, b, Block(round + 2, b)));
                versions[b] = round + 2;
                if (round % 30 == 0) Assert.True(wc.WriteBackAll(TimeSpan.FromSeconds(30)));
            }
            int first = rng.Next(blocks - 4);
            byte[] got = Read(dev, first, 4);
            for (int j = 0; j < 4; j++)
                Assert.Equal(Block(versions[first + j], first + j), got.AsSpan(j * 4096, 4096).ToArray());
        }
        WriteCacheReadCacheStatus rc = wc.Status.ReadCache!.Value;
        Assert.True(rc.Hits > 0 && rc.Evictions > 0, rc.ToString());
        Assert.True(rc.CleanBlocks <= wc.Log.Entries * 60 / 100, $"more copies than the window holds: {rc}");
    }

    /// <summary>
    /// Cleaner mode drops every copy when the log is sealed and keeps none while writes pass
    /// through; switched off again, copies are made again, and a passed-through write drops them.
    /// </summary>
    [Fact]
    public void CleanerModeDropsTheCopiesAndPassThroughWritesWinOverThem()
    {
        (_, _, IBlockDevice dev, WriteCacheTarget wc) = CachedOrigin(0, 8, version: 1);
        Read(dev, 0, 8);
        Assert.Equal(8, wc.Status.ReadCache!.Value.CleanBlocks);
        wc.SetCleaner(true);
        Assert.True(SpinWait.SpinUntil(() => wc.Status.PassThrough, TimeSpan.FromSeconds(30)));
        Assert.Equal(0, wc.Status.ReadCache!.Value.CleanBlocks);
        Assert.Equal(BlockStatus.Ok, Write(dev, 2, Block(2, 2)));
        Read(dev, 0, 8);
        Assert.Equal(0, wc.Status.ReadCache!.Value.CleanBlocks); // no inserts while sealed
        Assert.Equal(Block(2, 2), Read(dev, 2));

        wc.SetCleaner(false);
        Read(dev, 0, 8);
        Assert.Equal(8, wc.Status.ReadCache!.Value.CleanBlocks);
        // A write that went through while sealed and completes now must drop the copy: the hook does.
        wc.Log.DropClean(2, 1);
        Assert.Equal(7, wc.Status.ReadCache!.Value.CleanBlocks);
    }

    /// <summary>
    /// The race on dedicated threads: a writer rewrites a few blocks (write-back retiring its
    /// entries all the while), a reader reads them through the cache (its misses insert copies), and
    /// a slow filler plays a read completion that takes its time: lookup, read the origin, wait a
    /// while, insert. A read never returns a version older than one acknowledged before it began;
    /// copies are published, and some inserts are refused because a write raced them.
    /// </summary>
    [Fact]
    public void ReadMissInsertsRacingWritesOfTheSameBlocksNeverServeOlderData()
    {
        const int blocks = 8;
        string origin = Pmem();
        IBlockDevice dev = _set.Open(Table($"0 {blocks * 8} writecache p {origin} {SmallCache()} 4096 6 read_cache 50 high_watermark 5 low_watermark 0"));
        IBlockDevice originDev = _set.Open(origin);
        WriteCacheTarget wc = Cache(dev);
        var acked = new long[blocks];
        string? failure = null;
        bool writing = true;
        int fills = 0;
        var writer = new Thread(() =>
        {
            using var buffers = new IoBuffers(dev.AddressSpace, 1 << 20);
            using IoBuffers.Layout layout = buffers.Single(4096);
            var rng = new Random(1);
            // At least 4 000 writes, and on until the filler has raced them 300 times (a loaded machine may starve it).
            for (long v = 1; (v <= 4000 || Volatile.Read(ref fills) < 300) && v <= 200_000 && failure is null; v++)
            {
                int b = rng.Next(blocks);
                layout.Write(Block(v, b));
                if (dev.SubmitAndWait(layout.AddTo(new Bio().Init(BioOp.Write, b * 8L))) != BlockStatus.Ok) failure = "a write failed";
                Volatile.Write(ref acked[b], v);
                Thread.SpinWait(rng.Next(2000));
            }
            Volatile.Write(ref writing, false);
        });
        var reader = new Thread(() =>
        {
            using var buffers = new IoBuffers(dev.AddressSpace, 1 << 20);
            using IoBuffers.Layout layout = buffers.Single(2 * 4096);
            var rng = new Random(2);
            while (Volatile.Read(ref writing) && failure is null)
            {
                int b = rng.Next(blocks - 1);
                long[] floor = [Volatile.Read(ref acked[b]), Volatile.Read(ref acked[b + 1])];
                if (dev.SubmitAndWait(layout.AddTo(new Bio().Init(BioOp.Read, b * 8L))) != BlockStatus.Ok) { failure = "a read failed"; break; }
                byte[] data = layout.Read();
                for (int j = 0; j < 2 && failure is null; j++)
                {
                    long v = BinaryPrimitives.ReadInt64LittleEndian(data.AsSpan(j * 4096));
                    long owner = BinaryPrimitives.ReadInt64LittleEndian(data.AsSpan(j * 4096 + 8));
                    if ((v != 0 || floor[j] != 0) && (owner != b + j || v < floor[j]))
                        failure = $"block {b + j} read version {v} of block {owner}; version {floor[j]} was acknowledged before the read";
                }
            }
        });
        var filler = new Thread(() =>
        {
            using var buffers = new IoBuffers(dev.AddressSpace, 1 << 20);
            using IoBuffers.Layout layout = buffers.Single(4096);
            var rng = new Random(3);
            Span<long> seqs = stackalloc long[1];
            while (Volatile.Read(ref writing) && failure is null)
            {
                int b = rng.Next(blocks);
                wc.Log.Lookup(b, seqs, out long generation);
                if (seqs[0] != 0) continue;
                if (originDev.SubmitAndWait(layout.AddTo(new Bio().Init(BioOp.Read, b * 8L))) != BlockStatus.Ok) { failure = "an origin read failed"; break; }
                var source = new BytesSource(layout.Read());
                Thread.SpinWait(rng.Next(20000)); // the completion is slow: writes and write-back overtake it
                wc.Log.InsertClean(b, 1, generation, ref source);
                Interlocked.Increment(ref fills);
            }
        });
        Thread[] threads = [writer, reader, filler];
        foreach (Thread t in threads) t.Start();
        foreach (Thread t in threads) t.Join();
        Assert.Null(failure);
        WriteCacheStatus st = wc.Status;
        Assert.True(st.ReadCache!.Value.Inserts > 0 && st.ReadCache.Value.Hits > 0 && st.ReadCache.Value.Refused > 0 && st.WrittenBack > 0, st.ToString());
    }

    /// <summary>A test's data for <see cref="WriteCacheLog.InsertClean"/>: block i of the array, copied plainly.</summary>
    private unsafe struct BytesSource(byte[] data) : IWriteCacheSource
    {
        public readonly void CopyBlock(int index, byte* slot) => data.AsSpan(index * 4096, 4096).CopyTo(new Span<byte>(slot, 4096));
    }
}
