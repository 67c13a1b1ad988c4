using System.Security.Cryptography;
using PfnBlock.Block;
using PfnBlock.Devices.DirectFile;
using PfnBlock.Devices.Pmem;
using PfnBlock.Exports.Copy;
using PfnBlock.Memory;
using PfnBlock.Namespaces;

namespace PfnBlock.Tests.Copy;

/// <summary>
/// <c>pfnblock copy --fixed-buffers</c>: the pmem side registered as io_uring fixed buffers, on
/// real O_DIRECT files on ext4 and real namespaces on tmpfs. The chunks go as READ_FIXED/WRITE_FIXED
/// window by window and round-trip byte for byte, a discard of a registered window waits until the
/// copy has unregistered it, a refused registration (simulated, or real: a namespace on ext4) falls
/// back to READV/WRITEV, and a source disposed mid-copy fails the copy without a hang or a pin left.
/// </summary>
public sealed partial class DeviceCopyTests
{
    private const int Bs = 256 << 10;

    private FileDevice OpenFile(string path) => (FileDevice)_set.Open($"file:{path}");

    private static IoUringEngine Engine(FileDevice f) => (IoUringEngine)f.EngineForTests;

    private static unsafe bool Holds(PmemDevice pmem, byte[] expected) =>
        new ReadOnlySpan<byte>(pmem.Namespace.DataAddress, expected.Length).SequenceEqual(expected);

    [Theory]
    [MemberData(nameof(Kinds))]
    public void FixedBuffers_FileToPmemToFileGoWindowByWindowAndRoundTrip(DescriptorMapKind kind)
    {
        string src = RandomFile(Size, (int)kind);
        string dst = _scratch.NewSizedFile("/var/tmp", Size, "dst");
        FileDevice file = OpenFile(src);
        FileDevice back = OpenFile(dst);
        PmemDevice pmem = Namespace(kind);
        IoUringEngine inEngine = Engine(file), outEngine = Engine(back);
        long vectoredIn = inEngine.VectoredIos, vectoredOut = outEngine.VectoredIos;

        // 1 MiB windows of four 256 KiB chunks, three in flight: windows are retired with chunks
        // still in flight and released by the completion of their last one.
        var options = new DeviceCopyOptions { Size = Size, BlockSize = Bs, QueueDepth = 3, FixedBuffers = true, WindowBytes = 1 << 20 };
        DeviceCopyResult r = new DeviceCopy(file, pmem, options).Run();
        Assert.Equal((Size, Size, Size, 0), (r.Bytes, r.PinnedBytes, r.RegisteredBytes, r.RegistrationErrno));
        Assert.Equal(Size / Bs, inEngine.FixedBufferIos);
        Assert.Equal(vectoredIn, inEngine.VectoredIos);
        Assert.Equal(0, inEngine.RegisteredRangeCount);
        Assert.False(pmem.Pins.AnyPinned);

        r = new DeviceCopy(pmem, back, options).Run();
        Assert.Equal((Size, Size, Size, 0L), (r.Bytes, r.PinnedBytes, r.RegisteredBytes, r.CpuCopiedBytes));
        Assert.Equal(Size / Bs, outEngine.FixedBufferIos);
        Assert.Equal(vectoredOut, outEngine.VectoredIos);
        Assert.Equal(0, outEngine.RegisteredRangeCount);
        Assert.False(pmem.Pins.AnyPinned);
        _set.Dispose();
        Assert.Equal(SHA256.HashData(File.ReadAllBytes(src)), SHA256.HashData(File.ReadAllBytes(dst)));
    }

    [Fact]
    public void FixedBuffers_ADiscardOfTheRegisteredWindowWaitsUntilTheCopyHasUnregisteredIt()
    {
        FileDevice file = OpenFile(RandomFile(Size, 11));
        PmemDevice pmem = Namespace(DescriptorMapKind.None);
        IoUringEngine engine = Engine(file);
        var discard = new Bio().Init(BioOp.Discard, 0);
        discard.Iter.Size = (uint)Size;
        using var discarded = new ManualResetEventSlim(false);
        discard.EndIo = _ => discarded.Set();
        bool submitted = false, doneWhileRegistered = false;
        int checks = 0;
        DeviceCopyResult r = new DeviceCopy(file, pmem, new DeviceCopyOptions { Size = Size, BlockSize = Bs, QueueDepth = 2, FixedBuffers = true }).Run(done =>
        {
            // One window covers the copy: it is registered and pinned until Run ends.
            if (submitted)
            {
                checks++;
                doneWhileRegistered |= discarded.IsSet || engine.RegisteredRangeCount != 1;
                return;
            }
            submitted = true;
            pmem.Submit(discard);
        });
        Assert.True(checks >= 8, $"{checks} progress calls after the discard");
        Assert.False(doneWhileRegistered);
        Assert.True(discarded.Wait(TimeSpan.FromSeconds(30)), "the discard never ran after the copy unregistered its window");
        Assert.Equal(BlockStatus.Ok, discard.Status);
        // Chunks started after the discard's fence went up could not be pinned one by one: they
        // went through DRAM, into the same frames, and the copy finished.
        Assert.Equal(Size, r.Bytes);
        Assert.True(r.BounceBytes > 0, $"bounce {r.BounceBytes}");
        Assert.Equal(0, engine.RegisteredRangeCount);
        // The discard ran last, over everything the copy wrote.
        Assert.True(Holds(pmem, new byte[Size]));
        Assert.False(pmem.Pins.AnyPinned);
    }

    [Fact]
    public void FixedBuffers_ARefusedRegistrationFallsBackToVectoredIo()
    {
        string src = RandomFile(Size, 5);
        byte[] expected = File.ReadAllBytes(src);
        FileDevice file = OpenFile(src);
        IoUringEngine engine = Engine(file);

        // Simulated RLIMIT_MEMLOCK.
        engine.SimulateBufferRegistrationErrno = 12;
        PmemDevice pmem = Namespace(DescriptorMapKind.Dense);
        DeviceCopyResult r = new DeviceCopy(file, pmem, new DeviceCopyOptions { Size = Size, BlockSize = Bs, FixedBuffers = true, WindowBytes = 1 << 20 }).Run();
        Assert.Equal((Size, 0L, 12), (r.PinnedBytes, r.RegisteredBytes, r.RegistrationErrno));
        Assert.Equal(0, engine.FixedBufferIos);
        Assert.True(Holds(pmem, expected));
        Assert.False(pmem.Pins.AnyPinned);
        engine.SimulateBufferRegistrationErrno = 0;

        // Real: a namespace on ext4 is a shared mapping of a file that tracks dirty pages, which
        // the kernel will not pin long-term (EFAULT).
        PmemDevice onExt4 = Namespace(DescriptorMapKind.None, "/var/tmp");
        r = new DeviceCopy(file, onExt4, new DeviceCopyOptions { Size = Size, BlockSize = Bs, FixedBuffers = true }).Run();
        Assert.Equal((Size, 0L, 14), (r.PinnedBytes, r.RegisteredBytes, r.RegistrationErrno));
        Assert.Equal(0, engine.FixedBufferIos);
        Assert.True(Holds(onExt4, expected));
        Assert.False(onExt4.Pins.AnyPinned);

        // Without asking (the default): every chunk vectored, nothing registered.
        long vectored = engine.VectoredIos;
        r = new DeviceCopy(file, pmem, new DeviceCopyOptions { Size = Size, BlockSize = Bs }).Run();
        Assert.Equal((0L, 0), (r.RegisteredBytes, r.RegistrationErrno));
        Assert.Equal(vectored + Size / Bs, engine.VectoredIos);
    }

    [Fact]
    public void FixedBuffers_TheSourceDisposedMidCopyFailsTheCopyAndLeavesNoPin()
    {
        FileDevice file = OpenFile(RandomFile(Size, 9));
        PmemDevice pmem = Namespace(DescriptorMapKind.Huge);
        IoUringEngine engine = Engine(file);
        var e = Assert.Throws<IOException>(() => new DeviceCopy(file, pmem, new DeviceCopyOptions { Size = Size, BlockSize = Bs, QueueDepth = 4, FixedBuffers = true }).Run(done =>
        {
            // The window is registered and chunks are in flight; the ring and its registrations go.
            if (done == Bs) file.Dispose();
        }));
        Assert.Contains("read of", e.Message);
        Assert.False(pmem.Pins.AnyPinned);
        Assert.False(engine.RingThreadRunning);
        // A destroy is refused while a copy holds the namespace; once it is closed it goes.
        string path = pmem.Namespace.Path;
        Assert.Throws<NamespaceInUseException>(() => PmemNamespace.Destroy(path, force: false));
        pmem.Dispose();
        PmemNamespace.Destroy(path, force: false);
    }

    [Fact]
    public unsafe void FixedBuffers_RegisteredRangesAreLimitedAndEndWithTheRing()
    {
        using var arena = DramArena.Create(17 * Pfn.PageSize);
        FileDevice file = OpenFile(RandomFile(Size, 3));
        IoUringEngine engine = Engine(file);
        byte* at = arena.BaseAddress;
        var ids = new List<int>();
        for (int i = 0; i < IoUringEngine.MaxRanges; i++)
        {
            int id = engine.RegisterRange(at + (long)i * Pfn.PageSize, Pfn.PageSize);
            Assert.True(id >= 0, $"range {i}: errno {-id}");
            ids.Add(id);
        }
        Assert.Equal(-28, engine.RegisterRange(at + 16L * Pfn.PageSize, Pfn.PageSize)); // ENOSPC: every slot in use
        engine.UnregisterRange(ids[3]);
        Assert.Equal(ids[3], engine.RegisterRange(at + 16L * Pfn.PageSize, Pfn.PageSize)); // the slot is reused
        Assert.Equal(-22, engine.RegisterRange(at, (nuint)(1L << 30) + Pfn.PageSize)); // EINVAL: above the kernel's 1 GiB
        Assert.Equal(IoUringEngine.MaxRanges, engine.RegisteredRangeCount);
        file.Dispose();
        Assert.Equal(-108, engine.RegisterRange(at, Pfn.PageSize)); // ESHUTDOWN
        engine.UnregisterRange(ids[0]); // a no-op: the ring took every registration with it

        // An engine without fixed buffers says so.
        using FileDevice threads = FileDevice.Open(RandomFile(Size, 4), new FileDeviceOptions { Engine = FileEngineKind.ThreadPool });
        Assert.Equal(-95, threads.EngineForTests.RegisterRange(at, Pfn.PageSize));
    }
}
