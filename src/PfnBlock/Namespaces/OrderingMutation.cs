namespace PfnBlock.Namespaces;

/// <summary>
/// A deliberate persistence-ordering bug, switched on to prove that the crash-state explorer
/// notices broken orderings (its mutation tests). Honoured only where tracing is enabled
/// (<see cref="Memory.PmemTrace.Enabled"/>), so elsewhere the checks fold away.
/// </summary>
internal enum OrderingMutation
{
    /// <summary>The code as written.</summary>
    None,
    /// <summary>BTT write: the flog entry is flushed but not fenced before the map entry is stored.</summary>
    BttSkipFlogFence,
    /// <summary>BTT write: the flog entry's second half {new_map, seq} is stored (and persisted) before its first half {lba, old_map}.</summary>
    BttFlogSeqBeforeEntry,
    /// <summary>BTT write: the flog and map entries are written before the data block they name.</summary>
    BttMapBeforeData,
    /// <summary>Namespace create: the info blocks are written before the BTT layout of a sector namespace.</summary>
    NamespaceInfoBeforeLayout,
    /// <summary>Bad-block list update: both info block copies are stored before either is persisted (one flush for the two).</summary>
    NamespaceBadBlocksOneFlush,
    /// <summary>Namespace open: the device descriptor reserve is used as found, without checking its header and block checksums.</summary>
    DescriptorReserveTrusted,
}
