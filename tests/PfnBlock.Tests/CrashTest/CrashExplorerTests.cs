using PfnBlock.CrashTest;
using PfnBlock.Namespaces;
using Xunit.Abstractions;

namespace PfnBlock.Tests.CrashTest;

/// <summary>
/// The crash-state explorer over every structure that has a target: at least 10 000 crash states
/// each with no inconsistency; and, with an ordering bug switched on, inconsistent states it
/// reports, whose reproducers rebuild the failure.
/// </summary>
public sealed class CrashExplorerTests(ITestOutputHelper output)
{
    private CrashTestResult Explore(string structure, CrashTestOptions options)
    {
        using ICrashTarget target = CrashTargets.Create(structure, options);
        CrashTestResult r = CrashExplorer.Run(target, options);
        output.WriteLine($"{structure} seed {r.Seed} ops {r.Ops}: {r.StatesExplored} states ({r.ExhaustiveCrashPoints}/{r.CrashPoints} crash points exhaustive), "
            + $"{r.InconsistentStates} inconsistent, {r.ExploreSeconds:F1} s ({r.StatesPerSecond:F0}/s)");
        foreach (CrashReproducer p in r.Reproducers.Take(3)) output.WriteLine($"  at {p.CrashPoint} after '{p.After}': {p.Failure}");
        return r;
    }

    [Theory]
    [InlineData("btt", 120)]
    [InlineData("namespace", 16)]
    [InlineData("descriptors", 12)]
    public void EveryStructureSurvivesTenThousandCrashStates(string structure, int ops)
    {
        CrashTestResult r = Explore(structure, new CrashTestOptions { Ops = ops, States = 10_000, Seed = 13 });
        Assert.Equal(10_000, r.StatesExplored);
        Assert.True(r.StatesPossible > r.StatesExplored);
        Assert.InRange(r.ExhaustiveCrashPoints, 1, r.CrashPoints - 1);
        Assert.Equal(0, r.InconsistentStates);
        Assert.Empty(r.Reproducers);
    }

    [Theory]
    [InlineData("btt", 10, OrderingMutation.BttSkipFlogFence)]
    [InlineData("btt", 10, OrderingMutation.BttFlogSeqBeforeEntry)]
    [InlineData("btt", 10, OrderingMutation.BttMapBeforeData)]
    [InlineData("namespace", 2, OrderingMutation.NamespaceInfoBeforeLayout)]
    [InlineData("namespace", 4, OrderingMutation.NamespaceBadBlocksOneFlush)]
    [InlineData("descriptors", 6, OrderingMutation.DescriptorReserveTrusted)]
    internal void ABrokenOrderingIsReportedWithReproducersThatReplay(string structure, int ops, OrderingMutation mutation)
    {
        // The same workload without the mutation is consistent, so what is found is the mutation's doing.
        // (Seed 2's namespace workload creates a sector namespace, whose BTT the mutation lays out late.)
        var options = new CrashTestOptions { Ops = ops, States = 1500, Seed = 2 };
        Assert.Equal(0, Explore(structure, options).InconsistentStates);

        CrashTestResult broken = Explore(structure, options with { Mutation = mutation });
        Assert.True(broken.InconsistentStates > 0, $"{mutation} went unnoticed");
        Assert.Equal(Math.Min(broken.InconsistentStates, options.MaxReproducers), broken.Reproducers.Count);
        using ICrashTarget target = CrashTargets.Create(structure, options with { Mutation = mutation });
        foreach (CrashReproducer p in broken.Reproducers.Take(3))
        {
            (int point, List<LandedStore> landed) = CrashExplorer.ParseReplay(p.ReplaySpec);
            Assert.NotNull(CrashExplorer.Replay(target, point, landed));
        }
    }

    [Fact]
    public void ABttReproducerNamesTheLandedStoresThatBreakIt()
    {
        var options = new CrashTestOptions { Ops = 4, States = 500, Seed = 2, Mutation = OrderingMutation.BttSkipFlogFence };
        CrashTestResult r = Explore("btt", options);
        Assert.NotEmpty(r.Reproducers);
        CrashReproducer p = r.Reproducers[0];
        Assert.Contains("check:", p.Failure);
        Assert.NotEmpty(p.Landed);
        using ICrashTarget target = CrashTargets.Create("btt", options);
        // The failure needs the stores it lists: without them the same crash point is consistent.
        Assert.Equal(p.Failure, CrashExplorer.Replay(target, p.CrashPoint, p.Landed));
        Assert.Null(CrashExplorer.Replay(target, p.CrashPoint, []));
    }

    [Fact]
    public void AReplaySpecRoundTripsAndBadOnesAreRefused()
    {
        var p = new CrashReproducer(1, 42, null, [new LandedStore(7, 0xff7000, 4), new LandedStore(9, 0x10, 8)], "x");
        (int point, List<LandedStore> landed) = CrashExplorer.ParseReplay(p.ReplaySpec);
        Assert.Equal(42, point);
        Assert.Equal(p.Landed, landed);
        Assert.Throws<FormatException>(() => CrashExplorer.ParseReplay("x:1@2+3"));
        Assert.Throws<FormatException>(() => CrashExplorer.ParseReplay("5:1@zz+3"));
        using ICrashTarget target = CrashTargets.Create("btt", new CrashTestOptions { Ops = 2 });
        Assert.Throws<ArgumentException>(() => CrashExplorer.Replay(target, 1, []));
    }

    [Fact]
    public void StructuresWithoutATargetYetAreNamedAsSuch()
    {
        foreach (string planned in new[] { "writecache", "journal", "bitmap" })
            Assert.Contains("not in the tree", Assert.Throws<NotSupportedException>(() => CrashTargets.Create(planned, new CrashTestOptions())).Message);
        Assert.Throws<ArgumentException>(() => CrashTargets.Create("nonsense", new CrashTestOptions()));
        Assert.Equal(["btt", "descriptors", "namespace"], CrashTargets.Available.Order());
    }
}
