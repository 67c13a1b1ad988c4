using PfnBlock.Memory;

namespace PfnBlock.Tests.Memory;

/// <summary>The frame mempool: its reserve survives memory pressure, the surplus goes back, waiters get runs, leaks are named.</summary>
public sealed class FramePoolTests
{
    [Fact]
    public void TheReserveIsThereWhenTheArenaIsExhausted()
    {
        using var arena = DramArena.Create(64 * Pfn.PageSize);
        using var pool = new FramePool(arena.Allocator, framesPerRun: 4, reserve: 3, "parity");
        Assert.Equal(64 - 12, arena.Allocator.FreeFrames);
        // Something else takes every free frame: the pool still has its reserve.
        var hog = new List<FrameRun>();
        while (arena.Allocator.TryAllocate(1, 1, out FrameRun r)) hog.Add(r);
        var runs = new List<FrameRun>();
        for (int i = 0; i < 3; i++)
        {
            Assert.True(pool.TryRent(out FrameRun run));
            Assert.Equal(4, run.Frames);
            runs.Add(run);
        }
        Assert.False(pool.TryRent(out _));
        Assert.Equal(3, pool.Outstanding);
        foreach (FrameRun r in runs) pool.Return(r);
        Assert.Equal(3, pool.Available);
        Assert.Equal(0, pool.Outstanding);
        foreach (FrameRun r in hog) arena.Allocator.Free(r);
    }

    [Fact]
    public void RunsBeyondTheReserveAreBorrowedAndGivenBack()
    {
        using var arena = DramArena.Create(64 * Pfn.PageSize);
        using var pool = new FramePool(arena.Allocator, 2, 2);
        var runs = new List<FrameRun>();
        for (int i = 0; i < 10; i++) { Assert.True(pool.TryRent(out FrameRun r)); runs.Add(r); }
        Assert.Equal(64 - 20, arena.Allocator.FreeFrames);
        foreach (FrameRun r in runs) pool.Return(r);
        Assert.Equal(2, pool.Available);
        Assert.Equal(64 - 4, arena.Allocator.FreeFrames); // only the reserve stays out of the arena
        Assert.Throws<ArgumentException>(() => pool.Return(new FrameRun(arena.PfnAt(0), 3)));
    }

    [Fact]
    public void AWaiterGetsTheNextRunThatComesBack()
    {
        using var arena = DramArena.Create(4 * Pfn.PageSize);
        using var pool = new FramePool(arena.Allocator, 4, 1);
        FrameRun held = pool.Rent(TimeSpan.FromSeconds(1));
        FrameRun got = default;
        var waiter = new Thread(() => got = pool.Rent(TimeSpan.FromSeconds(60)));
        waiter.Start();
        Assert.False(waiter.Join(100));
        pool.Return(held);
        Assert.True(waiter.Join(TimeSpan.FromSeconds(30)));
        Assert.Equal(held.First, got.First);
        Assert.Throws<TimeoutException>(() => pool.Rent(TimeSpan.FromMilliseconds(50)));
    }

    [Fact]
    public void ManyThreadsShareASmallReserveWithoutLosingRuns()
    {
        using var arena = DramArena.Create(8 * Pfn.PageSize);
        using var pool = new FramePool(arena.Allocator, 1, 8);
        Parallel.For(0, 8, _ =>
        {
            for (int i = 0; i < 2000; i++)
            {
                FrameRun r = pool.Rent(TimeSpan.FromSeconds(10));
                arena.AddressSpace!.KmapSpan(r.First, 0, 8).Fill((byte)i);
                pool.Return(r);
            }
        });
        Assert.Equal(0, pool.Outstanding);
        Assert.Equal(8, pool.Available);
    }

    [Fact]
    public void LeakTrackingNamesWhoKeptARun()
    {
        using var arena = DramArena.Create(16 * Pfn.PageSize);
        using var pool = new FramePool(arena.Allocator, 1, 2, trackLeaks: true);
        Assert.True(pool.TryRent(out FrameRun kept));
        Assert.True(pool.TryRent(out FrameRun back));
        pool.Return(back);
        string renter = Assert.Single(pool.OutstandingRenters());
        Assert.Contains(nameof(LeakTrackingNamesWhoKeptARun), renter);
        pool.Return(kept);
        Assert.Empty(pool.OutstandingRenters());
    }

    [Fact]
    public void AReserveTheArenaCannotHoldIsRefusedWithoutLeaking()
    {
        using var arena = DramArena.Create(8 * Pfn.PageSize);
        Assert.Throws<OutOfMemoryException>(() => new FramePool(arena.Allocator, 4, 3));
        Assert.Equal(8, arena.Allocator.FreeFrames);
    }

    [Fact]
    public void RentingAndReturningAllocatesNothing()
    {
        using var arena = DramArena.Create(64 * Pfn.PageSize);
        using var pool = new FramePool(arena.Allocator, 2, 4);
        void Cycle(int n)
        {
            for (int i = 0; i < n; i++)
            {
                Assert.True(pool.TryRent(out FrameRun a));
                Assert.True(pool.TryRent(out FrameRun b));
                pool.Return(b);
                pool.Return(a);
            }
        }
        Cycle(1000);
        // The least of a few rounds: a tier-up of the JIT can land inside one round and allocate on
        // this thread (6776 bytes once in CI); a real allocation per rent would show in every round.
        long least = long.MaxValue;
        for (int round = 0; round < 5 && least > 0; round++)
        {
            long before = GC.GetAllocatedBytesForCurrentThread();
            Cycle(100_000);
            least = Math.Min(least, GC.GetAllocatedBytesForCurrentThread() - before);
        }
        Assert.Equal(0, least);
    }
}
