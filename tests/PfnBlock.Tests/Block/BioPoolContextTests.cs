using PfnBlock.Block;

namespace PfnBlock.Tests.Block;

/// <summary>Per-bio driver context, bounded pools and leak tracking.</summary>
public sealed class BioPoolContextTests
{
    private sealed class Slot(Bio bio, int index)
    {
        public readonly Bio Bio = bio;
        public readonly int Index = index;
        public long Uses;
    }

    [Fact]
    public void EachBioGetsItsContextOnceForItsWholeLife()
    {
        int made = 0;
        var pool = new BioPool(new BioPoolOptions { Context = b => new Slot(b, made++) });
        var seen = new HashSet<Slot>();
        for (int round = 0; round < 100; round++)
        {
            Bio a = pool.Rent(BioOp.Read, round), b = pool.Rent(BioOp.Write, round);
            Slot sa = a.ContextAs<Slot>(), sb = b.ContextAs<Slot>();
            Assert.Same(a, sa.Bio);
            Assert.NotSame(sa, sb);
            sa.Uses++;
            seen.Add(sa);
            seen.Add(sb);
            a.Release();
            b.Release();
        }
        Assert.Equal(made, seen.Count);
        Assert.True(made <= 4, $"{made} contexts made for 2 bios in use at a time");
        Assert.Null(BioPool.Shared.Rent().Context);
    }

    [Fact]
    public void ABoundedPoolRefusesWhenEveryBioIsOut()
    {
        var pool = new BioPool(new BioPoolOptions { Capacity = 3, Name = "slots" });
        var out3 = new List<Bio>();
        for (int i = 0; i < 3; i++) { Assert.True(pool.TryRent(out Bio? b)); out3.Add(b!); }
        Assert.False(pool.TryRent(out _));
        Assert.Contains("'slots' is exhausted", Assert.Throws<InvalidOperationException>(() => pool.Rent()).Message);
        Assert.Equal(3, pool.Outstanding);
        out3[1].Release();
        Assert.True(pool.TryRent(out Bio? again));
        Assert.Same(out3[1], again);
        Assert.Equal(3, pool.Created);
    }

    [Fact]
    public void LeakTrackingNamesWhoKeptABio()
    {
        var pool = new BioPool(new BioPoolOptions { TrackLeaks = true });
        Bio kept = pool.Rent();
        pool.Rent().Release();
        Assert.Contains(nameof(LeakTrackingNamesWhoKeptABio), Assert.Single(pool.OutstandingRenters()));
        kept.Release();
        Assert.Empty(pool.OutstandingRenters());
        Assert.Equal(0, pool.Outstanding);
    }

    [Fact]
    public void AThreadUsingManyPoolsReturnsEachBioToItsOwnPool()
    {
        var pools = Enumerable.Range(0, 9).Select(i => new BioPool(new BioPoolOptions { Context = _ => i })).ToArray();
        var rng = new Random(5);
        var held = new List<Bio>();
        for (int step = 0; step < 5000; step++)
        {
            if (held.Count > 0 && rng.Next(2) == 0)
            {
                int k = rng.Next(held.Count);
                held[k].Release();
                held.RemoveAt(k);
            }
            else
            {
                int p = rng.Next(pools.Length);
                Bio b = pools[p].Rent();
                Assert.Equal(p, (int)b.Context!);
                held.Add(b);
            }
        }
        foreach (Bio b in held) b.Release();
        Assert.All(pools, p => Assert.Equal(0, p.Outstanding));
    }
}
