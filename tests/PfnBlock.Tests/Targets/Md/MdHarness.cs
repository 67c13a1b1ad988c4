using System.Buffers.Binary;
using PfnBlock.Block;
using PfnBlock.CrashChild;
using PfnBlock.Devices;
using PfnBlock.Targets.Md;

namespace PfnBlock.Tests.Targets.Md;

/// <summary>
/// Arrays over small pmem namespaces for the md tests: members made and formatted, the array
/// opened in a device set, synchronous reads and writes through DRAM buffers, and the raw data
/// areas of members read back for comparison.
/// </summary>
public sealed class MdHarness : IDisposable
{
    static MdHarness() => DeviceTypes.RegisterAssembly(typeof(MdHarness).Assembly);

    private readonly Lock _lock = new();
    private IoBuffers? _buffers;

    public MdHarness() => Set = new DeviceSet();

    public Scratch Scratch { get; } = new();
    public DeviceSet Set { get; private set; }

    /// <summary><paramref name="count"/> fresh pmem namespaces of <paramref name="size"/> bytes, as specs.</summary>
    public string[] Members(int count, long size = 16 << 20) => [.. Enumerable.Range(0, count).Select(_ => "pmem:" + Scratch.NewNamespace(size))];

    /// <summary>Formats <paramref name="members"/> as an array (in a set of its own, closed again).</summary>
    public MdSuperblock Create(int level, string[] members, long chunk = 64 << 10, long bitmapChunk = 256 << 10)
    {
        using var set = new DeviceSet();
        return MdCreate.Create(members, new MdCreateOptions { Level = level, ChunkBytes = chunk, BitmapChunkBytes = bitmapChunk, Name = "t" }, set)[0].Superblock;
    }

    /// <summary>The md: spec of <paramref name="members"/>.</summary>
    public static string Spec(IEnumerable<string> members, string options = "") => "md:" + DeviceSpec.Quote(string.Join('+', members)) + options;

    /// <summary>Opens a device in the harness's set.</summary>
    public IBlockDevice Open(string spec) => Set.Open(spec);

    /// <summary>Closes every device of the set (stopping arrays cleanly) and starts a new set.</summary>
    public void Reopen()
    {
        _buffers?.Dispose();
        _buffers = null;
        Set.Dispose();
        Set = new DeviceSet();
    }

    private IoBuffers Buffers(IBlockDevice device) => _buffers ??= new IoBuffers(device.AddressSpace, 8L << 20);

    /// <summary>Writes <paramref name="data"/> at byte <paramref name="offset"/> and returns the status.</summary>
    public BlockStatus Write(IBlockDevice device, long offset, ReadOnlySpan<byte> data, BioFlags flags = BioFlags.None)
    {
        lock (_lock)
        {
            using IoBuffers.Layout layout = Buffers(device).Single(data.Length);
            layout.Write(data);
            return device.SubmitAndWait(layout.AddTo(new Bio().Init(BioOp.Write, offset >> Bio.SectorShift, flags)));
        }
    }

    /// <summary>
    /// Writes <paramref name="data"/> with a plain <see cref="IBlockDevice.Submit"/> and runs
    /// <paramref name="completed"/> inside the bio's completion: for tests of what happened before it.
    /// </summary>
    public void WriteObserved(IBlockDevice device, long offset, ReadOnlySpan<byte> data, Action<Bio> completed)
    {
        lock (_lock)
        {
            using IoBuffers.Layout layout = Buffers(device).Single(data.Length);
            layout.Write(data);
            using var done = new ManualResetEventSlim();
            Bio bio = layout.AddTo(new Bio().Init(BioOp.Write, offset >> Bio.SectorShift));
            bio.EndIo = b => { completed(b); done.Set(); };
            device.Submit(bio);
            Assert.True(done.Wait(TimeSpan.FromSeconds(30)), "the write never completed");
        }
    }

    /// <summary>Writes a stamp of <paramref name="length"/> bytes at <paramref name="offset"/> through <paramref name="device"/> and into <paramref name="model"/>.</summary>
    public void WriteToModel(IBlockDevice device, byte[] model, int offset, int length, int seed)
    {
        byte[] data = Stamp.Make(offset, length, seed);
        Assert.Equal(BlockStatus.Ok, Write(device, offset, data));
        data.CopyTo(model, offset);
    }

    /// <summary>Reads <paramref name="length"/> bytes at <paramref name="offset"/> and compares them with <paramref name="model"/> (the array's log in the message).</summary>
    public void AssertModel(IBlockDevice device, byte[] model, int offset, int length, MdArray array) =>
        Assert.True(model.AsSpan(offset, length).SequenceEqual(Read(device, offset, length)),
            $"read of {length} bytes at {offset} differs from the model: {string.Join(" | ", array.Log)}");

    /// <summary>Reads <paramref name="length"/> bytes at byte <paramref name="offset"/>; throws on a failed read.</summary>
    public byte[] Read(IBlockDevice device, long offset, int length)
    {
        byte[] data = TryRead(device, offset, length, out BlockStatus status);
        Assert.True(status == BlockStatus.Ok, $"read of {length} bytes at {offset} failed: {status}");
        return data;
    }

    /// <summary>Reads <paramref name="length"/> bytes at byte <paramref name="offset"/>.</summary>
    public byte[] TryRead(IBlockDevice device, long offset, int length, out BlockStatus status)
    {
        lock (_lock)
        {
            using IoBuffers.Layout layout = Buffers(device).Single(length);
            layout.Fill(0xA5);
            status = device.SubmitAndWait(layout.AddTo(new Bio().Init(BioOp.Read, offset >> Bio.SectorShift)));
            return layout.Read();
        }
    }

    /// <summary>
    /// Every acknowledged write of a crash child (<c>write-spec</c>, versions stamped per block) is
    /// on <paramref name="md"/>: each of the first <paramref name="blocks"/> blocks holds its last
    /// acknowledged version, or the one that was in flight when the child was killed.
    /// </summary>
    public void AssertAcknowledged(IBlockDevice md, List<(long Version, int Block)> acks, int blocks, int seed)
    {
        var last = new Dictionary<int, long>();
        foreach ((long v, int b) in acks) last[b] = v;
        long inFlight = acks[^1].Version + 1;
        int inFlightBlock = CrashProtocol.BlockFor(seed, inFlight, blocks);
        byte[] data = Read(md, 0, blocks * CrashProtocol.BlockSize);
        foreach ((int b, long v) in last)
        {
            long found = (long)(BinaryPrimitives.ReadUInt64LittleEndian(data.AsSpan(b * CrashProtocol.BlockSize)) >> 32);
            Assert.True(found == v || (b == inFlightBlock && found == inFlight), $"block {b} holds version {found}, acknowledged {v}");
        }
    }

    /// <summary>Four fresh members formatted as a RAID5 with a journal (a fresh namespace of <paramref name="journalBytes"/>, or <paramref name="journal"/>).</summary>
    public (string[] Members, string Journal, MdSuperblock Sb) NewJournalledRaid5(long chunk, long journalBytes, Raid5JournalMode mode, string name, string? journal = null)
    {
        string[] m = Members(4);
        string j = journal ?? "pmem:" + Scratch.NewNamespace(journalBytes);
        using var set = new DeviceSet();
        MdSuperblock sb = MdCreate.Create(m, new MdCreateOptions { Level = 5, ChunkBytes = chunk, BitmapChunkBytes = 256 << 10, Name = name, Journal = j, JournalMode = mode }, set)[0].Superblock;
        return (m, j, sb);
    }

    /// <summary>The md: spec of <paramref name="members"/> with <paramref name="journal"/> as their journal.</summary>
    public static string JournalSpec(IEnumerable<string> members, string journal, string options = "") =>
        Spec(members, ",journal=" + DeviceSpec.Quote(journal) + options);

    /// <summary>The records a scan of <paramref name="journal"/> finds (what assembly would replay).</summary>
    internal List<Raid5Journal.Record> JournalRecords(string journal)
    {
        IBlockDevice dev = Open(journal);
        using var io = new MdMetadataIo(dev.AddressSpace);
        return Raid5Journal.Scan(dev, Raid5Journal.ReadSuperblock(dev, io), io).Records;
    }

    /// <summary>
    /// Per-stripe log order in <paramref name="journal"/>'s log: each stripe's parity records cover
    /// its data records in order (each covers more than the one before it).
    /// </summary>
    internal void AssertParityRecordsInLogOrder(string journal)
    {
        foreach (IGrouping<long, Raid5Journal.Record> stripe in JournalRecords(journal).Where(r => r.Kind == Raid5JournalRecordKind.Parity).GroupBy(r => r.MemberSector))
        {
            long covered = 0;
            foreach (Raid5Journal.Record p in stripe)
            {
                Assert.True(p.Seq - p.WritesOut > covered, $"stripe at {stripe.Key}: parity record {p.Seq} covers up to {p.Seq - p.WritesOut}, not past {covered}");
                covered = p.Seq - p.WritesOut;
            }
        }
    }

    /// <summary>Makes the members' superblocks say "active" (an unclean stop) without touching anything else.</summary>
    public void MarkDirty(string[] members)
    {
        foreach (string s in members)
        {
            IBlockDevice dev = Open(s);
            byte[] block = Read(dev, MdSuperblock.SuperOffsetSectors * 512, MdSuperblock.BlockBytes);
            MdSuperblock sb = MdSuperblock.Decode(block, dev.CapacitySectors, out string? error) ?? throw new InvalidDataException(error);
            sb.ResyncOffset = 0;
            sb.Encode(block);
            Assert.Equal(BlockStatus.Ok, Write(dev, MdSuperblock.SuperOffsetSectors * 512, block));
        }
    }

    /// <summary>The data area of member <paramref name="spec"/> as the array uses it (from its data offset, <paramref name="sectors"/> long).</summary>
    public byte[] MemberData(string spec, long dataOffsetSectors, long sectors)
    {
        IBlockDevice dev = Set.Open(spec);
        var all = new byte[sectors << Bio.SectorShift];
        for (long done = 0; done < all.Length; done += 1 << 20)
        {
            int n = (int)Math.Min(1 << 20, all.Length - done);
            Read(dev, (dataOffsetSectors << Bio.SectorShift) + done, n).CopyTo(all, done);
        }
        return all;
    }

    /// <summary>Runs <paramref name="body"/> on <paramref name="threads"/> dedicated threads and rethrows the first failure.</summary>
    public static void OnThreads(int threads, Action<int> body)
    {
        Exception? failure = null;
        Thread[] ts = [.. Enumerable.Range(0, threads).Select(t => new Thread(() =>
        {
            try { body(t); }
            catch (Exception e) { Interlocked.CompareExchange(ref failure, e, null); }
        }) { IsBackground = true })];
        foreach (Thread t in ts) t.Start();
        foreach (Thread t in ts) Assert.True(t.Join(TimeSpan.FromSeconds(120)), "a worker thread hung");
        if (failure is not null) throw new AggregateException(failure);
    }

    public void Dispose()
    {
        _buffers?.Dispose();
        Set.Dispose();
        Scratch.Dispose();
    }
}
