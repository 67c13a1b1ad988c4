using System.Runtime.ExceptionServices;
using PfnBlock.Block;
using PfnBlock.Devices.DirectFile;
using PfnBlock.Memory;
using Xunit.Abstractions;

namespace PfnBlock.Tests.Devices.DirectFile;

/// <summary>
/// Drives a device from the calling thread with polled bios (<see cref="BlockPoll"/>): keeps
/// <c>depth</c> bios in flight, waits by polling (or yielding, when nothing polled is out),
/// checks every read against the offset stamps, and records which thread completed each bio.
/// </summary>
internal sealed class PolledDriver
{
    public const int ChunkBytes = 16 << 10;
    private const int FramesPerChunk = ChunkBytes / Pfn.PageSize;

    private readonly IBlockDevice _dev;
    private readonly PhysicalAddressSpace _space;
    private readonly Slot[] _slots;
    private readonly long _chunks;
    private readonly Action<Bio> _endIo;

    public int Errors;
    public int Mismatches;
    public int Completed;
    /// <summary>Polled bios that completed on a thread other than the submitter (0 when the device polled them all).</summary>
    public int PolledElsewhere;
    /// <summary>Unpolled bios that completed on the submitter (0: they went to the ring thread).</summary>
    public int UnpolledHere;
    /// <summary>Called in each bio's completion, on the completing thread.</summary>
    public Action<Bio>? OnEachCompletion;
    /// <summary>The last status other than Ok.</summary>
    public BlockStatus LastError;
    /// <summary>The name of the last thread other than the submitter that completed a polled bio (for failure messages).</summary>
    public string? ElsewhereThread;
    /// <summary>Bios issued with several vectors (the odd slots).</summary>
    public int ScatteredIssued;
    /// <summary>Bios issued with one vector (the even slots).</summary>
    public int SingleIssued;
    private int _owner;

    private sealed class Slot(Bio bio, FrameRun buf, bool polled, bool scattered)
    {
        public readonly Bio Bio = bio;
        public readonly FrameRun Buf = buf;
        public readonly bool Polled = polled;
        public readonly bool Scattered = scattered;
        public long Chunk;
        public int Done;
        public int Thread;
        public bool Busy;
    }

    public PolledDriver(IBlockDevice dev, DramArena arena, int depth, Func<int, bool>? polled = null)
    {
        _dev = dev;
        _space = arena.AddressSpace!;
        _chunks = dev.CapacityBytes / ChunkBytes;
        _endIo = OnComplete;
        _slots = new Slot[depth];
        for (int i = 0; i < depth; i++)
            // Odd slots scatter 4 one-page vectors over every other frame (READV/WRITEV); even
            // slots use one 4-page vector (READ_FIXED/WRITE_FIXED once the arena is registered).
            _slots[i] = new Slot(new Bio(), arena.Allocator.Allocate(2 * FramesPerChunk), polled?.Invoke(i) ?? true, (i & 1) == 1);
    }

    /// <summary>Runs <paramref name="ios"/> I/Os of <paramref name="op"/> on the calling thread (chunk after chunk, wrapping) and waits for all.</summary>
    public void Run(BioOp op, ulong seed, int ios)
    {
        int me = _owner = Environment.CurrentManagedThreadId;
        int next = 0, done = 0;
        while (done < ios)
        {
            foreach (Slot s in _slots)
            {
                if (s.Busy || next >= ios) continue;
                s.Busy = true;
                s.Chunk = next++ % _chunks;
                Start(s, op, seed);
            }
            bool any = false;
            foreach (Slot s in _slots)
            {
                if (!s.Busy || Volatile.Read(ref s.Done) == 0) continue;
                any = true;
                s.Busy = false;
                s.Done = 0;
                done++;
                Completed++;
                if (s.Polled && s.Thread != me) PolledElsewhere++;
                if (!s.Polled && s.Thread == me) UnpolledHere++;
                if (s.Bio.Status != BlockStatus.Ok) { Errors++; LastError = s.Bio.Status; }
                else if (op == BioOp.Read && !Stamps(s, seed, fill: false)) Mismatches++;
            }
            if (!any && !BlockPoll.Poll(wait: true)) Thread.Yield();
        }
    }

    private void Start(Slot s, BioOp op, ulong seed)
    {
        BioFlags flags = s.Polled ? BioFlags.Polled : BioFlags.None;
        Bio bio = s.Bio.Init(op, s.Chunk * ChunkBytes >> Bio.SectorShift, flags);
        if (s.Scattered)
        {
            ScatteredIssued++;
            for (int k = 0; k < FramesPerChunk; k++) bio.AddVec(s.Buf.First.Add((ulong)(2 * k)), 0, Pfn.PageSize);
        }
        else
        {
            SingleIssued++;
            bio.AddVec(s.Buf.First, 0, ChunkBytes);
        }
        bio.Private = s;
        bio.EndIo = _endIo;
        if (op == BioOp.Write) Stamps(s, seed, fill: true);
        _dev.Submit(bio);
    }

    private bool Stamps(Slot s, ulong seed, bool fill) => Stamp.Vectors(_space, s.Bio, s.Chunk * ChunkBytes, seed, fill);

    private void OnComplete(Bio bio)
    {
        var s = (Slot)bio.Private!;
        s.Thread = Environment.CurrentManagedThreadId;
        if (s.Polled && s.Thread != _owner) ElsewhereThread = $"{Thread.CurrentThread.Name ?? "unnamed"} (status {bio.Status})";
        OnEachCompletion?.Invoke(bio);
        Volatile.Write(ref s.Done, 1);
    }
}

/// <summary>
/// Polled bios on the file device's io_uring engine: each polling thread's own ring, completions
/// on the submitter, mixed with unpolled bios, short transfers and retried results on the polled
/// path, refused setup and registrations, back-pressure, and dispose with polled I/O in flight.
/// Every run checks the data read back against what was written.
/// </summary>
public sealed class IoUringPollTests(ITestOutputHelper output)
{
    private FileDevice Open(TestFile f, int depth = 16, bool plainRing = false)
    {
        FileDevice dev = FileDevice.Open(f.Path, new FileDeviceOptions { Engine = FileEngineKind.IoUring, QueueDepth = depth, SimulateNoDeferTaskrun = plainRing });
        output.WriteLine(dev.EngineDescription);
        return dev;
    }

    private static IoUringEngine Engine(FileDevice dev) => (IoUringEngine)dev.EngineForTests;

    /// <summary>Runs <paramref name="body"/> on a dedicated thread (the poller) and rethrows what it threw.</summary>
    private static void OnThread(Action body, string name = "poller")
    {
        Exception? failure = null;
        var t = new Thread(() =>
        {
            try { body(); }
            catch (Exception e) { failure = e; }
        }) { Name = name };
        t.Start();
        Assert.True(t.Join(TimeSpan.FromMinutes(2)), "poller thread hung");
        if (failure is not null) ExceptionDispatchInfo.Capture(failure).Throw();
    }

    private static void Scoped(Action body)
    {
        BlockPoll.Begin();
        try { body(); }
        finally { BlockPoll.End(); }
    }

    [Fact]
    public void Polled_ReadAfterWrite_CompletesOnTheSubmitter_OnItsOwnRing_FixedAndVectored()
    {
        using var file = TestFile.Create(TestFile.Ext4Dir, 4 << 20);
        using var arena = DramArena.Create(4 << 20);
        using FileDevice dev = Open(file);
        IoUringEngine e = Engine(dev);
        Assert.True((dev.Features & DeviceFeatures.Poll) != 0);
        var d = new PolledDriver(dev, arena, depth: 16);
        OnThread(() => Scoped(() =>
        {
            d.Run(BioOp.Write, seed: 3, ios: 400);
            d.Run(BioOp.Read, seed: 3, ios: 400);
            Assert.False(BlockPoll.Poll(wait: true)); // nothing left in flight
        }));
        Assert.Equal(0, d.Errors);
        Assert.Equal(0, d.Mismatches);
        Assert.Equal(0, d.PolledElsewhere);
        Assert.Equal(1, e.PollQueueCount);
        Assert.Equal(1, e.RegisteredBufferCount);
        Assert.True(e.FixedBufferIos > 100, $"{e.FixedBufferIos} fixed"); // the even slots, once registered
        Assert.True(e.VectoredIos >= d.ScatteredIssued, $"{e.VectoredIos} vectored, {d.ScatteredIssued} scattered bios"); // the odd slots' 4 iovecs
        Assert.Contains("own ring (1 open)", dev.EngineDescription);
        Assert.Equal(0, dev.EngineForTests.CallbackFaults);
    }

    [Fact]
    public void PolledAndUnpolled_Mixed_EachCompletesWhereItShould_TwoPollersHaveTwoRings()
    {
        using var file = TestFile.Create(TestFile.Ext4Dir, 4 << 20);
        using var arena = DramArena.Create(8 << 20);
        using FileDevice dev = Open(file, depth: 32);
        var a = new PolledDriver(dev, arena, depth: 8, polled: i => i % 3 != 0);
        var b = new PolledDriver(dev, arena, depth: 8, polled: i => i % 3 != 1);
        // Two pollers at once: a thread's ring is its own, whoever else polls the same device.
        var other = new Thread(() => Scoped(() => { b.Run(BioOp.Write, 5, 256); b.Run(BioOp.Read, 5, 256); })) { Name = "poller-b" };
        other.Start();
        OnThread(() => Scoped(() => { a.Run(BioOp.Write, 5, 256); a.Run(BioOp.Read, 5, 256); }));
        Assert.True(other.Join(TimeSpan.FromMinutes(2)));
        foreach (PolledDriver d in new[] { a, b })
        {
            Assert.Equal(0, d.Errors);
            Assert.Equal(0, d.Mismatches);
            Assert.Equal(0, d.PolledElsewhere);
            Assert.Equal(0, d.UnpolledHere); // those went to the ring thread
        }
        Assert.Equal(2, Engine(dev).PollQueueCount);
    }

    [Fact]
    public void PolledFlag_OutsideAPollingScope_CompletesOnTheRingThread()
    {
        using var file = TestFile.Create(TestFile.Ext4Dir, 1 << 20);
        using var arena = DramArena.Create(1 << 20);
        using FileDevice dev = Open(file);
        var d = new PolledDriver(dev, arena, depth: 4);
        string? completer = null;
        d.OnEachCompletion = _ => completer = Thread.CurrentThread.Name;
        OnThread(() =>
        {
            d.Run(BioOp.Write, 1, 32);
            d.Run(BioOp.Read, 1, 32);
        });
        Assert.Equal(0, d.Errors);
        Assert.Equal(0, d.Mismatches);
        Assert.Equal(d.Completed, d.PolledElsewhere);
        Assert.StartsWith("iou-ring", completer);
        Assert.Equal(0, Engine(dev).PollQueueCount);
    }

    [Theory]
    [InlineData(512)]
    [InlineData(4096)]
    public void Polled_ShortTransfers_ResubmittedOnTheSameRing(int maxTransfer)
    {
        using var file = TestFile.Create(TestFile.Ext4Dir, 1 << 20);
        using var arena = DramArena.Create(2 << 20);
        using FileDevice dev = Open(file);
        dev.EngineForTests.DebugMaxTransfer = maxTransfer;
        var d = new PolledDriver(dev, arena, depth: 8);
        long before = dev.EngineForTests.Accepted;
        OnThread(() => Scoped(() => { d.Run(BioOp.Write, 9, 64); d.Run(BioOp.Read, 9, 64); }));
        Assert.Equal(0, d.Errors);
        Assert.Equal(0, d.Mismatches);
        Assert.Equal(0, d.PolledElsewhere);
        Assert.Equal(128, dev.EngineForTests.Accepted - before);
        IoUringEngine e = Engine(dev);
        // Every 16 KiB bio went out in 16384 / maxTransfer steps.
        Assert.True(e.FixedBufferIos + e.VectoredIos >= 128L * (PolledDriver.ChunkBytes / maxTransfer), $"{e.FixedBufferIos} + {e.VectoredIos}");
    }

    [Theory]
    [InlineData(11, BlockStatus.Ok)]     // EAGAIN: requeued in the ring
    [InlineData(4, BlockStatus.Ok)]      // EINTR: likewise
    [InlineData(5, BlockStatus.IoError)] // EIO: the bio fails, once
    public void Polled_KernelResults_RetriedOrFailed(int errno, BlockStatus expected)
    {
        using var file = TestFile.Create(TestFile.Ext4Dir, 1 << 20);
        using var arena = DramArena.Create(1 << 20);
        using FileDevice dev = Open(file);
        var d = new PolledDriver(dev, arena, depth: 4);
        OnThread(() => Scoped(() => d.Run(BioOp.Write, 2, 16)));
        dev.EngineForTests.DebugInjectErrno = errno;
        dev.EngineForTests.DebugInjectCount = 6;
        OnThread(() => Scoped(() => d.Run(BioOp.Read, 2, 16)));
        Assert.Equal(0, d.Mismatches);
        Assert.Equal(0, d.PolledElsewhere);
        if (expected == BlockStatus.Ok) Assert.Equal(0, d.Errors);
        else
        {
            Assert.Equal(6, d.Errors);
            Assert.Equal(expected, d.LastError);
            Assert.Equal(errno, dev.EngineForTests.LastErrno);
        }
        Assert.Equal(32, d.Completed);
    }

    [Fact]
    public void PollQueueRefused_PolledBiosUseTheSharedRing_AndSaySo()
    {
        using var file = TestFile.Create(TestFile.Ext4Dir, 1 << 20);
        using var arena = DramArena.Create(1 << 20);
        using FileDevice dev = Open(file);
        Engine(dev).SimulatePollQueueErrno = 24; // EMFILE
        var d = new PolledDriver(dev, arena, depth: 4);
        OnThread(() => Scoped(() => { d.Run(BioOp.Write, 4, 32); d.Run(BioOp.Read, 4, 32); }));
        Assert.Equal(0, d.Errors);
        Assert.Equal(0, d.Mismatches);
        Assert.Equal(d.Completed, d.PolledElsewhere);
        Assert.Equal(0, Engine(dev).PollQueueCount);
        Assert.Contains("polled bios on the shared ring (poll queue setup refused", dev.EngineDescription);
    }

    [Fact]
    public void PlainRing_CannotPoll_PolledBiosCompleteOnTheRingThread()
    {
        using var file = TestFile.Create(TestFile.Ext4Dir, 1 << 20);
        using var arena = DramArena.Create(1 << 20);
        using FileDevice dev = Open(file, plainRing: true);
        Assert.Equal(DeviceFeatures.None, dev.Features & DeviceFeatures.Poll);
        var d = new PolledDriver(dev, arena, depth: 4);
        OnThread(() => Scoped(() => { d.Run(BioOp.Write, 6, 32); d.Run(BioOp.Read, 6, 32); }));
        Assert.Equal(0, d.Errors);
        Assert.Equal(0, d.Mismatches);
        Assert.Equal(d.Completed, d.PolledElsewhere);
    }

    [Theory]
    [InlineData(12)] // ENOMEM
    [InlineData(14)] // EFAULT
    public void Polled_BufferRegistrationRefused_StaysVectored_DataCorrect(int errno)
    {
        using var file = TestFile.Create(TestFile.Ext4Dir, 1 << 20);
        using var arena = DramArena.Create(1 << 20);
        using FileDevice dev = Open(file);
        IoUringEngine e = Engine(dev);
        e.SimulateBufferRegistrationErrno = errno;
        var d = new PolledDriver(dev, arena, depth: 4, polled: null);
        OnThread(() => Scoped(() => { d.Run(BioOp.Write, 8, 48); d.Run(BioOp.Read, 8, 48); }));
        Assert.Equal(0, d.Errors);
        Assert.Equal(0, d.Mismatches);
        Assert.Equal(0, d.PolledElsewhere);
        Assert.Equal(0, e.FixedBufferIos);
        Assert.Equal(errno, e.LastBufferRegistrationErrno);
    }

    [Fact]
    public void Polled_ArenaRegisteredOnTheSharedRingFirst_IsMirroredOnThePollersRing_AndDroppedWhenDisposed()
    {
        using var file = TestFile.Create(TestFile.Ext4Dir, 1 << 20);
        using FileDevice dev = Open(file);
        IoUringEngine e = Engine(dev);
        var arena = DramArena.Create(1 << 20);
        var d = new PolledDriver(dev, arena, depth: 2, polled: _ => true);
        OnThread(() => Scoped(() =>
        {
            d.Run(BioOp.Write, 12, 16);
            // The ring thread registers the arena the write pass proposed (it was woken for it).
            Assert.True(SpinWait.SpinUntil(() => e.RegisteredBufferCount == 1, TimeSpan.FromSeconds(10)));
            long fixedBefore = e.FixedBufferIos;
            int singleBefore = d.SingleIssued;
            d.Run(BioOp.Read, 12, 16);
            // Every single-vector read now goes fixed, on the poller's own ring.
            Assert.Equal(d.SingleIssued - singleBefore, e.FixedBufferIos - fixedBefore);
            arena.Dispose();
            // The ring thread drops its pins when it next wakes; this thread's ring follows at its next poll.
            using var keep = DramArena.Create(1 << 20);
            var d2 = new PolledDriver(dev, keep, depth: 2);
            d2.Run(BioOp.Write, 13, 8);
            Assert.True(SpinWait.SpinUntil(() => Volatile.Read(ref e.ReleasedBuffers) == 1, TimeSpan.FromSeconds(10)));
            d2.Run(BioOp.Read, 13, 8);
            Assert.Equal(0, d2.Errors + d2.Mismatches);
            Assert.Equal(1, Volatile.Read(ref e.PollQueueBuffersDropped));
        }));
        Assert.Equal(0, d.Errors);
        Assert.Equal(0, d.Mismatches);
    }

    [Fact]
    public void Polled_MoreBiosThanSlots_SubmitterReapsItsOwnInsteadOfDeadlocking()
    {
        using var file = TestFile.Create(TestFile.Ext4Dir, 2 << 20);
        using var arena = DramArena.Create(4 << 20);
        using FileDevice dev = Open(file, depth: 2);
        var d = new PolledDriver(dev, arena, depth: 12);
        OnThread(() => Scoped(() => { d.Run(BioOp.Write, 14, 96); d.Run(BioOp.Read, 14, 96); }));
        Assert.Equal(0, d.Errors);
        Assert.Equal(0, d.Mismatches);
        Assert.Equal(0, d.PolledElsewhere);
    }

    [Theory]
    [InlineData("other thread")]
    [InlineData("poller itself")]
    [InlineData("polled completion")]
    public void Polled_DisposeWithIoInFlight_EveryBioCompletesOnce_AndPollingStops(string disposer)
    {
        const int bios = 64;
        using var file = TestFile.Create(TestFile.Ext4Dir, 4 << 20);
        using var arena = DramArena.Create(4 << 20);
        FileDevice dev = Open(file, depth: 16);
        var counts = new int[bios];
        var statuses = new BlockStatus[bios];
        int completed = 0;
        bool pollAfterDrain = true;
        using var submitted = new ManualResetEventSlim();
        Action<Bio> endIo = b =>
        {
            int i = (int)b.Tag;
            Interlocked.Increment(ref counts[i]);
            statuses[i] = b.Status;
            Interlocked.Increment(ref completed);
            if (disposer == "polled completion" && i == 3) dev.Dispose();
        };
        var poller = new Thread(() => Scoped(() =>
        {
            for (int i = 0; i < bios; i++)
            {
                FrameRun buf = arena.Allocator.Allocate(1);
                var bio = new Bio().Init(i % 2 == 0 ? BioOp.Write : BioOp.Read, (long)i * 8, BioFlags.Polled).AddVec(buf.First, 0, 4096);
                bio.Tag = i;
                bio.EndIo = endIo;
                dev.Submit(bio);
            }
            submitted.Set();
            if (disposer == "poller itself") dev.Dispose(); // polls its own bios while it waits for the drain
            while (Volatile.Read(ref completed) < bios)
                if (!BlockPoll.Poll(wait: true)) Thread.Yield();
            pollAfterDrain = BlockPoll.Poll(wait: true);
        })) { Name = "poller" };
        poller.Start();
        if (disposer == "other thread")
        {
            submitted.Wait();
            dev.Dispose(); // waits for the poller to reap them
        }
        Assert.True(poller.Join(TimeSpan.FromMinutes(1)), $"only {completed} of {bios} completed");
        dev.Dispose();
        Assert.All(counts, c => Assert.Equal(1, c));
        Assert.All(statuses, s => Assert.True(s is BlockStatus.Ok or BlockStatus.IoError, s.ToString()));
        Assert.Equal(0, dev.EngineForTests.CallbackFaults);
        Assert.Equal(0, dev.EngineForTests.InFlightCount);
        Assert.False(pollAfterDrain);
        // A later polled bio fails at once.
        FrameRun one = arena.Allocator.Allocate(1);
        OnThread(() => Scoped(() =>
        {
            var late = new Bio().Init(BioOp.Read, 0, BioFlags.Polled).AddVec(one.First, 0, 4096);
            Assert.Equal(BlockStatus.IoError, dev.SubmitAndWait(late));
            Assert.False(BlockPoll.Poll(wait: true));
        }));
    }

    [Fact]
    public void DisposeFromTheRingThread_WhilePolledIoIsOut_RingThreadStopsOnceThePollerDrains()
    {
        const int bios = 8;
        using var file = TestFile.Create(TestFile.Ext4Dir, 1 << 20);
        using var arena = DramArena.Create(1 << 20);
        FileDevice dev = Open(file, depth: 16);
        IoUringEngine e = Engine(dev);
        var counts = new int[bios];
        int ok = 0;
        using var submitted = new ManualResetEventSlim();
        using var disposed = new ManualResetEventSlim();
        Action<Bio> endIo = b =>
        {
            Interlocked.Increment(ref counts[(int)b.Tag]);
            if (b.Status == BlockStatus.Ok) Interlocked.Increment(ref ok);
        };
        var poller = new Thread(() => Scoped(() =>
        {
            for (int i = 0; i < bios; i++)
            {
                FrameRun buf = arena.Allocator.Allocate(1);
                var bio = new Bio().Init(BioOp.Write, i * 8L, BioFlags.Polled).AddVec(buf.First, 0, 4096);
                bio.Tag = i;
                bio.EndIo = endIo;
                dev.Submit(bio);
            }
            submitted.Set();
            // Not polling until the ring thread has disposed the device: the drain it waits for is ours.
            disposed.Wait();
            while (counts.Sum() < bios)
                if (!BlockPoll.Poll(wait: true)) Thread.Yield();
        })) { Name = "poller" };
        poller.Start();
        submitted.Wait();
        FrameRun one = arena.Allocator.Allocate(1);
        var trigger = new Bio().Init(BioOp.Read, 64, BioFlags.None).AddVec(one.First, 0, 4096);
        string? disposer = null;
        trigger.EndIo = _ =>
        {
            disposer = Thread.CurrentThread.Name;
            dev.Dispose(); // on the ring thread: it tears down after the drain, once woken
            disposed.Set();
        };
        dev.Submit(trigger);
        Assert.True(poller.Join(TimeSpan.FromMinutes(1)));
        Assert.StartsWith("iou-ring", disposer);
        Assert.All(counts, c => Assert.Equal(1, c));
        Assert.Equal(bios, ok); // accepted before the close: they all ran
        Assert.True(SpinWait.SpinUntil(() => !e.RingThreadRunning, TimeSpan.FromSeconds(10)), "the ring thread kept sleeping after the drain");
        dev.Dispose();
    }

    [Fact]
    public void BlockPoll_Scope_EndWithoutBegin_Throws_AndPollWithNothingPolledReturnsFalse()
    {
        OnThread(() =>
        {
            Assert.False(BlockPoll.IsPolling);
            Assert.Throws<InvalidOperationException>(BlockPoll.End);
            Assert.False(BlockPoll.Poll(wait: true));
            BlockPoll.Begin();
            BlockPoll.Begin();
            Assert.True(BlockPoll.IsPolling);
            BlockPoll.End();
            Assert.True(BlockPoll.IsPolling);
            BlockPoll.End();
            Assert.False(BlockPoll.IsPolling);
        });
    }
}
