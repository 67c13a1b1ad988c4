namespace PfnBlock.Memory;

/// <summary>What a persistence primitive did, as recorded by a <see cref="PmemTraceRecorder"/>.</summary>
public enum PmemTraceKind : byte
{
    /// <summary>Ordinary (temporal) stores: they go through the cache and reach media only when their line is written back.</summary>
    Store,
    /// <summary>Non-temporal (streaming) stores: they bypass the cache and are ordered only by a fence.</summary>
    NonTemporalStore,
    /// <summary>A cache-line write-back (CLWB/CLFLUSHOPT/CLFLUSH) of every line overlapping the range; durable only after a later fence.</summary>
    Flush,
    /// <summary>A store fence (SFENCE): earlier flushes and non-temporal stores are durable once it completes.</summary>
    Fence,
}

/// <summary>
/// One recorded persistence event: a store (with the bytes it left behind, kept by the recorder),
/// a cache-line flush of a range, or a fence.
/// </summary>
/// <param name="Kind">Which primitive.</param>
/// <param name="Address">First byte stored or flushed (0 for a fence).</param>
/// <param name="Length">Bytes stored or flushed (0 for a fence).</param>
/// <param name="DataOffset">Where a store's bytes start in <see cref="PmemTraceRecorder.Data"/>; -1 otherwise.</param>
public readonly record struct PmemTraceEvent(PmemTraceKind Kind, nint Address, int Length, int DataOffset);
