namespace PfnBlock.CrashTest;

/// <summary>A store (or the part of one) that reached media in a crash state beyond what the crash point made durable.</summary>
/// <param name="Event">The store's event index in the trace.</param>
/// <param name="Offset">First byte landed, in the image.</param>
/// <param name="Length">Bytes landed.</param>
public readonly record struct LandedStore(int Event, long Offset, int Length)
{
    /// <summary>The form <c>--replay</c> takes: <c>EVENT@HEXOFFSET+LENGTH</c>.</summary>
    public override string ToString() => $"{Event}@{Offset:x}+{Length}";
}

/// <summary>
/// An inconsistent crash state, with what it takes to rebuild it: the workload's seed (and
/// operation count), the crash point, and the stores that landed beyond the durable ones.
/// </summary>
/// <param name="Seed">The workload's seed.</param>
/// <param name="CrashPoint">The crash came after this many trace events.</param>
/// <param name="After">The last workload marker before the crash.</param>
/// <param name="Landed">Optional stores that reached media.</param>
/// <param name="Failure">What recovery or the invariants found.</param>
public sealed record CrashReproducer(int Seed, int CrashPoint, string? After, IReadOnlyList<LandedStore> Landed, string Failure)
{
    /// <summary>The <c>--replay</c> argument that rebuilds this state: <c>CRASHPOINT:STORE,STORE…</c>.</summary>
    public string ReplaySpec => $"{CrashPoint}:{string.Join(',', Landed)}";
}

/// <summary>What a crash-test run found and how long it took.</summary>
public sealed class CrashTestResult
{
    /// <summary>The structure tested.</summary>
    public required string Structure { get; init; }
    /// <summary>The seed.</summary>
    public int Seed { get; init; }
    /// <summary>Operations in the workload.</summary>
    public int Ops { get; init; }
    /// <summary>Events in the trace (stores, flushes, fences, markers).</summary>
    public int TraceEvents { get; init; }
    /// <summary>Atomic store words in the trace.</summary>
    public long StoreWords { get; init; }
    /// <summary>Fences in the trace.</summary>
    public int Fences { get; init; }
    /// <summary>Crash points visited (one per fence, plus the end).</summary>
    public int CrashPoints { get; init; }
    /// <summary>Crash points whose every state was explored.</summary>
    public int ExhaustiveCrashPoints { get; set; }
    /// <summary>Crash states the model allows in all (a double: it can be astronomically large).</summary>
    public double StatesPossible { get; init; }
    /// <summary>Crash states materialised and checked.</summary>
    public long StatesExplored { get; set; }
    /// <summary>States where recovery failed or an invariant did not hold.</summary>
    public long InconsistentStates { get; set; }
    /// <summary>Every allowed state was explored.</summary>
    public bool Exhaustive => ExhaustiveCrashPoints == CrashPoints;
    /// <summary>Seconds to run the workload without recording (after a warm-up run).</summary>
    public double UntracedSeconds { get; init; }
    /// <summary>Seconds to run it while recording the trace.</summary>
    public double RecordSeconds { get; init; }
    /// <summary>Seconds spent exploring (materialising, recovering, checking).</summary>
    public double ExploreSeconds { get; set; }
    /// <summary>States checked per second of exploration.</summary>
    public double StatesPerSecond => ExploreSeconds > 0 ? StatesExplored / ExploreSeconds : 0;
    /// <summary>The first inconsistent states found.</summary>
    public List<CrashReproducer> Reproducers { get; } = [];
}
