using CsCheck;
using PfnBlock.Block;

namespace PfnBlock.Tests.Block;

/// <summary>
/// bio_chain against a model: a tree of bios (a parent, children, grandchildren), each
/// completing its own submission once, in any order. The root completes exactly once, right
/// after the last completion, with the first error that reached it.
/// </summary>
public sealed class BioChainProperties
{
    private static readonly BlockStatus[] Errors = [BlockStatus.IoError, BlockStatus.Invalid, BlockStatus.NotSupported, BlockStatus.OutOfRange];

    private static readonly Gen<BlockStatus> GenStatus =
        Gen.Frequency((5, Gen.Const(BlockStatus.Ok)), (1, Gen.Int[0, Errors.Length - 1].Select(i => Errors[i])));

    // parents[i] is the parent of node i+1 (node 0 is the root); a node's parent is always earlier.
    private static readonly Gen<(int[] Parents, BlockStatus[] Statuses, int[] Order, bool Pooled)> GenTree =
        Gen.Int[0, 10].SelectMany(children =>
            Gen.Select(
                Gen.Int[0, 1000].Array[children],
                GenStatus.Array[children + 1],
                Gen.Shuffle(Enumerable.Range(0, children + 1).ToArray(), children + 1),
                Gen.Bool,
                (ps, st, order, pooled) => (ps.Select((p, i) => p % (i + 1)).ToArray(), st, order, pooled)));

    [Fact]
    public void ParentCompletesOnceAfterEverythingWithTheFirstError()
    {
        GenTree.Sample(t =>
        {
            int n = t.Parents.Length + 1;
            var pool = new BioPool();
            var bios = new Bio[n];
            bios[0] = new Bio().Init(BioOp.Write, 0);
            for (int i = 1; i < n; i++) bios[i] = t.Pooled ? pool.Rent(BioOp.Write, i) : new Bio().Init(BioOp.Write, i);
            for (int i = 1; i < n; i++) bios[i].Chain(bios[t.Parents[i - 1]]);
            var log = new CompletionLog();
            bios[0].EndIo = log.EndIo;

            // Model: each node waits for itself and its children; a finished child hands its first error up.
            int[] remaining = new int[n];
            var firstError = new BlockStatus[n];
            for (int i = 0; i < n; i++) remaining[i] = 1;
            for (int i = 1; i < n; i++) remaining[t.Parents[i - 1]]++;
            int rootDoneAt = -1;
            void Deliver(int node, BlockStatus s, int step)
            {
                if (s != BlockStatus.Ok && firstError[node] == BlockStatus.Ok) firstError[node] = s;
                if (--remaining[node] > 0) return;
                if (node == 0) rootDoneAt = step;
                else Deliver(t.Parents[node - 1], firstError[node], step);
            }

            for (int step = 0; step < n; step++)
            {
                int node = t.Order[step];
                Deliver(node, t.Statuses[node], step);
                bios[node].Complete(t.Statuses[node]);
                Assert.Equal(rootDoneAt >= 0 ? 1 : 0, log.Of(bios[0]).Count);
            }
            Assert.Equal(n - 1, rootDoneAt); // only the very last completion finishes the root
            Assert.Equal([firstError[0]], log.Of(bios[0]));
            Assert.Equal(firstError[0], bios[0].Status);
        });
    }

    [Fact]
    public void ChildrenCompletingOnManyThreadsCompleteTheParentOnce()
    {
        Gen.Int[1, 64].Sample(children =>
        {
            var parent = new Bio().Init(BioOp.Read, 0);
            var log = new CompletionLog();
            parent.EndIo = log.EndIo;
            var kids = new Bio[children];
            for (int i = 0; i < children; i++) { kids[i] = new Bio().Init(BioOp.Read, i); kids[i].Chain(parent); }
            Parallel.For(0, children + 1, i =>
            {
                if (i == children) parent.Complete(BlockStatus.Ok);
                else kids[i].Complete(i == children / 2 ? BlockStatus.IoError : BlockStatus.Ok);
            });
            Assert.Equal([BlockStatus.IoError], log.Of(parent));
        }, iter: 50);
    }

    [Fact]
    public void ChainRefusesADoubleChainAndAChildWithItsOwnCallback()
    {
        var parent = new Bio().Init(BioOp.Write, 0);
        var other = new Bio().Init(BioOp.Write, 0);
        var child = new Bio().Init(BioOp.Write, 0);
        child.Chain(parent);
        Assert.Throws<InvalidOperationException>(() => child.Chain(other));
        var withCallback = new Bio().Init(BioOp.Write, 0);
        withCallback.EndIo = _ => { };
        Assert.Throws<InvalidOperationException>(() => withCallback.Chain(parent));
    }

    [Fact]
    public void CompletingTwiceIsDetected()
    {
        var bio = new Bio().Init(BioOp.Write, 0);
        var log = new CompletionLog();
        bio.EndIo = log.EndIo;
        bio.Complete(BlockStatus.Ok);
        Assert.Throws<InvalidOperationException>(() => bio.Complete(BlockStatus.Ok));
        Assert.Single(log.Of(bio));
    }

    [Fact]
    public void PooledChildrenGoBackToTheirPool()
    {
        var pool = new BioPool();
        var parent = new Bio().Init(BioOp.Write, 0);
        Bio child = pool.Rent(BioOp.Write, 8);
        child.Chain(parent);
        child.Complete(BlockStatus.Ok);
        Assert.Same(child, pool.Rent()); // returned on completion, handed out again
    }
}
