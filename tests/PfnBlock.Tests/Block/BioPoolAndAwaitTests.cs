using System.Collections.Concurrent;
using PfnBlock.Block;
using PfnBlock.Memory;

namespace PfnBlock.Tests.Block;

/// <summary>The bio pool under concurrency, and awaiting bios that a device completes later on another thread.</summary>
public sealed class BioPoolAndAwaitTests
{
    [Fact]
    public void APoolNeverHandsOutABioThatIsStillInUse()
    {
        var pool = new BioPool();
        var inUse = new ConcurrentDictionary<Bio, int>(ReferenceEqualityComparer.Instance);
        int clashes = 0;
        Parallel.For(0, 4, t =>
        {
            var mine = new Stack<Bio>();
            var rng = new Random(t);
            for (int i = 0; i < 20_000; i++)
            {
                if (mine.Count == 0 || rng.Next(2) == 0)
                {
                    Bio b = pool.Rent(BioOp.Read, i);
                    if (!inUse.TryAdd(b, t)) Interlocked.Increment(ref clashes);
                    mine.Push(b);
                }
                else
                {
                    Bio b = mine.Pop();
                    inUse.TryRemove(b, out _);
                    b.Release();
                }
            }
            while (mine.Count > 0) { Bio b = mine.Pop(); inUse.TryRemove(b, out _); b.Release(); }
        });
        Assert.Equal(0, clashes);
    }

    [Fact]
    public void ARentedBioIsFreshlyInitialised()
    {
        var pool = new BioPool();
        Bio b = pool.Rent(BioOp.Write, 10, BioFlags.Fua).AddVec(new Pfn(3), 0, 512);
        b.EndIo = _ => { };
        b.Private = "x";
        b.Tag = 9;
        b.Complete(BlockStatus.IoError);
        b.Release();
        Bio again = pool.Rent(BioOp.Read, 20);
        Assert.Same(b, again);
        Assert.Equal((BioOp.Read, 20L, BioFlags.None, 0u, 0, BlockStatus.Ok), (again.Op, again.Sector, again.Flags, again.Size, again.VecCount, again.Status));
        Assert.Null(again.EndIo);
        Assert.Null(again.Private);
        Assert.Equal(0, again.Tag);
    }

    [Fact]
    public async Task AwaitingABioCompletedLaterOnAnotherThreadYieldsItsStatusOnce()
    {
        using var device = new DeferredDevice();
        Bio ok = new Bio().Init(BioOp.Write, 0).AddVec(new Pfn(3), 0, 512);
        Bio bad = new Bio().Init(BioOp.Write, 8).AddVec(new Pfn(3), 0, 512);
        ValueTask<BlockStatus> first = device.SubmitAsync(ok);
        ValueTask<BlockStatus> second = device.SubmitAsync(bad);
        Assert.False(first.IsCompleted);
        Assert.False(second.IsCompleted);
        _ = Task.Run(() => device.CompleteAll(b => b.Sector == 8 ? BlockStatus.IoError : BlockStatus.Ok));
        Assert.Equal(BlockStatus.Ok, await first);
        Assert.Equal(BlockStatus.IoError, await second);
        // The same bio can be awaited again after re-initialising it.
        ok.Init(BioOp.Read, 0).AddVec(new Pfn(3), 0, 512);
        ValueTask<BlockStatus> third = device.SubmitAsync(ok);
        _ = Task.Run(() => device.CompleteAll(_ => BlockStatus.Ok));
        Assert.Equal(BlockStatus.Ok, await third);
        Assert.Equal(0, device.Stats.Snapshot().InFlight);
    }

    [Fact]
    public async Task AnInvalidAwaitedBioCompletesSynchronously()
    {
        using var device = new DeferredDevice();
        ValueTask<BlockStatus> t = device.SubmitAsync(new Bio().Init(BioOp.Write, device.CapacitySectors).AddVec(new Pfn(3), 0, 512));
        Assert.True(t.IsCompleted);
        Assert.Equal(BlockStatus.OutOfRange, await t);
    }

    [Fact]
    public void AnAwaitedBioCannotAlsoHaveACallback()
    {
        using var device = new DeferredDevice();
        var bio = new Bio().Init(BioOp.Write, 0).AddVec(new Pfn(3), 0, 512);
        bio.EndIo = _ => { };
        Assert.Throws<InvalidOperationException>(() => device.SubmitAsync(bio));
    }

    [Fact]
    public async Task SubmitAndWaitReturnsEachStatusWhetherTheBioCompletesInlineOrOnAnotherThread()
    {
        // Inline (the device completes inside its submit: the waiter is only noted, never signalled),
        // then a device that completes later on another thread, then inline again with the same bio:
        // each call sees its own status, and a completion on another thread still wakes the waiter.
        using var device = new DeferredDevice { Inline = b => b.Sector == 8 ? BlockStatus.IoError : BlockStatus.Ok };
        Bio bio = new Bio().Init(BioOp.Write, 0).AddVec(new Pfn(3), 0, 512);
        Assert.Equal(BlockStatus.Ok, device.SubmitAndWait(bio));
        bio.Init(BioOp.Write, 8).AddVec(new Pfn(3), 0, 512);
        Assert.Equal(BlockStatus.IoError, device.SubmitAndWait(bio));

        device.Inline = null;
        bio.Init(BioOp.Write, 16).AddVec(new Pfn(3), 0, 512);
        var completer = new Thread(() =>
        {
            while (device.Queued == 0) Thread.Sleep(1);
            device.CompleteAll(_ => BlockStatus.MediaError);
        });
        completer.Start();
        Assert.Equal(BlockStatus.MediaError, device.SubmitAndWait(bio));
        completer.Join();

        device.Inline = _ => BlockStatus.Ok;
        bio.Init(BioOp.Read, 0).AddVec(new Pfn(3), 0, 512);
        Assert.Equal(BlockStatus.Ok, device.SubmitAndWait(bio));
        // ... and an awaited submission after the inline ones is signalled as before.
        device.Inline = null;
        bio.Init(BioOp.Read, 0).AddVec(new Pfn(3), 0, 512);
        ValueTask<BlockStatus> task = device.SubmitAsync(bio);
        Assert.False(task.IsCompleted);
        device.CompleteAll(_ => BlockStatus.IoError);
        Assert.True(task.IsCompleted);
        Assert.Equal(BlockStatus.IoError, await task);
        Assert.Equal(0, device.Stats.Snapshot().InFlight);
    }

    /// <summary>A device that queues bios and completes them when told, from whatever thread calls <see cref="CompleteAll"/>.</summary>
    private sealed class DeferredDevice() : BlockDevice("deferred", null)
    {
        private readonly ConcurrentQueue<Bio> _queue = new();
        public override long CapacitySectors => 1 << 20;
        public override DeviceLimits Limits { get; } = DeviceLimits.Memory();
        public override DeviceFeatures Features => DeviceFeatures.None;
        /// <summary>When set, bios complete inside their submission with the status it gives.</summary>
        public Func<Bio, BlockStatus>? Inline { get; set; }
        public int Queued => _queue.Count;
        protected override void SubmitCore(Bio bio)
        {
            if (Inline is { } inline) bio.Complete(inline(bio));
            else _queue.Enqueue(bio);
        }
        public void CompleteAll(Func<Bio, BlockStatus> status)
        {
            while (_queue.TryDequeue(out Bio? b)) b.Complete(status(b));
        }
    }
}
