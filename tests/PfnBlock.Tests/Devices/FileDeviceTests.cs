using System.Runtime.InteropServices;
using PfnBlock.Block;
using PfnBlock.Devices;
using PfnBlock.Devices.DirectFile;
using PfnBlock.Memory;
using Xunit.Abstractions;

namespace PfnBlock.Tests.Devices.DirectFile;

/// <summary>A sparse test file under /var/tmp (ext4) or /dev/shm (tmpfs), deleted on dispose.</summary>
internal sealed class TestFile : IDisposable
{
    public const string Ext4Dir = "/var/tmp";
    public const string TmpfsDir = "/dev/shm";

    private TestFile(string path) => Path = path;

    public string Path { get; }

    public static TestFile Create(string dir, long size)
    {
        string path = System.IO.Path.Combine(dir, $"pfnblock-filedev-{Guid.NewGuid():N}.img");
        using (var fs = new FileStream(path, FileMode.CreateNew, FileAccess.ReadWrite)) fs.SetLength(size);
        return new TestFile(path);
    }

    public void Dispose()
    {
        try { File.Delete(Path); } catch (IOException) { }
    }
}

/// <summary>Offset-stamped data: every 8-byte word holds a function of its file offset and a seed.</summary>
internal static class Stamp
{
    public static ulong Word(long fileOffset, ulong seed) => ((ulong)fileOffset * 0x9E3779B97F4A7C15UL) ^ seed;

    public static void Fill(Span<byte> buf, long fileOffset, ulong seed)
    {
        Span<ulong> w = MemoryMarshal.Cast<byte, ulong>(buf);
        for (int i = 0; i < w.Length; i++) w[i] = Word(fileOffset + i * 8L, seed);
    }

    public static bool Check(ReadOnlySpan<byte> buf, long fileOffset, ulong seed)
    {
        ReadOnlySpan<ulong> w = MemoryMarshal.Cast<byte, ulong>(buf);
        for (int i = 0; i < w.Length; i++)
            if (w[i] != Word(fileOffset + i * 8L, seed)) return false;
        return true;
    }

    /// <summary>Fills (or checks) every vector of <paramref name="bio"/> as the bytes from <paramref name="fileOffset"/> on; true when all checked out.</summary>
    public static bool Vectors(PhysicalAddressSpace space, Bio bio, long fileOffset, ulong seed, bool fill)
    {
        bool ok = true;
        foreach (BioVec v in bio.Vecs)
        {
            Span<byte> mem = space.KmapSpan(v.Pfn, v.Offset, (int)v.Length);
            if (fill) Fill(mem, fileOffset, seed);
            else ok &= Check(mem, fileOffset, seed);
            fileOffset += v.Length;
        }
        return ok;
    }
}

/// <summary>
/// Drives a device at a fixed queue depth with a closed loop: each lane owns one bio and a buffer,
/// and its completion callback (running on the device's completion context) verifies the data
/// and submits the lane's next chunk. Allocates nothing per I/O.
/// </summary>
internal sealed class ClosedLoop
{
    public const int ChunkBytes = 64 << 10;
    private const int FramesPerChunk = ChunkBytes / Pfn.PageSize;

    private readonly IBlockDevice _dev;
    private readonly PhysicalAddressSpace _space;
    private readonly Lane[] _lanes;
    private readonly Action<Bio> _endIo;
    private readonly int _chunks;
    private readonly bool _wrap;
    private BioOp _op;
    private ulong _seed;
    private long _target;
    private CountdownEvent? _done;

    public int Errors;
    public int Mismatches;
    public int ForeignThreadCompletions;
    public long Completions;
    public long MeasureFrom = -1;
    public long MeasureTo = -1;
    public long AllocatedAtFrom;
    public long AllocatedAtTo;
    public string? CompletionThreadPrefix;
    /// <summary>Bytes allocated on completion threads between consecutive completions on the same thread (window MeasureFrom..MeasureTo).</summary>
    public long AllocatedBetweenCompletions;
    public long MeasuredCompletions;

    [ThreadStatic] private static long t_lastAllocated;
    [ThreadStatic] private static ClosedLoop? t_lastLoop;
    [ThreadStatic] private static int t_lastRun;
    private int _run;

    private sealed class Lane(Bio bio, FrameRun buf, bool scattered)
    {
        public readonly Bio Bio = bio;
        public readonly FrameRun Buf = buf;
        public readonly bool Scattered = scattered;
        public long Chunk;
    }

    public ClosedLoop(IBlockDevice dev, DramArena arena, int depth, bool wrap = false)
    {
        _dev = dev;
        _space = arena.AddressSpace!;
        _chunks = (int)(dev.CapacityBytes / ChunkBytes);
        _wrap = wrap;
        _endIo = OnComplete;
        _lanes = new Lane[depth];
        for (int i = 0; i < depth; i++)
            // Odd lanes scatter 16 one-page vectors over every other frame (16 iovecs); even lanes
            // use two 8-page vectors (multi-page bvecs, merged into one iovec when adjacent).
            _lanes[i] = new Lane(new Bio(), arena.Allocator.Allocate(2 * FramesPerChunk), scattered: (i & 1) == 1);
    }

    /// <summary>Runs <paramref name="ios"/> I/Os of <paramref name="op"/> (chunk after chunk, wrapping if asked) and waits.</summary>
    public void Run(BioOp op, ulong seed, long ios)
    {
        _op = op;
        _seed = seed;
        _target = ios;
        _run++;
        Completions = 0;
        int lanes = (int)Math.Min(_lanes.Length, ios);
        _done = new CountdownEvent(lanes);
        for (int i = 0; i < lanes; i++)
        {
            _lanes[i].Chunk = i;
            Start(_lanes[i]);
        }
        Assert.True(_done.Wait(TimeSpan.FromMinutes(2)), "closed loop did not finish");
    }

    private void Start(Lane lane)
    {
        long chunk = lane.Chunk % _chunks;
        Bio bio = lane.Bio.Init(_op, chunk * ChunkBytes >> Bio.SectorShift);
        if (lane.Scattered)
            for (int k = 0; k < FramesPerChunk; k++) bio.AddVec(lane.Buf.First.Add((ulong)(2 * k)), 0, Pfn.PageSize);
        else
        {
            bio.AddVec(lane.Buf.First, 0, ChunkBytes / 2);
            bio.AddVec(lane.Buf.First.Add(FramesPerChunk / 2), 0, ChunkBytes / 2);
        }
        bio.Private = lane;
        bio.EndIo = _endIo;
        if (_op == BioOp.Write) ForEachVector(bio, chunk, stamp: true);
        _dev.Submit(bio);
    }

    private bool ForEachVector(Bio bio, long chunk, bool stamp) => Stamp.Vectors(_space, bio, chunk * ChunkBytes, _seed, stamp);

    private void OnComplete(Bio bio)
    {
        long n = Interlocked.Increment(ref Completions);
        if (n == MeasureFrom) AllocatedAtFrom = GC.GetAllocatedBytesForCurrentThread();
        if (n == MeasureTo) AllocatedAtTo = GC.GetAllocatedBytesForCurrentThread();
        if (n > MeasureFrom && n <= MeasureTo)
        {
            // Touch the thread statics before reading the counter: their first use on a thread allocates.
            bool sameRun = t_lastLoop == this && t_lastRun == _run;
            long last = t_lastAllocated;
            long now = GC.GetAllocatedBytesForCurrentThread();
            if (sameRun)
            {
                Interlocked.Add(ref AllocatedBetweenCompletions, now - last);
                Interlocked.Increment(ref MeasuredCompletions);
            }
            t_lastLoop = this;
            t_lastRun = _run;
            t_lastAllocated = now;
        }
        if (CompletionThreadPrefix is not null && Thread.CurrentThread.Name?.StartsWith(CompletionThreadPrefix, StringComparison.Ordinal) != true)
            Interlocked.Increment(ref ForeignThreadCompletions);
        var lane = (Lane)bio.Private!;
        if (bio.Status != BlockStatus.Ok) Interlocked.Increment(ref Errors);
        else if (_op == BioOp.Read && !ForEachVector(bio, lane.Chunk % _chunks, stamp: false)) Interlocked.Increment(ref Mismatches);
        long next = lane.Chunk + _lanes.Length;
        if (next < _target && (_wrap || next < _chunks))
        {
            lane.Chunk = next;
            Start(lane);
        }
        else _done!.Signal();
    }
}

public sealed unsafe class FileDeviceTests(ITestOutputHelper output)
{
    private const long FileSize = 32 << 20;

    public static TheoryData<string, FileEngineKind> DirsAndEngines => new()
    {
        { TestFile.Ext4Dir, FileEngineKind.IoUring },
        { TestFile.TmpfsDir, FileEngineKind.IoUring },
        { TestFile.Ext4Dir, FileEngineKind.ThreadPool },
        { TestFile.TmpfsDir, FileEngineKind.ThreadPool },
    };

    private FileDevice Open(TestFile f, FileEngineKind engine = FileEngineKind.IoUring, int depth = 32, bool buffered = false, PhysicalAddressSpace? space = null)
    {
        FileDevice dev = FileDevice.Open(f.Path, new FileDeviceOptions { Engine = engine, QueueDepth = depth, Buffered = buffered }, space);
        output.WriteLine($"{f.Path}: {dev.EngineDescription}; capacity {dev.CapacityBytes}, limits {dev.Limits}");
        return dev;
    }

    private static Bio NoDataBio(BioOp op, long byteOffset, int bytes, BioFlags flags = BioFlags.None)
    {
        var bio = new Bio().Init(op, byteOffset >> Bio.SectorShift, flags);
        bio.Iter.Size = (uint)bytes;
        return bio;
    }

    private static Bio DataBio(BioOp op, long byteOffset, FrameRun buf, int bytes, BioFlags flags = BioFlags.None) =>
        new Bio().Init(op, byteOffset >> Bio.SectorShift, flags).AddVec(buf.First, 0, (uint)bytes);

    [Theory]
    [MemberData(nameof(DirsAndEngines))]
    public void FileDevice_ReadAfterWrite_QueueDepth32_ManyBiosInFlight(string dir, FileEngineKind engine)
    {
        using var file = TestFile.Create(dir, FileSize);
        using var arena = DramArena.Create(16 << 20);
        using FileDevice dev = Open(file, engine, depth: 32);
        Assert.Equal(engine, dev.Engine);
        Assert.True(dev.IsDirect);
        Assert.Equal(512, dev.Limits.DmaAlignment);

        var loop = new ClosedLoop(dev, arena, depth: 32)
        {
            CompletionThreadPrefix = engine == FileEngineKind.IoUring ? "iou-ring" : null,
        };
        int chunks = (int)(FileSize / ClosedLoop.ChunkBytes);
        loop.Run(BioOp.Write, seed: 0xfeed, ios: chunks);
        Assert.Equal(0, loop.Errors);
        loop.Run(BioOp.Read, seed: 0xfeed, ios: chunks);
        Assert.Equal(0, loop.Errors);
        Assert.Equal(0, loop.Mismatches);
        Assert.Equal(0, loop.ForeignThreadCompletions);
        Assert.Equal(0, dev.EngineForTests.CallbackFaults);
        DiskStatsSnapshot stats = dev.Stats.Snapshot();
        Assert.Equal(chunks, stats.Read.Ios);
        Assert.Equal(chunks, stats.Write.Ios);
        Assert.Equal(0, stats.InFlight);
    }

    [Theory]
    [InlineData(FileEngineKind.IoUring)]
    [InlineData(FileEngineKind.ThreadPool)]
    public void FileDevice_ConcurrentSubmitters_WithBackPressure_RoundTrip(FileEngineKind engine)
    {
        using var file = TestFile.Create(TestFile.Ext4Dir, 8 << 20);
        using var arena = DramArena.Create(8 << 20);
        // Queue depth 2 with 4 submitters: submitters block for slots.
        using FileDevice dev = Open(file, engine, depth: 2);
        const int threads = 4, perThread = 64, bytes = 16 << 10;
        var errors = 0;
        var workers = Enumerable.Range(0, threads).Select(t => new Thread(() =>
        {
            FrameRun buf = arena.Allocator.Allocate(bytes / Pfn.PageSize);
            Span<byte> mem = arena.AddressSpace!.KmapSpan(buf.First, 0, bytes);
            for (int i = 0; i < perThread; i++)
            {
                long off = ((long)i * threads + t) * bytes;
                Stamp.Fill(mem, off, 7);
                if (dev.SubmitAndWait(DataBio(BioOp.Write, off, buf, bytes)) != BlockStatus.Ok) Interlocked.Increment(ref errors);
                mem.Clear();
                if (dev.SubmitAndWait(DataBio(BioOp.Read, off, buf, bytes)) != BlockStatus.Ok || !Stamp.Check(mem, off, 7))
                    Interlocked.Increment(ref errors);
            }
        })).ToArray();
        foreach (Thread w in workers) w.Start();
        foreach (Thread w in workers) w.Join();
        Assert.Equal(0, errors);
    }

    [Fact]
    public void FileDevice_MisalignedVector_RejectedInvalid_NeverReachesKernel()
    {
        using var file = TestFile.Create(TestFile.Ext4Dir, 1 << 20);
        using var arena = DramArena.Create(1 << 20);
        using FileDevice dev = Open(file);
        FrameRun buf = arena.Allocator.Allocate(2);
        long before = dev.EngineForTests.Accepted;

        // Memory offset not 512-aligned.
        var bio = new Bio().Init(BioOp.Read, 0).AddVec(buf.First, 100, 512);
        Assert.Equal(BlockStatus.Invalid, dev.SubmitAndWait(bio));
        // Vector length not 512-aligned though the bio's total is.
        bio.Init(BioOp.Write, 0).AddVec(buf.First, 0, 1000).AddVec(buf.First.Add(1), 0, 24);
        Assert.Equal(BlockStatus.Invalid, dev.SubmitAndWait(bio));
        // A pfn nobody registered: refused by kmap, before any system call.
        bio.Init(BioOp.Read, 0).AddVec(new Pfn(1), 0, 4096);
        Assert.Equal(BlockStatus.Invalid, dev.SubmitAndWait(bio));
        Assert.Equal(before + 1, dev.EngineForTests.Accepted); // only the last one took a slot
        Assert.Equal(0, dev.EngineForTests.InFlightCount);
    }

    [Fact]
    public void FileDevice_OutOfRange_Rejected()
    {
        using var file = TestFile.Create(TestFile.Ext4Dir, 1 << 20);
        using var arena = DramArena.Create(1 << 20);
        using FileDevice dev = Open(file);
        FrameRun buf = arena.Allocator.Allocate(2);
        Assert.Equal(1L << 20, dev.CapacityBytes);
        Assert.Equal(BlockStatus.OutOfRange, dev.SubmitAndWait(DataBio(BioOp.Read, 1 << 20, buf, 4096)));
        Assert.Equal(BlockStatus.OutOfRange, dev.SubmitAndWait(DataBio(BioOp.Write, (1 << 20) - 4096, buf, 8192)));
        Assert.Equal(BlockStatus.Ok, dev.SubmitAndWait(DataBio(BioOp.Read, (1 << 20) - 8192, buf, 8192)));
    }

    [Theory]
    [MemberData(nameof(DirsAndEngines))]
    public void FileDevice_FuaWrites_AndFlushes_CompleteOk(string dir, FileEngineKind engine)
    {
        using var file = TestFile.Create(dir, 1 << 20);
        using var arena = DramArena.Create(1 << 20);
        using FileDevice dev = Open(file, engine);
        Assert.True((dev.Features & DeviceFeatures.WriteCache) != 0 && (dev.Features & DeviceFeatures.Fua) != 0);
        Assert.True((dev.Features & DeviceFeatures.Synchronous) == 0);
        FrameRun buf = arena.Allocator.Allocate(2);
        Span<byte> mem = arena.AddressSpace!.KmapSpan(buf.First, 0, 8192);

        Stamp.Fill(mem, 0, 1);
        Assert.Equal(BlockStatus.Ok, dev.SubmitAndWait(DataBio(BioOp.Write, 0, buf, 8192, BioFlags.Fua)));
        Stamp.Fill(mem, 8192, 1);
        Assert.Equal(BlockStatus.Ok, dev.SubmitAndWait(DataBio(BioOp.Write, 8192, buf, 8192, BioFlags.Preflush | BioFlags.Fua)));
        Assert.Equal(BlockStatus.Ok, dev.SubmitAndWait(new Bio().Init(BioOp.Flush, 0)));
        Assert.Equal(BlockStatus.Ok, dev.SubmitAndWait(new Bio().Init(BioOp.Flush, 0, BioFlags.Preflush)));
        Assert.Equal(BlockStatus.Ok, dev.SubmitAndWait(NoDataBio(BioOp.WriteZeroes, 32768, 4096, BioFlags.Fua | BioFlags.Preflush)));

        mem.Clear();
        Assert.Equal(BlockStatus.Ok, dev.SubmitAndWait(DataBio(BioOp.Read, 0, buf, 8192)));
        Assert.True(Stamp.Check(mem, 0, 1));
        Assert.Equal(BlockStatus.Ok, dev.SubmitAndWait(DataBio(BioOp.Read, 8192, buf, 8192)));
        Assert.True(Stamp.Check(mem, 8192, 1));
    }

    [Theory]
    [MemberData(nameof(DirsAndEngines))]
    public void FileDevice_DiscardAndWriteZeroes_ReadBackZeros(string dir, FileEngineKind engine)
    {
        const int size = 1 << 20;
        using var file = TestFile.Create(dir, size);
        using var arena = DramArena.Create(2 << 20);
        using FileDevice dev = Open(file, engine);
        FrameRun buf = arena.Allocator.Allocate(size / Pfn.PageSize);
        Span<byte> mem = arena.AddressSpace!.KmapSpan(buf.First, 0, size);
        Stamp.Fill(mem, 0, 3);
        Assert.Equal(BlockStatus.Ok, dev.SubmitAndWait(DataBio(BioOp.Write, 0, buf, size)));

        (long Off, int Len, BioOp Op, BioFlags Flags)[] ranges =
        [
            (4096, 8192, BioOp.Discard, BioFlags.None),
            (65536, 4096 + 512, BioOp.WriteZeroes, BioFlags.None),
            (131072 + 512, 3 * 512, BioOp.WriteZeroes, BioFlags.NoUnmap),
            (262144, 512 << 10, BioOp.WriteZeroes, BioFlags.NoUnmap | BioFlags.Fua), // larger than the zero buffer
        ];
        foreach (var r in ranges)
            Assert.Equal(BlockStatus.Ok, dev.SubmitAndWait(NoDataBio(r.Op, r.Off, r.Len, r.Flags)));

        mem.Fill(0xAA);
        Assert.Equal(BlockStatus.Ok, dev.SubmitAndWait(DataBio(BioOp.Read, 0, buf, size)));
        long pos = 0;
        foreach (var r in ranges.OrderBy(r => r.Off))
        {
            Assert.True(Stamp.Check(mem[(int)pos..(int)r.Off], pos, 3), $"data before {r.Off} damaged");
            Assert.True(mem.Slice((int)r.Off, r.Len).IndexOfAnyExcept((byte)0) < 0, $"{r.Op} at {r.Off} did not read back zeros");
            pos = r.Off + r.Len;
        }
        Assert.True(Stamp.Check(mem[(int)pos..], pos, 3));
    }

    [Theory]
    [InlineData(TestFile.Ext4Dir)]
    [InlineData(TestFile.TmpfsDir)]
    public void FileDevice_SizeNotMultipleOfBlock_CapacityRoundsDown_NoGarbagePastEof(string dir)
    {
        const long size = (1 << 20) + 1000;
        using var file = TestFile.Create(dir, size);
        var tail = new byte[512];
        Stamp.Fill(tail, 1 << 20, 9);
        using (var fs = new FileStream(file.Path, FileMode.Open, FileAccess.Write)) { fs.Position = 1 << 20; fs.Write(tail); }
        using var arena = DramArena.Create(1 << 20);
        using FileDevice dev = Open(file);
        Assert.Equal((1L << 20) + 512, dev.CapacityBytes);
        FrameRun buf = arena.Allocator.Allocate(2);
        // A request reaching into the partial last block (where the kernel would return a short count) never runs.
        Assert.Equal(BlockStatus.OutOfRange, dev.SubmitAndWait(DataBio(BioOp.Read, 1 << 20, buf, 4096)));
        Assert.Equal(BlockStatus.OutOfRange, dev.SubmitAndWait(DataBio(BioOp.Read, (1 << 20) + 512, buf, 512)));
        // The last whole block reads back what is in the file.
        Assert.Equal(BlockStatus.Ok, dev.SubmitAndWait(DataBio(BioOp.Read, 1 << 20, buf, 512)));
        Assert.True(Stamp.Check(arena.AddressSpace!.KmapSpan(buf.First, 0, 512), 1 << 20, 9));
    }

    [Theory]
    [InlineData(TestFile.Ext4Dir, false, FileEngineKind.IoUring)]
    [InlineData(TestFile.Ext4Dir, false, FileEngineKind.ThreadPool)]
    [InlineData(TestFile.TmpfsDir, true, FileEngineKind.IoUring)]
    [InlineData(TestFile.TmpfsDir, true, FileEngineKind.ThreadPool)]
    public void FileDevice_FileShrunkUnderDevice_ReadPastEof_IsIoErrorNotGarbage(string dir, bool buffered, FileEngineKind engine)
    {
        using var file = TestFile.Create(dir, 1 << 20);
        using var arena = DramArena.Create(1 << 20);
        using FileDevice dev = Open(file, engine, buffered: buffered);
        FrameRun buf = arena.Allocator.Allocate(4);
        using (var fs = new FileStream(file.Path, FileMode.Open, FileAccess.Write)) fs.SetLength((1 << 20) - 8192);
        // Spans the new EOF: the kernel returns a short count, the resubmission returns 0 → IoError.
        Assert.Equal(BlockStatus.IoError, dev.SubmitAndWait(DataBio(BioOp.Read, (1 << 20) - 12288, buf, 8192)));
        // Entirely past the new EOF: 0 bytes → IoError.
        Assert.Equal(BlockStatus.IoError, dev.SubmitAndWait(DataBio(BioOp.Read, (1 << 20) - 4096, buf, 4096)));
        // Before it: fine.
        Assert.Equal(BlockStatus.Ok, dev.SubmitAndWait(DataBio(BioOp.Read, 0, buf, 16384)));
    }

    [Theory]
    [InlineData(TestFile.Ext4Dir, false, 4096, FileEngineKind.IoUring)]
    [InlineData(TestFile.Ext4Dir, false, 512, FileEngineKind.ThreadPool)]
    [InlineData(TestFile.TmpfsDir, true, 1000, FileEngineKind.IoUring)]
    [InlineData(TestFile.TmpfsDir, true, 777, FileEngineKind.ThreadPool)]
    public void FileDevice_ShortTransfers_AreResubmittedForTheRest(string dir, bool buffered, int maxTransfer, FileEngineKind engine)
    {
        const int bytes = 64 << 10;
        using var file = TestFile.Create(dir, 1 << 20);
        using var arena = DramArena.Create(1 << 20);
        using FileDevice dev = Open(file, engine, buffered: buffered);
        dev.EngineForTests.DebugMaxTransfer = maxTransfer;
        FrameRun buf = arena.Allocator.Allocate(2 * bytes / Pfn.PageSize);
        // 16 one-page vectors on every other frame: short counts stop inside and between iovecs.
        Bio Scattered(BioOp op)
        {
            var bio = new Bio().Init(op, 8192 >> Bio.SectorShift);
            for (int k = 0; k < bytes / Pfn.PageSize; k++) bio.AddVec(buf.First.Add((ulong)(2 * k)), 0, Pfn.PageSize);
            return bio;
        }
        Span<byte> Page(int k) => arena.AddressSpace!.KmapSpan(buf.First.Add((ulong)(2 * k)), 0, Pfn.PageSize);
        for (int k = 0; k < bytes / Pfn.PageSize; k++) Stamp.Fill(Page(k), 8192 + k * Pfn.PageSize, 5);
        Assert.Equal(BlockStatus.Ok, dev.SubmitAndWait(Scattered(BioOp.Write)));
        for (int k = 0; k < bytes / Pfn.PageSize; k++) Page(k).Clear();
        Assert.Equal(BlockStatus.Ok, dev.SubmitAndWait(Scattered(BioOp.Read)));
        for (int k = 0; k < bytes / Pfn.PageSize; k++) Assert.True(Stamp.Check(Page(k), 8192 + k * Pfn.PageSize, 5), $"page {k}");

        // The file really holds it (checked without the device).
        dev.EngineForTests.DebugMaxTransfer = 0;
        var check = new byte[bytes];
        using var fs = new FileStream(file.Path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite);
        fs.Position = 8192;
        fs.ReadExactly(check);
        Assert.True(Stamp.Check(check, 8192, 5));
    }

    [Fact]
    public void FileDevice_BufferedFallback_WorksOnDevShm_ThroughDeviceSpec()
    {
        using var file = TestFile.Create(TestFile.TmpfsDir, 1 << 20);
        DeviceSpec spec = DeviceSpec.Parse($"file:{file.Path},buffered");
        Assert.Equal("file", spec.Type!.Name);
        Assert.Equal(file.Path, spec.Arguments[0]);
        Assert.True(spec.Has("buffered"));
        Assert.Equal($"file:{file.Path},buffered", spec.ToString());
        Assert.False(DeviceSpec.Parse($"file:{file.Path}").Has("buffered"));

        using var arena = DramArena.Create(1 << 20);
        using IBlockDevice opened = spec.Open();
        var dev = Assert.IsType<FileDevice>(opened);
        output.WriteLine(dev.EngineDescription);
        Assert.False(dev.IsDirect);
        Assert.Equal(1, dev.Limits.DmaAlignment);
        Assert.Contains("buffered", dev.EngineDescription);

        // Byte-aligned vectors are fine without O_DIRECT.
        FrameRun buf = arena.Allocator.Allocate(4);
        Span<byte> mem = arena.AddressSpace!.KmapSpan(buf.First, 0, 4 * Pfn.PageSize);
        var bio = new Bio().Init(BioOp.Write, 2).AddVec(buf.First, 3, 1000).AddVec(buf.First.Add(2), 17, 24);
        Stamp.Fill(mem.Slice(3, 1000), 0, 11); // stamps use the vector's own offsets; checked the same way
        Stamp.Fill(mem.Slice(2 * Pfn.PageSize + 17, 24), 1000, 11);
        Assert.Equal(BlockStatus.Ok, dev.SubmitAndWait(bio));
        var back = new byte[1024];
        using (var fs = new FileStream(file.Path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite)) { fs.Position = 1024; fs.ReadExactly(back); }
        Assert.True(back.AsSpan(0, 1000).SequenceEqual(mem.Slice(3, 1000)));
        Assert.True(back.AsSpan(1000, 24).SequenceEqual(mem.Slice(2 * Pfn.PageSize + 17, 24)));
    }

    [Fact]
    public void FileDevice_Auto_FallsBackToThreadPool_WhenIoUringUnavailable()
    {
        using var file = TestFile.Create(TestFile.Ext4Dir, 1 << 20);
        using var arena = DramArena.Create(1 << 20);
        using FileDevice dev = FileDevice.Open(file.Path, new FileDeviceOptions { SimulateIoUringUnavailable = true });
        output.WriteLine(dev.EngineDescription);
        Assert.Equal(FileEngineKind.ThreadPool, dev.Engine);
        Assert.Contains("io_uring unavailable", dev.EngineDescription);
        FrameRun buf = arena.Allocator.Allocate(1);
        Assert.Equal(BlockStatus.Ok, dev.SubmitAndWait(DataBio(BioOp.Write, 0, buf, 4096)));

        Assert.Throws<NotSupportedException>(() =>
            FileDevice.Open(file.Path, new FileDeviceOptions { Engine = FileEngineKind.IoUring, SimulateIoUringUnavailable = true }));
        using FileDevice auto = FileDevice.Open(file.Path);
        Assert.Equal(FileEngineKind.IoUring, auto.Engine);
    }

    [Fact]
    public void FileDevice_Auto_OnTmpfs_PicksThreadPool_AndSaysWhy()
    {
        using var file = TestFile.Create(TestFile.TmpfsDir, 1 << 20);
        using FileDevice dev = FileDevice.Open(file.Path);
        output.WriteLine(dev.EngineDescription);
        Assert.Equal(FileEngineKind.ThreadPool, dev.Engine);
        Assert.Contains("tmpfs", dev.EngineDescription);
        using FileDevice forced = FileDevice.Open(file.Path, new FileDeviceOptions { Engine = FileEngineKind.IoUring });
        Assert.Equal(FileEngineKind.IoUring, forced.Engine);
    }

    [Fact]
    public void FileDevice_OpenErrors_AreClearOneLiners()
    {
        var missing = Assert.ThrowsAny<IOException>(() => FileDevice.Open("/var/tmp/pfnblock-no-such-file"));
        Assert.Contains("pfnblock-no-such-file", missing.Message);
        var notFile = Assert.ThrowsAny<IOException>(() => FileDevice.Open("/dev/null"));
        Assert.Contains("not a regular file or block device", notFile.Message);
        using var tiny = TestFile.Create(TestFile.Ext4Dir, 100);
        var small = Assert.ThrowsAny<IOException>(() => FileDevice.Open(tiny.Path));
        Assert.Contains("smaller than one", small.Message);
        Assert.DoesNotContain('\n', small.Message);
    }

    [Fact]
    public void FileDevice_ODirectUnsupported_SaysSoAndNamesTheBufferedFallback()
    {
        // procfs files are regular files without FMODE_CAN_ODIRECT: open(O_DIRECT) gives EINVAL.
        const string path = "/proc/self/status";
        var e = Assert.Throws<NotSupportedException>(() => FileDevice.Open(path, new FileDeviceOptions { ReadOnly = true }));
        output.WriteLine(e.Message);
        Assert.Contains("O_DIRECT is not supported", e.Message);
        Assert.Contains($"'file:{path},buffered'", e.Message);
        Assert.DoesNotContain('\n', e.Message);
    }

    [Theory]
    [InlineData(FileEngineKind.IoUring, 0)]
    [InlineData(FileEngineKind.IoUring, 1)]
    [InlineData(FileEngineKind.ThreadPool, 0)]
    [InlineData(FileEngineKind.ThreadPool, 1)]
    public void FileDevice_DisposeWithIoInFlight_CompletesEveryBioExactlyOnce(FileEngineKind engine, int disposeFromCallback)
    {
        const int bios = 256;
        using var file = TestFile.Create(TestFile.TmpfsDir, 8 << 20);
        using var arena = DramArena.Create(8 << 20);
        FileDevice dev = Open(file, engine, depth: 8);
        var counts = new int[bios];
        var statuses = new BlockStatus[bios];
        int completed = 0;
        using var allDone = new ManualResetEventSlim();
        Action<Bio> endIo = b =>
        {
            int i = (int)b.Tag;
            Interlocked.Increment(ref counts[i]);
            statuses[i] = b.Status;
            if (disposeFromCallback == 1 && i == 40) dev.Dispose();
            if (Interlocked.Increment(ref completed) == bios) allDone.Set();
        };
        var submitters = Enumerable.Range(0, 4).Select(t => new Thread(() =>
        {
            for (int i = t; i < bios; i += 4)
            {
                FrameRun buf = arena.Allocator.Allocate(4);
                var bio = new Bio().Init(i % 2 == 0 ? BioOp.Write : BioOp.Read, (long)i * 32).AddVec(buf.First, 0, 16384);
                bio.Tag = i;
                bio.EndIo = endIo;
                dev.Submit(bio);
            }
        })).ToArray();
        foreach (Thread s in submitters) s.Start();
        if (disposeFromCallback == 0)
        {
            Thread.Sleep(1);
            dev.Dispose(); // with submitters blocked on the 8 slots and I/O in the kernel
        }
        foreach (Thread s in submitters) s.Join();
        Assert.True(allDone.Wait(TimeSpan.FromSeconds(30)), $"only {completed} of {bios} bios completed");
        dev.Dispose();
        Assert.All(counts, c => Assert.Equal(1, c));
        Assert.All(statuses, s => Assert.True(s is BlockStatus.Ok or BlockStatus.IoError, s.ToString()));
        Assert.Equal(0, dev.EngineForTests.CallbackFaults);
        // After dispose, submission completes at once with an error.
        FrameRun one = arena.Allocator.Allocate(1);
        Assert.Equal(BlockStatus.IoError, dev.SubmitAndWait(DataBio(BioOp.Read, 0, one, 4096)));
        output.WriteLine($"ok: {statuses.Count(s => s == BlockStatus.Ok)}, failed at dispose: {statuses.Count(s => s != BlockStatus.Ok)}");
    }

    [Fact]
    public void FileDevice_CompletionCallback_SubmittingIntoFullQueue_IsRequeued_NotDeadlock()
    {
        using var file = TestFile.Create(TestFile.Ext4Dir, 1 << 20);
        using var arena = DramArena.Create(1 << 20);
        using FileDevice dev = Open(file, FileEngineKind.IoUring, depth: 1);
        FrameRun buf = arena.Allocator.Allocate(2);
        var inner = DataBio(BioOp.Read, 4096, buf, 4096);
        var blocker = DataBio(BioOp.Read, 8192, buf, 4096);
        BlockStatus innerStatus = BlockStatus.Ok;
        using var done = new ManualResetEventSlim();
        inner.EndIo = b => { innerStatus = b.Status; done.Set(); };
        var outer = DataBio(BioOp.Read, 0, buf, 4096);
        outer.EndIo = _ =>
        {
            // The slot just freed is taken by a blocked submitter or by us; take it first, then try again.
            dev.Submit(blocker);
            dev.Submit(inner);
        };
        dev.Submit(outer);
        Assert.True(done.Wait(TimeSpan.FromSeconds(10)));
        // The engine answered Busy rather than block its own completion thread; the block layer
        // requeued the bio and resubmitted it once a slot was free, so the submitter saw success.
        Assert.Equal(BlockStatus.Ok, innerStatus);
        Assert.True(dev.Stats.Snapshot().Requeues >= 1);
    }
}

[CollectionDefinition(nameof(FileDeviceAllocationTests), DisableParallelization = true)]
public sealed class FileDeviceAllocationCollection;

/// <summary>Allocation measurements; run alone so other tests' allocations do not count.</summary>
[Collection(nameof(FileDeviceAllocationTests))]
public sealed class FileDeviceAllocationTests(ITestOutputHelper output)
{
    [Fact]
    public void FileDevice_IoUring_SteadyState_AllocatesZeroBytesPerIo()
    {
        using var file = TestFile.Create(TestFile.Ext4Dir, 16 << 20);
        using var arena = DramArena.Create(16 << 20);
        using FileDevice dev = FileDevice.Open(file.Path, new FileDeviceOptions { Engine = FileEngineKind.IoUring, QueueDepth = 32 });

        // Completion path + resubmission from the completion thread (closed loop at QD 32).
        var loop = new ClosedLoop(dev, arena, depth: 32, wrap: true) { MeasureFrom = 2_000, MeasureTo = 12_000 };
        loop.Run(BioOp.Write, seed: 1, ios: 12_500);
        loop.Run(BioOp.Read, seed: 1, ios: 12_500);
        Assert.Equal(0, loop.Errors);
        Assert.Equal(0, loop.Mismatches);
        long completionThread = loop.AllocatedAtTo - loop.AllocatedAtFrom;
        output.WriteLine($"completion thread: {completionThread} bytes over 10000 I/Os");
        Assert.Equal(0, completionThread);

        // Submission path from an ordinary thread with back-pressure (queue depth < bios in flight).
        FrameRun buf = arena.Allocator.Allocate(1);
        var bios = new Bio[64];
        var busy = new int[bios.Length];
        int completed = 0;
        Action<Bio> endIo = b =>
        {
            Volatile.Write(ref busy[(int)b.Tag], 0);
            Interlocked.Increment(ref completed);
        };
        for (int i = 0; i < bios.Length; i++) bios[i] = new Bio();
        void SubmitRange(int from, int to)
        {
            for (int i = from; i < to; i++)
            {
                // 64 bios over 32 slots: the submitter blocks in Submit for a slot (back-pressure);
                // a bio is reused only once its own completion ran.
                int k = i % bios.Length;
                while (Volatile.Read(ref busy[k]) != 0) Thread.SpinWait(20);
                busy[k] = 1;
                Bio b = bios[k].Init(BioOp.Read, (i % 4096) * 8L).AddVec(buf.First, 0, 4096);
                b.EndIo = endIo;
                b.Tag = k;
                dev.Submit(b);
            }
        }
        SubmitRange(0, 2_000);
        long before = GC.GetAllocatedBytesForCurrentThread();
        SubmitRange(2_000, 12_000);
        long submitThread = GC.GetAllocatedBytesForCurrentThread() - before;
        Assert.True(SpinWait.SpinUntil(() => Volatile.Read(ref completed) == 12_000, TimeSpan.FromSeconds(30)));
        Assert.Equal(0, dev.EngineForTests.CallbackFaults);
        output.WriteLine($"submitting thread: {submitThread} bytes over 10000 I/Os");
        Assert.Equal(0, submitThread);
    }

    [Fact]
    public void FileDevice_IoUring_Polled_SteadyState_AllocatesZeroBytesPerIo()
    {
        using var file = TestFile.Create(TestFile.Ext4Dir, 16 << 20);
        using var arena = DramArena.Create(16 << 20);
        using FileDevice dev = FileDevice.Open(file.Path, new FileDeviceOptions { Engine = FileEngineKind.IoUring, QueueDepth = 32 });
        // Submission, the poll's io_uring_enter and reaping, and the completions all run on the
        // poller: its own allocation count covers the whole polled path.
        var d = new PolledDriver(dev, arena, depth: 32);
        long allocated = -1;
        var poller = new Thread(() =>
        {
            BlockPoll.Begin();
            d.Run(BioOp.Write, seed: 4, ios: (int)(dev.CapacityBytes / PolledDriver.ChunkBytes)); // every chunk, so every read checks
            // Warm-up, as in Performance/ZeroAllocationTests: the first few thousand I/Os allocate
            // while the JIT tiers the path up (measured: ~2 KB, once).
            for (int k = 0; k < 10; k++) d.Run(BioOp.Read, seed: 4, ios: 2_000);
            long before = GC.GetAllocatedBytesForCurrentThread();
            for (int k = 0; k < 5; k++) d.Run(BioOp.Read, seed: 4, ios: 1_000);
            allocated = GC.GetAllocatedBytesForCurrentThread() - before;
            BlockPoll.End();
        }) { Name = "poller" };
        poller.Start();
        Assert.True(poller.Join(TimeSpan.FromMinutes(1)));
        Assert.Equal(0, d.Errors);
        Assert.Equal(0, d.Mismatches);
        Assert.True(d.PolledElsewhere == 0, $"{d.PolledElsewhere} polled bios completed on {d.ElsewhereThread}");
        output.WriteLine($"poller: {allocated} bytes over 5000 polled I/Os");
        Assert.Equal(0, allocated);
    }

    [Fact]
    public void FileDevice_ThreadPool_SteadyState_AllocatesZeroBytesPerIo()
    {
        using var file = TestFile.Create(TestFile.Ext4Dir, 16 << 20);
        using var arena = DramArena.Create(16 << 20);
        using FileDevice dev = FileDevice.Open(file.Path, new FileDeviceOptions { Engine = FileEngineKind.ThreadPool, QueueDepth = 32 });
        // Completions (and the resubmissions they do) run on the engine's worker threads; each
        // worker's allocations between two of its completions are summed. (Process-wide counts are
        // useless here: the runtime itself allocates several hundred KB/s in the background.)
        var loop = new ClosedLoop(dev, arena, depth: 32, wrap: true);
        loop.Run(BioOp.Write, seed: 2, ios: 5_000);
        loop.Run(BioOp.Read, seed: 2, ios: 20_000);
        loop.MeasureFrom = 2_000;
        loop.MeasureTo = 20_000;
        loop.Run(BioOp.Read, seed: 2, ios: 20_000);
        Assert.Equal(0, loop.Errors);
        Assert.Equal(0, loop.Mismatches);
        output.WriteLine($"worker threads: {loop.AllocatedBetweenCompletions} bytes over {loop.MeasuredCompletions} I/Os");
        Assert.True(loop.MeasuredCompletions > 10_000);
        Assert.Equal(0, loop.AllocatedBetweenCompletions);
    }
}
