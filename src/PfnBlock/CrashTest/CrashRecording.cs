using PfnBlock.Memory;

namespace PfnBlock.CrashTest;

/// <summary>
/// What a target's workload records into: it starts tracing on its thread, marks where each
/// operation starts and is acknowledged, and says where the image was mapped while it stored to it.
/// </summary>
public sealed unsafe class CrashRecording
{
    private readonly PmemTraceRecorder? _recorder;
    private readonly byte* _image;

    internal CrashRecording(CrashTrace trace, byte* image, bool record)
    {
        Trace = trace;
        _image = image;
        _recorder = record ? new PmemTraceRecorder() : null;
    }

    /// <summary>The trace being built (markers only when not recording).</summary>
    public CrashTrace Trace { get; }
    /// <summary>False for the untraced timing run: markers are kept, stores are not recorded.</summary>
    public bool IsRecording => _recorder is not null;

    /// <summary>Starts recording this thread's persistence events (the workload's thread); dispose to stop.</summary>
    public PmemTraceScope Start() => _recorder is null ? default : PmemTrace.Record(_recorder);

    /// <summary>
    /// Takes the events recorded since the last capture, which stored to the image through a
    /// mapping at <paramref name="mapping"/> (a namespace the workload opened, say).
    /// </summary>
    public void Capture(byte* mapping)
    {
        if (_recorder is not null && _recorder.Events.Count > 0) Trace.Append(_recorder, mapping);
    }

    /// <summary>Marks a point of the workload (captures pending events as stores to the image itself first); returns the marker's event index.</summary>
    public int Mark(string label)
    {
        Capture(_image);
        return Trace.Mark(label);
    }
}
