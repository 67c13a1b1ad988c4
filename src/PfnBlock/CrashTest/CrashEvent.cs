namespace PfnBlock.CrashTest;

/// <summary>What a <see cref="CrashEvent"/> is.</summary>
public enum CrashEventKind : byte
{
    /// <summary>Ordinary (temporal) stores.</summary>
    Store,
    /// <summary>Non-temporal (streaming) stores.</summary>
    NonTemporalStore,
    /// <summary>A write-back of the cache lines overlapping the range (CLWB or the msync of a page range).</summary>
    Flush,
    /// <summary>A store fence.</summary>
    Fence,
    /// <summary>A workload marker (an operation started or was acknowledged); no memory effect.</summary>
    Marker,
}

/// <summary>
/// One event of a <see cref="CrashTrace"/>, with its address turned into an offset in the
/// structure's image.
/// </summary>
/// <param name="Kind">What happened.</param>
/// <param name="Offset">First byte stored or flushed, from the start of the image.</param>
/// <param name="Length">Bytes stored or flushed.</param>
/// <param name="Data">A store's bytes in the trace's data, or a marker's label index; -1 otherwise.</param>
public readonly record struct CrashEvent(CrashEventKind Kind, long Offset, int Length, int Data);
