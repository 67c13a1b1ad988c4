namespace PfnBlock.Memory;

/// <summary>
/// An ordered record of the stores, cache-line flushes and fences the persistence primitives
/// (<see cref="PersistentMemory"/>, <see cref="PmemStore"/>, the msync path) made while it was
/// active on a thread (<see cref="PmemTrace.Record"/>): the input of the crash-state explorer.
/// </summary>
/// <remarks>
/// Optionally limited to one address range (a region): stores and flushes elsewhere are ignored,
/// fences are always kept (a fence orders everything). Each store keeps a copy of the bytes it left
/// in memory, so the trace can be replayed onto an older image.
/// </remarks>
public sealed unsafe class PmemTraceRecorder
{
    private readonly nint _start;
    private readonly nint _end;
    private readonly List<PmemTraceEvent> _events = [];
    private byte[] _data = new byte[1 << 16];
    private int _dataLength;

    /// <summary>Records every event of the thread it is active on, wherever it lands.</summary>
    public PmemTraceRecorder()
    {
        _start = 0;
        _end = nint.MaxValue;
    }

    /// <summary>Records only stores and flushes within <paramref name="length"/> bytes at <paramref name="start"/> (and every fence).</summary>
    public PmemTraceRecorder(byte* start, long length)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(length);
        _start = (nint)start;
        _end = (nint)start + (nint)length;
    }

    /// <summary>The events so far, in program order.</summary>
    public IReadOnlyList<PmemTraceEvent> Events => _events;

    /// <summary>The bytes a store event left in memory.</summary>
    public ReadOnlySpan<byte> Data(in PmemTraceEvent e) =>
        e.DataOffset < 0 ? default : new ReadOnlySpan<byte>(_data, e.DataOffset, e.Length);

    /// <summary>Forgets every event (the buffers are kept for reuse).</summary>
    public void Clear()
    {
        _events.Clear();
        _dataLength = 0;
    }

    internal void Store(byte* address, nuint length, bool nonTemporal)
    {
        if (!Clip(ref address, ref length)) return;
        if ((ulong)_dataLength + length > (ulong)Array.MaxLength) throw new InvalidOperationException($"the trace is full: {_dataLength} bytes recorded, a store of {length} more does not fit");
        int n = (int)length;
        if (_dataLength + n > _data.Length) Array.Resize(ref _data, (int)Math.Min(Array.MaxLength, Math.Max(2L * _data.Length, _dataLength + n)));
        new ReadOnlySpan<byte>(address, n).CopyTo(_data.AsSpan(_dataLength));
        _events.Add(new PmemTraceEvent(nonTemporal ? PmemTraceKind.NonTemporalStore : PmemTraceKind.Store, (nint)address, n, _dataLength));
        _dataLength += n;
    }

    internal void Flush(byte* address, nuint length)
    {
        if (!Clip(ref address, ref length)) return;
        _events.Add(new PmemTraceEvent(PmemTraceKind.Flush, (nint)address, (int)Math.Min(length, int.MaxValue), -1));
    }

    internal void Fence() => _events.Add(new PmemTraceEvent(PmemTraceKind.Fence, 0, 0, -1));

    /// <summary>Limits [address, address+length) to the recorded range; false when nothing is left.</summary>
    private bool Clip(ref byte* address, ref nuint length)
    {
        nint lo = Math.Max((nint)address, _start);
        nint hi = (nint)Math.Min((nuint)address + length, (nuint)_end);
        if (length == 0 || hi <= lo) return false;
        address = (byte*)lo;
        length = (nuint)(hi - lo);
        return true;
    }
}
