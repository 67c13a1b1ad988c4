using PfnBlock.Block;
using PfnBlock.Devices.DirectFile;
using PfnBlock.Interop;
using PfnBlock.Memory;
using Xunit.Abstractions;

namespace PfnBlock.Tests.Devices.DirectFile;

/// <summary>
/// The io_uring engine's own paths: ring setup (SINGLE_ISSUER | DEFER_TASKRUN, or a plain ring),
/// the registered file, fixed buffers over DRAM arenas and every way of not using them, retried
/// and failed kernel results. Every test checks the data against the file itself.
/// </summary>
public sealed unsafe class IoUringEngineTests(ITestOutputHelper output)
{
    private FileDevice Open(TestFile f, bool plainRing = false, int depth = 8)
    {
        FileDevice dev = FileDevice.Open(f.Path, new FileDeviceOptions { Engine = FileEngineKind.IoUring, QueueDepth = depth, SimulateNoDeferTaskrun = plainRing });
        output.WriteLine(dev.EngineDescription);
        return dev;
    }

    private static IoUringEngine Engine(FileDevice dev) => (IoUringEngine)dev.EngineForTests;

    private static Bio OneVec(BioOp op, long byteOffset, FrameRun buf, int bytes) =>
        new Bio().Init(op, byteOffset >> Bio.SectorShift).AddVec(buf.First, 0, (uint)bytes);

    /// <summary>Writes <paramref name="bytes"/> stamped with <paramref name="seed"/> from <paramref name="buf"/>, reads them back into it, checks, and checks the file.</summary>
    private static void RoundTrip(FileDevice dev, TestFile file, FrameRun buf, long offset, int bytes, ulong seed)
    {
        Span<byte> mem = PhysicalAddressSpace.Shared.KmapSpan(buf.First, 0, bytes);
        Stamp.Fill(mem, offset, seed);
        Assert.Equal(BlockStatus.Ok, dev.SubmitAndWait(OneVec(BioOp.Write, offset, buf, bytes)));
        mem.Clear();
        Assert.Equal(BlockStatus.Ok, dev.SubmitAndWait(OneVec(BioOp.Read, offset, buf, bytes)));
        Assert.True(Stamp.Check(mem, offset, seed), $"read back at {offset}");
        AssertFileHolds(file, offset, bytes, seed);
    }

    private static void AssertFileHolds(TestFile file, long offset, int bytes, ulong seed)
    {
        var check = new byte[bytes];
        using var fs = new FileStream(file.Path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite);
        fs.Position = offset;
        fs.ReadExactly(check);
        Assert.True(Stamp.Check(check, offset, seed), $"file content at {offset}");
    }

    [Fact]
    public void Setup_OnThisKernel_IsSingleIssuerDeferTaskrun_WithRegisteredFile()
    {
        using var file = TestFile.Create(TestFile.Ext4Dir, 1 << 20);
        using FileDevice dev = Open(file);
        IoUringEngine e = Engine(dev);
        // Kernel 6.18 here: both flags (6.1) and file registration are available.
        Assert.True(e.DeferTaskrun, dev.EngineDescription);
        Assert.True(e.FixedFile, dev.EngineDescription);
        Assert.Contains("SINGLE_ISSUER|DEFER_TASKRUN", dev.EngineDescription);
        Assert.Contains("registered file", dev.EngineDescription);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void BothRingKinds_ReadAfterWrite_AtDepth16_WithScatteredAndSingleIovecBios(bool plainRing)
    {
        using var file = TestFile.Create(TestFile.Ext4Dir, 4 << 20);
        using var arena = DramArena.Create(8 << 20);
        using FileDevice dev = Open(file, plainRing, depth: 16);
        Assert.Equal(!plainRing, Engine(dev).DeferTaskrun);
        if (plainRing) Assert.Contains("plain ring", dev.EngineDescription);
        var loop = new ClosedLoop(dev, arena, depth: 16, wrap: true) { CompletionThreadPrefix = "iou-ring" };
        loop.Run(BioOp.Write, seed: 11, ios: 600);
        loop.Run(BioOp.Read, seed: 11, ios: 600);
        Assert.Equal(0, loop.Errors);
        Assert.Equal(0, loop.Mismatches);
        Assert.Equal(0, loop.ForeignThreadCompletions);
        Assert.Equal(0, dev.EngineForTests.CallbackFaults);
    }

    [Fact]
    public void FixedBuffers_ArenaRegisteredOnFirstUse_ThenReadsAndWritesGoFixed()
    {
        using var file = TestFile.Create(TestFile.Ext4Dir, 1 << 20);
        using var arena = DramArena.Create(1 << 20);
        using FileDevice dev = Open(file);
        IoUringEngine e = Engine(dev);
        FrameRun buf = arena.Allocator.Allocate(4);
        // The first I/O proposes the arena and goes vectored; the ring thread registers it before it next waits.
        RoundTrip(dev, file, buf, 0, 16384, 1);
        output.WriteLine($"registration errno {e.LastBufferRegistrationErrno}");
        Assert.Equal(1, e.RegisteredBufferCount);
        long fixedBefore = e.FixedBufferIos;
        for (int i = 1; i <= 8; i++) RoundTrip(dev, file, buf, i * 16384L, 16384, (ulong)i);
        Assert.Equal(16, e.FixedBufferIos - fixedBefore);
        Assert.Equal(0, e.LastBufferRegistrationErrno);
        Assert.Contains("(1 registered)", dev.EngineDescription);
    }

    [Theory]
    [InlineData(12)] // ENOMEM: RLIMIT_MEMLOCK
    [InlineData(14)] // EFAULT: memory the kernel cannot pin long-term
    [InlineData(95)] // EOPNOTSUPP
    public void FixedBuffers_RegistrationRefused_StaysVectored_DataCorrect(int errno)
    {
        using var file = TestFile.Create(TestFile.Ext4Dir, 1 << 20);
        using var arena = DramArena.Create(1 << 20);
        using FileDevice dev = Open(file);
        IoUringEngine e = Engine(dev);
        e.SimulateBufferRegistrationErrno = errno;
        FrameRun buf = arena.Allocator.Allocate(2);
        for (int i = 0; i < 6; i++) RoundTrip(dev, file, buf, i * 8192L, 8192, (ulong)(100 + i));
        Assert.Equal(0, e.RegisteredBufferCount);
        Assert.Equal(0, e.FixedBufferIos);
        Assert.Equal(errno, e.LastBufferRegistrationErrno);
    }

    [Fact]
    public void FixedBuffers_BioPartlyInRegisteredArena_GoesVectored_AndBothHalvesLand()
    {
        using var file = TestFile.Create(TestFile.Ext4Dir, 1 << 20);
        using var registered = DramArena.Create(1 << 20);
        using var other = DramArena.Create(1 << 20);
        using FileDevice dev = Open(file);
        IoUringEngine e = Engine(dev);
        FrameRun a = registered.Allocator.Allocate(1);
        FrameRun b = other.Allocator.Allocate(1);
        RoundTrip(dev, file, a, 0, 4096, 7);
        Assert.Equal(1, e.RegisteredBufferCount);
        e.SimulateBufferRegistrationErrno = 12; // the second arena stays unregistered

        Span<byte> ma = PhysicalAddressSpace.Shared.KmapSpan(a.First, 0, 4096);
        Span<byte> mb = PhysicalAddressSpace.Shared.KmapSpan(b.First, 0, 4096);
        Stamp.Fill(ma, 65536, 9);
        Stamp.Fill(mb, 65536 + 4096, 9);
        long fixedBefore = e.FixedBufferIos;
        var write = new Bio().Init(BioOp.Write, 65536 >> Bio.SectorShift).AddVec(a.First, 0, 4096).AddVec(b.First, 0, 4096);
        Assert.Equal(BlockStatus.Ok, dev.SubmitAndWait(write));
        ma.Clear();
        mb.Clear();
        var read = new Bio().Init(BioOp.Read, 65536 >> Bio.SectorShift).AddVec(a.First, 0, 4096).AddVec(b.First, 0, 4096);
        Assert.Equal(BlockStatus.Ok, dev.SubmitAndWait(read));
        Assert.Equal(fixedBefore, e.FixedBufferIos); // two iovecs: READV/WRITEV
        Assert.True(Stamp.Check(ma, 65536, 9));
        Assert.True(Stamp.Check(mb, 65536 + 4096, 9));
        AssertFileHolds(file, 65536, 8192, 9);
        // A single-iovec bio from the unregistered arena goes vectored; from the registered one, fixed.
        RoundTrip(dev, file, b, 131072, 4096, 10);
        Assert.Equal(fixedBefore, e.FixedBufferIos);
        RoundTrip(dev, file, a, 135168, 4096, 11);
        Assert.Equal(fixedBefore + 2, e.FixedBufferIos);
        Assert.Equal(1, e.RegisteredBufferCount);
    }

    [Fact]
    public void FixedBuffers_ArenaDisposed_KernelPinsDropped_AndItsAddressesNeverGoFixed()
    {
        using var file = TestFile.Create(TestFile.Ext4Dir, 1 << 20);
        using var keep = DramArena.Create(1 << 20);
        using FileDevice dev = Open(file);
        IoUringEngine e = Engine(dev);
        var gone = DramArena.Create(1 << 20);
        RoundTrip(dev, file, gone.Allocator.Allocate(1), 0, 4096, 1);
        Assert.Equal(1, e.RegisteredBufferCount);
        gone.Dispose();
        // The ring thread notices before it next sleeps, which this I/O makes it do.
        FrameRun buf = keep.Allocator.Allocate(1);
        RoundTrip(dev, file, buf, 4096, 4096, 2);
        RoundTrip(dev, file, buf, 8192, 4096, 3);
        Assert.Equal(1, e.ReleasedBuffers);
        Assert.Equal(2, e.RegisteredBufferCount); // the disposed arena's slot is not reused
        // A new arena, possibly mapped where the old one was, is registered on its own.
        using var again = DramArena.Create(1 << 20);
        FrameRun b2 = again.Allocator.Allocate(1);
        RoundTrip(dev, file, b2, 12288, 4096, 4);
        RoundTrip(dev, file, b2, 16384, 4096, 5);
        Assert.Equal(3, e.RegisteredBufferCount);
    }

    [Theory]
    [InlineData(512)]  // O_DIRECT: a short count the kernel could return stays block-aligned
    [InlineData(4096)]
    public void FixedBuffers_ShortTransfers_ResubmitTheRestFixed(int maxTransfer)
    {
        using var file = TestFile.Create(TestFile.Ext4Dir, 1 << 20);
        using var arena = DramArena.Create(1 << 20);
        using FileDevice dev = Open(file);
        IoUringEngine e = Engine(dev);
        FrameRun buf = arena.Allocator.Allocate(16);
        RoundTrip(dev, file, buf, 0, 4096, 1); // registers the arena
        dev.EngineForTests.DebugMaxTransfer = maxTransfer;
        long fixedBefore = e.FixedBufferIos;
        RoundTrip(dev, file, buf, 65536, 65536, 3);
        // Each short step of the write and of the read was reissued as a fixed transfer of the rest.
        Assert.True(e.FixedBufferIos - fixedBefore >= 2 * (65536 / maxTransfer), $"{e.FixedBufferIos - fixedBefore} fixed transfers");
    }

    [Theory]
    [InlineData(false, 11)] // EAGAIN
    [InlineData(false, 4)]  // EINTR
    [InlineData(true, 11)]
    public void KernelSaysTryAgain_RequestIsReissued_AndCompletesOk(bool plainRing, int errno)
    {
        using var file = TestFile.Create(TestFile.Ext4Dir, 1 << 20);
        using var arena = DramArena.Create(1 << 20);
        using FileDevice dev = Open(file, plainRing);
        FrameRun buf = arena.Allocator.Allocate(2);
        RoundTrip(dev, file, buf, 0, 8192, 1);
        dev.EngineForTests.DebugInjectErrno = errno;
        dev.EngineForTests.DebugInjectCount = 5;
        RoundTrip(dev, file, buf, 8192, 8192, 2);
        Assert.Equal(0, dev.EngineForTests.DebugInjectCount); // all five were seen (and retried)
        Assert.Equal(0, dev.EngineForTests.LastErrno);
    }

    [Fact]
    public void KernelError_FailsTheBio_WithItsErrno_AndTheDeviceGoesOn()
    {
        using var file = TestFile.Create(TestFile.Ext4Dir, 1 << 20);
        using var arena = DramArena.Create(1 << 20);
        using FileDevice dev = Open(file);
        FrameRun buf = arena.Allocator.Allocate(1);
        dev.EngineForTests.DebugInjectErrno = 5; // EIO
        dev.EngineForTests.DebugInjectCount = 1;
        Assert.Equal(BlockStatus.IoError, dev.SubmitAndWait(OneVec(BioOp.Read, 0, buf, 4096)));
        Assert.Equal(5, dev.EngineForTests.LastErrno);
        RoundTrip(dev, file, buf, 4096, 4096, 4);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Dispose_WithFixedAndVectoredIoInFlight_CompletesEveryBioOnce_AndNothingAfter(bool plainRing)
    {
        using var file = TestFile.Create(TestFile.Ext4Dir, 4 << 20);
        using var arena = DramArena.Create(4 << 20);
        FileDevice dev = Open(file, plainRing, depth: 4);
        FrameRun warm = arena.Allocator.Allocate(1);
        RoundTrip(dev, file, warm, 0, 4096, 1);
        const int bios = 64;
        var counts = new int[bios];
        int completed = 0;
        using var allDone = new ManualResetEventSlim();
        Action<Bio> endIo = b =>
        {
            Interlocked.Increment(ref counts[(int)b.Tag]);
            if (Interlocked.Increment(ref completed) == bios) allDone.Set();
        };
        var submitter = new Thread(() =>
        {
            for (int i = 0; i < bios; i++)
            {
                FrameRun buf = arena.Allocator.Allocate(2);
                var bio = new Bio().Init(i % 2 == 0 ? BioOp.Write : BioOp.Read, i * 16L).AddVec(buf.First, 0, 4096);
                if (i % 3 == 0) bio.AddVec(buf.First.Add(1), 0, 4096); // two iovecs: vectored
                bio.Tag = i;
                bio.EndIo = endIo;
                dev.Submit(bio);
            }
        });
        submitter.Start();
        Thread.Sleep(1);
        dev.Dispose();
        submitter.Join();
        Assert.True(allDone.Wait(TimeSpan.FromSeconds(30)), $"only {completed} of {bios} completed");
        Assert.All(counts, c => Assert.Equal(1, c));
        Assert.Equal(BlockStatus.IoError, dev.SubmitAndWait(OneVec(BioOp.Read, 0, warm, 4096)));
    }

    /// <summary>
    /// Which memory the kernel lets io_uring register as a fixed buffer (the seed's question):
    /// anonymous DRAM and a MAP_SHARED mapping of a tmpfs (shmem) file yes; a MAP_SHARED mapping of
    /// an ext4 file no (long-term pins of file-backed shared pages are refused: EFAULT on 6.x,
    /// EOPNOTSUPP on older kernels).
    /// </summary>
    [Fact]
    public void Kernel_RegistersDramAndShmemMappings_RefusesExt4SharedMapping()
    {
        const int size = 1 << 20;
        using IoUringRing ring = IoUringRing.Create(4, []);
        Assert.Equal(0, ring.RegisterSparseBuffers(4));
        using SafeMmapHandle anon = SafeMmapHandle.TryMap(size, Libc.PROT_READ | Libc.PROT_WRITE, Libc.MAP_PRIVATE | Libc.MAP_ANONYMOUS, -1, 0)!;
        Assert.Equal(0, ring.UpdateBuffer(0, anon.Address, size));
        int shm = MapFileAndRegister(ring, 1, TestFile.TmpfsDir, size);
        int ext4 = MapFileAndRegister(ring, 2, TestFile.Ext4Dir, size);
        output.WriteLine($"anonymous: 0, tmpfs MAP_SHARED: {shm}, ext4 MAP_SHARED: {ext4} ({Libc.StrError(-ext4)})");
        Assert.Equal(0, shm);
        Assert.True(ext4 == -14 || ext4 == -95, $"ext4 MAP_SHARED registration returned {ext4}");
    }

    private static int MapFileAndRegister(IoUringRing ring, uint index, string dir, int size)
    {
        using var file = TestFile.Create(dir, size);
        using SafeFdHandle fd = SafeFdHandle.Open(file.Path, Libc.O_RDWR | Libc.O_CLOEXEC, 0);
        Assert.False(fd.IsInvalid);
        using SafeMmapHandle map = SafeMmapHandle.TryMap((nuint)size, Libc.PROT_READ | Libc.PROT_WRITE, Libc.MAP_SHARED, fd.Fd, 0)!;
        Assert.NotNull(map);
        int res = ring.UpdateBuffer(index, map.Address, (nuint)size);
        // Empty the slot again so the ring releases its pins before the mapping goes.
        if (res == 0) Assert.Equal(0, ring.UpdateBuffer(index, null, 0));
        return res;
    }
}
