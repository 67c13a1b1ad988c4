using PfnBlock.Namespaces;

namespace PfnBlock.CrashTest;

/// <summary>How a crash test runs: the workload (operations, seed) and the exploration budget.</summary>
public sealed record CrashTestOptions
{
    /// <summary>Operations in the workload.</summary>
    public int Ops { get; init; } = 100;
    /// <summary>Crash states to explore: every state when the model allows no more, else this many, spread over the crash points.</summary>
    public long States { get; init; } = 10_000;
    /// <summary>Seeds the workload and the sampling.</summary>
    public int Seed { get; init; } = 1;
    /// <summary>Directory for targets whose image is a file (a namespace): tmpfs by default.</summary>
    public string Directory { get; init; } = System.IO.Directory.Exists("/dev/shm") ? "/dev/shm" : Path.GetTempPath();
    /// <summary>Reproducers kept (all inconsistent states are counted).</summary>
    public int MaxReproducers { get; init; } = 10;
    /// <summary>A deliberate ordering bug in the structure under test (mutation tests).</summary>
    internal OrderingMutation Mutation { get; init; }
}
