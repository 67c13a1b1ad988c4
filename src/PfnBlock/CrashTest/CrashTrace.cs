using PfnBlock.Memory;

namespace PfnBlock.CrashTest;

/// <summary>
/// The recorded history of one workload over a structure's image: stores (with the bytes they
/// left), cache-line flushes and fences in program order, interleaved with the workload's markers
/// (operation started, operation acknowledged). Offsets are relative to the image.
/// </summary>
public sealed class CrashTrace
{
    private readonly List<CrashEvent> _events = [];
    private readonly List<string> _labels = [];
    private byte[] _data = new byte[1 << 16];
    private int _dataLength;

    /// <summary>An empty trace over an image of <paramref name="imageLength"/> bytes.</summary>
    public CrashTrace(long imageLength)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(imageLength);
        ImageLength = imageLength;
    }

    /// <summary>Bytes in the image the offsets refer to.</summary>
    public long ImageLength { get; }
    /// <summary>Events recorded.</summary>
    public int Count => _events.Count;
    /// <summary>The <paramref name="index"/>-th event.</summary>
    public CrashEvent this[int index] => _events[index];

    /// <summary>The bytes a store event left.</summary>
    public ReadOnlySpan<byte> Data(in CrashEvent e) =>
        e.Kind is CrashEventKind.Store or CrashEventKind.NonTemporalStore ? _data.AsSpan(e.Data, e.Length) : default;

    internal ReadOnlySpan<byte> Bytes(int offset, int length) => _data.AsSpan(offset, length);

    /// <summary>The label of a marker event.</summary>
    public string Label(in CrashEvent e) => e.Kind == CrashEventKind.Marker ? _labels[e.Data] : "";

    /// <summary>Events of a kind.</summary>
    public int CountOf(CrashEventKind kind) => _events.Count(e => e.Kind == kind);

    /// <summary>Appends a marker; returns its event index, which a target compares with a crash point.</summary>
    public int Mark(string label)
    {
        _labels.Add(label);
        _events.Add(new CrashEvent(CrashEventKind.Marker, 0, 0, _labels.Count - 1));
        return _events.Count - 1;
    }

    /// <summary>The label of the last marker before event <paramref name="index"/>, if any.</summary>
    public string? LastLabelBefore(int index)
    {
        for (int i = Math.Min(index, _events.Count) - 1; i >= 0; i--)
            if (_events[i].Kind == CrashEventKind.Marker) return _labels[_events[i].Data];
        return null;
    }

    /// <summary>
    /// Appends a recorder's events, translating addresses within the image mapped at
    /// <paramref name="mapping"/> into offsets; stores and flushes elsewhere are dropped, fences kept.
    /// </summary>
    internal unsafe void Append(PmemTraceRecorder recorder, byte* mapping)
    {
        nint lo = (nint)mapping, hi = (nint)mapping + (nint)ImageLength;
        foreach (PmemTraceEvent e in recorder.Events)
        {
            if (e.Kind == PmemTraceKind.Fence) { _events.Add(new CrashEvent(CrashEventKind.Fence, 0, 0, -1)); continue; }
            nint start = Math.Max(e.Address, lo), end = Math.Min(e.Address + e.Length, hi);
            if (end <= start) continue;
            int length = (int)(end - start);
            long offset = start - lo;
            if (e.Kind == PmemTraceKind.Flush) { _events.Add(new CrashEvent(CrashEventKind.Flush, offset, length, -1)); continue; }
            ReadOnlySpan<byte> bytes = recorder.Data(e).Slice((int)(start - e.Address), length);
            if ((long)_dataLength + length > Array.MaxLength) throw new InvalidOperationException($"the trace is full at {_dataLength} bytes of stores; use fewer operations");
            if (_dataLength + length > _data.Length) Array.Resize(ref _data, (int)Math.Min(Array.MaxLength, Math.Max(2L * _data.Length, _dataLength + length)));
            bytes.CopyTo(_data.AsSpan(_dataLength));
            CrashEventKind kind = e.Kind == PmemTraceKind.NonTemporalStore ? CrashEventKind.NonTemporalStore : CrashEventKind.Store;
            _events.Add(new CrashEvent(kind, offset, length, _dataLength));
            _dataLength += length;
        }
        recorder.Clear();
    }
}
