using PfnBlock.CrashTest;
using PfnBlock.Memory;
using PfnBlock.Namespaces;

namespace PfnBlock.Tests.CrashTest;

/// <summary>
/// The explorer's x86 persistence model on scripts small enough to enumerate by hand: which crash
/// images it produces at each crash point, exhaustively, and nothing else.
/// </summary>
public sealed unsafe class PersistenceModelTests
{
    private const int Line = 8; // words per cache line

    /// <summary>Explores <paramref name="script"/> with an ample budget; returns the images seen at each crash point, in order.</summary>
    private static (CrashTestResult Result, List<HashSet<string>> Points) Explore(Action<ScriptedTarget> script, int shown = 2, long states = 100_000)
    {
        using var target = new ScriptedTarget(4096, script) { Shown = shown };
        CrashTestResult result = CrashExplorer.Run(target, new CrashTestOptions { States = states });
        Assert.Equal(0, result.InconsistentStates);
        return (result, target.Seen.OrderBy(kv => kv.Key).Select(kv => kv.Value).ToList());
    }

    private static ulong* W(ScriptedTarget t, int word) => (ulong*)t.Image + word;

    [Fact]
    public void StoresToOneLinePersistInProgramOrder()
    {
        (CrashTestResult r, List<HashSet<string>> points) = Explore(t => { PmemStore.Write64(W(t, 0), 1); PmemStore.Write64(W(t, 1), 2); });
        Assert.True(r.Exhaustive);
        Assert.Equal(["0,0", "1,0", "1,2"], points.Single().Order());
    }

    [Fact]
    public void StoresToDifferentLinesPersistInAnyOrder()
    {
        (_, List<HashSet<string>> points) = Explore(t => { PmemStore.Write64(W(t, 0), 1); PmemStore.Write64(W(t, Line), 2); }, shown: Line + 1);
        Assert.Equal(["0,0,0,0,0,0,0,0,0", "0,0,0,0,0,0,0,0,2", "1,0,0,0,0,0,0,0,0", "1,0,0,0,0,0,0,0,2"], points.Single().Order());
    }

    [Fact]
    public void AFlushFollowedByAFenceMakesAStoreDurable()
    {
        (CrashTestResult r, List<HashSet<string>> points) = Explore(t =>
        {
            PmemStore.Write64(W(t, 0), 1);
            PersistentMemory.Flush((byte*)W(t, 0), 8);
            PersistentMemory.Drain();
            PmemStore.Write64(W(t, Line), 2);
        }, shown: Line + 1);
        Assert.Equal(2, r.CrashPoints);
        Assert.Equal(["0,0,0,0,0,0,0,0,0", "1,0,0,0,0,0,0,0,0"], points[0].Order());
        Assert.Equal(["1,0,0,0,0,0,0,0,0", "1,0,0,0,0,0,0,0,2"], points[1].Order());
    }

    [Fact]
    public void AFenceWithoutAFlushOrAFlushWithoutAFenceMakesNothingDurable()
    {
        (_, List<HashSet<string>> fenced) = Explore(t => { PmemStore.Write64(W(t, 0), 1); PersistentMemory.Drain(); }, shown: 1);
        Assert.All(fenced, p => Assert.Equal(["0", "1"], p.Order()));
        (_, List<HashSet<string>> flushed) = Explore(t => { PmemStore.Write64(W(t, 0), 1); PersistentMemory.Flush(t.Image, 8); }, shown: 1);
        Assert.Equal(["0", "1"], flushed.Single().Order());
    }

    [Fact]
    public void StoresWiderThanAWordTearAtWordBoundaries()
    {
        ulong[] two = [1, 2];
        (_, List<HashSet<string>> points) = Explore(t =>
        {
            PmemStore.Copy(t.Image, System.Runtime.InteropServices.MemoryMarshal.AsBytes(two.AsSpan()));
            PmemStore.Write64(W(t, 2), 3);
        }, shown: 3);
        // The copy may land torn; the later store to the same line only after all of it.
        Assert.Equal(["0,0,0", "0,2,0", "1,0,0", "1,2,0", "1,2,3"], points.Single().Order());
    }

    [Fact]
    public void AnAlignedWordNeverTearsButAWordCrossingStoreMay()
    {
        (_, List<HashSet<string>> aligned) = Explore(t => PmemStore.Write64(W(t, 0), 0x1111_1111_2222_2222), shown: 1);
        Assert.Equal(2, aligned.Single().Count);
        byte[] crossing = [1, 1, 1, 1, 1, 1, 1, 1];
        (_, List<HashSet<string>> torn) = Explore(t => PmemStore.Copy(t.Image + 4, crossing), shown: 2);
        const ulong high = 0x0101_0101_0000_0000, low = 0x0101_0101; // the halves in word 0 and word 1
        Assert.Equal(new[] { $"0,0", $"0,{low}", $"{high},0", $"{high},{low}" }.Order(), torn.Single().Order());
    }

    [Fact]
    public void NonTemporalStoresAreUnorderedUntilAFence()
    {
        byte[] source = [.. Enumerable.Range(1, 64).Select(i => (byte)i)];
        (CrashTestResult r, List<HashSet<string>> points) = Explore(t =>
        {
            fixed (byte* s = source) PersistentMemory.CopyNonTemporal(t.Image, s, 64);
            PersistentMemory.Drain();
        }, shown: Line);
        Assert.True(r.Exhaustive);
        Assert.Equal(256, points[0].Count); // each of the line's 8 words landed or not
        Assert.Single(points[1]);
        Assert.Equal(257, r.StatesExplored);
    }

    [Fact]
    public void AnOlderStoreNeverOverwritesANewerDurableOne()
    {
        ulong[] one = [1, 1, 1, 1, 1, 1, 1, 1];
        (_, List<HashSet<string>> points) = Explore(t =>
        {
            fixed (ulong* s = one) PersistentMemory.CopyNonTemporal(t.Image, (byte*)s, 64); // word 0 = 1, streamed, not fenced
            PmemStore.Write64(W(t, 0), 2);
            PersistentMemory.Flush(t.Image, 8);
            PersistentMemory.Drain();
        }, shown: 1);
        Assert.Equal(["0", "1", "2"], points[0].Order());
        Assert.Equal(["2"], points[1].Order());
    }

    [Fact]
    public void AnMsyncIsAFlushOfTheWholePagesAndAFence()
    {
        (_, List<HashSet<string>> points) = Explore(t =>
        {
            PmemStore.Write64(W(t, Line), 1);
            PmemStore.Write64(W(t, 0), 2);
            PmemNamespace.PersistMapped((byte*)W(t, 0), 8, PersistenceMode.Msync);
        }, shown: Line + 1);
        Assert.Equal(4, points[0].Count);
        Assert.Equal(["2,0,0,0,0,0,0,0,1"], points[1].Order());
    }

    [Fact]
    public void ABudgetBelowTheStateCountIsSpreadAndStartsWithTheExtremes()
    {
        byte[] source = [.. Enumerable.Range(1, 64).Select(i => (byte)i)];
        (CrashTestResult r, List<HashSet<string>> points) = Explore(t =>
        {
            fixed (byte* s = source) PersistentMemory.CopyNonTemporal(t.Image, s, 64);
            PersistentMemory.Drain();
        }, shown: Line, states: 10);
        Assert.Equal(10, r.StatesExplored);
        Assert.False(r.Exhaustive);
        Assert.Equal(1, r.ExhaustiveCrashPoints);
        Assert.Equal(9, points[0].Count);
        Assert.Contains("0,0,0,0,0,0,0,0", points[0]);
        Assert.Contains(string.Join(',', Enumerable.Range(0, 8).Select(i => BitConverter.ToUInt64(source, i * 8))), points[0]);
    }

    [Fact]
    public void AStoreThatBypassesTracingIsCaught()
    {
        using var target = new ScriptedTarget(4096, t => *(ulong*)t.Image = 5);
        var e = Assert.Throws<InvalidOperationException>(() => CrashExplorer.Run(target, new CrashTestOptions()));
        Assert.Contains("without a traced store", e.Message);
    }

    [Fact]
    public void RecoveryStoresAreUndoneAfterEachState()
    {
        // Recovery "repairs" word 1 through the traced primitives: no later state may see it.
        using var target = new ScriptedTarget(4096, t => { PmemStore.Write64(W(t, 0), 1); PmemStore.Write64(W(t, Line), 2); },
            t => { PmemStore.Write64(W(t, 1), 99); return null; }) { Shown = 2 };
        CrashTestResult r = CrashExplorer.Run(target, new CrashTestOptions());
        Assert.Equal(4, r.StatesExplored);
        Assert.DoesNotContain(target.Seen.Values.SelectMany(s => s), s => s.EndsWith(",99", StringComparison.Ordinal));

        using var untraced = new ScriptedTarget(4096, t => PmemStore.Write64(W(t, 0), 1), t => { *W(t, 1) = 99; return null; });
        var e = Assert.Throws<InvalidOperationException>(() => CrashExplorer.Run(untraced, new CrashTestOptions()));
        Assert.Contains("recovery changed byte", e.Message);
    }
}
