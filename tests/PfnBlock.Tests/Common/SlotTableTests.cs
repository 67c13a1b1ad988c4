using PfnBlock.Common;

namespace PfnBlock.Tests.Common;

/// <summary><see cref="SlotTable"/>: a claimed slot has one holder, scans see published values, nothing allocates.</summary>
public sealed class SlotTableTests
{
    [Fact]
    public void NoTwoThreadsHoldTheSameSlot()
    {
        // More threads than slots, so claims collide and take the slow path.
        var table = new SlotTable(2);
        int[] holder = new int[table.Count];
        int violations = 0;
        Thread[] threads = new Thread[4];
        for (int t = 0; t < threads.Length; t++)
        {
            int me = t + 1;
            threads[t] = new Thread(() =>
            {
                for (int i = 0; i < 20_000; i++)
                {
                    int slot = table.Claim(me);
                    if (Interlocked.Exchange(ref holder[slot], me) != 0) Interlocked.Increment(ref violations);
                    if (table.Read(slot) != me) Interlocked.Increment(ref violations);
                    table.Publish(slot, me + 100);
                    if (table.Read(slot) != me + 100) Interlocked.Increment(ref violations);
                    if (Interlocked.Exchange(ref holder[slot], 0) != me) Interlocked.Increment(ref violations);
                    table.Release(slot);
                }
            });
            threads[t].Start();
        }
        foreach (Thread t in threads) t.Join();
        Assert.Equal(0, violations);
        for (int s = 0; s < table.Count; s++) Assert.Equal(SlotTable.Free, table.Read(s));
    }

    [Fact]
    public void TryClaimFailsOnlyWhenEverySlotIsTaken()
    {
        var table = new SlotTable(3);
        var taken = new HashSet<int>();
        for (int i = 0; i < 3; i++)
        {
            Assert.True(table.TryClaim(10 + i, out int slot));
            Assert.True(taken.Add(slot));
            Assert.Equal(10 + i, table.Read(slot));
        }
        Assert.False(table.TryClaim(99, out int none));
        Assert.Equal(-1, none);
        int freed = taken.First();
        table.Release(freed);
        Assert.True(table.TryClaim(99, out int again));
        Assert.Equal(freed, again);
    }

    [Fact]
    public void WaitWhilePublishedReturnsOnlyOnceTheValueIsGone()
    {
        var table = new SlotTable(4);
        int slot = table.Claim(42);
        int other = table.Claim(7);
        using var waiting = new ManualResetEventSlim();
        var waiter = new Thread(() => { table.WaitWhilePublished(42); waiting.Set(); });
        waiter.Start();
        Assert.False(waiting.Wait(200));
        table.Publish(slot, 43); // republishing another value ends the wait too
        Assert.True(waiting.Wait(TimeSpan.FromSeconds(30)));
        waiter.Join();
        table.WaitWhilePublished(8); // nothing holds it: returns at once
        table.Release(slot);
        table.Release(other);
    }

    [Fact]
    public void ClaimPublishAndReleaseAllocateNothing()
    {
        var table = new SlotTable(8);
        for (int i = 0; i < 100; i++) table.Release(table.Claim(1)); // warm up (tiering)
        long before = GC.GetAllocatedBytesForCurrentThread();
        for (int i = 1; i <= 10_000; i++)
        {
            int slot = table.Claim(i);
            table.Publish(slot, i + 1);
            table.Release(slot);
        }
        Assert.Equal(before, GC.GetAllocatedBytesForCurrentThread());
    }

    [Fact]
    public void ATableHasAtLeastOneSlot() => Assert.Throws<ArgumentOutOfRangeException>(() => new SlotTable(0));
}
