namespace PfnBlock.CrashTest;

/// <summary>
/// The crash a target's <see cref="ICrashTarget.Verify"/> is asked about: which workload markers
/// happened before it, and a way to declare other mappings of the image its recovery stores through.
/// </summary>
public sealed unsafe class CrashRecoveryContext
{
    private readonly List<nint> _mappings = [];

    internal CrashRecoveryContext(CrashTrace trace) => Trace = trace;

    /// <summary>The trace the crash point indexes.</summary>
    public CrashTrace Trace { get; }
    /// <summary>The crash came after this many events of the trace.</summary>
    public int CrashPoint { get; private set; }
    internal IReadOnlyList<nint> Mappings => _mappings;

    /// <summary>True when the marker at <paramref name="markerIndex"/> (from <see cref="CrashRecording.Mark"/>) was passed before the crash.</summary>
    public bool Happened(int markerIndex) => markerIndex >= 0 && markerIndex < CrashPoint;

    /// <summary>
    /// Recovery opened the image through its own mapping at <paramref name="address"/>; what it stores
    /// there is undone after the check like its stores to <see cref="ICrashTarget.Image"/>.
    /// </summary>
    public void RecoveryMappedAt(byte* address) => _mappings.Add((nint)address);

    internal void Reset(int crashPoint)
    {
        CrashPoint = crashPoint;
        _mappings.Clear();
    }
}
