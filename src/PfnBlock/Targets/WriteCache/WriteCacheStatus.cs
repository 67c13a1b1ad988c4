namespace PfnBlock.Targets.WriteCache;

/// <summary>
/// A snapshot of a write cache's state (what <c>dmsetup status</c> prints for dm-writecache, and
/// more): for the control socket and <c>pfnblock check</c>.
/// </summary>
/// <param name="Entries">Cache blocks (data slots) in all.</param>
/// <param name="Used">Slots holding entries not yet written back (superseded ones included).</param>
/// <param name="Dirty">Origin blocks whose newest data is only in the cache, plus pending discard and write-zeroes ranges.</param>
/// <param name="ReadHits">Blocks read from the cache.</param>
/// <param name="ReadMisses">Blocks read from the origin.</param>
/// <param name="WriteHits">Blocks written that were cached already.</param>
/// <param name="Writes">Entries logged since the cache was formatted (blocks written, plus one per discard or write-zeroes).</param>
/// <param name="WrittenBack">Blocks written back to the origin since the cache was opened.</param>
/// <param name="WritebackBlocksPerSecond">Write-back rate over the last few seconds.</param>
/// <param name="OldestDirtyAge">Age of the oldest entry not written back (null when none).</param>
/// <param name="WritebackErrors">Write-back batches that failed on the origin (each retried; the data stays in the cache).</param>
/// <param name="LastWritebackError">What the last failure was, or null.</param>
/// <param name="Cleaner">Cleaner mode is on.</param>
/// <param name="PassThrough">Cleaner mode finished: writes go straight to the origin.</param>
/// <param name="Paused">Write-back is paused (<see cref="WriteCacheTarget.PauseWriteback"/>).</param>
/// <param name="Epoch">The current flush epoch.</param>
/// <param name="Lost">
/// Why the origin is lost to this host (another host broke its lock and blocklisted this client),
/// or null: new writes fail with EIO, nothing is written back, the cache keeps every entry.
/// </param>
/// <param name="ReadCache">The read cache of origin data (<c>read_cache PCT</c>), or null when it was never switched on.</param>
public readonly record struct WriteCacheStatus(
    long Entries, long Used, long Dirty, long ReadHits, long ReadMisses, long WriteHits, long Writes, long WrittenBack,
    double WritebackBlocksPerSecond, TimeSpan? OldestDirtyAge, long WritebackErrors, string? LastWritebackError,
    bool Cleaner, bool PassThrough, bool Paused, long Epoch, string? Lost = null, WriteCacheReadCacheStatus? ReadCache = null)
{
    /// <summary>Used slots as a percentage of all.</summary>
    public double UsedPercent => Entries == 0 ? 0 : 100.0 * Used / Entries;

    /// <summary>Estimated time until everything is written back at the current rate (null when the rate is zero or nothing is left).</summary>
    public TimeSpan? WritebackEta => Used == 0 || WritebackBlocksPerSecond <= 0 ? null : TimeSpan.FromSeconds(Used / WritebackBlocksPerSecond);

    /// <summary>One line for people, dmsetup-status-like.</summary>
    public override string ToString() =>
        $"used {Used}/{Entries} ({UsedPercent:0.#}%), dirty {Dirty}, read hits {ReadHits} misses {ReadMisses}, writes {Writes} (hits {WriteHits}), "
        + $"written back {WrittenBack} ({WritebackBlocksPerSecond:0}/s), oldest dirty {(OldestDirtyAge is { } a ? $"{a.TotalSeconds:0.0} s" : "none")}"
        + (WritebackErrors > 0 ? $", write-back errors {WritebackErrors} (last: {LastWritebackError})" : "")
        + (Cleaner ? PassThrough ? ", cleaner: done, passing through" : $", cleaner: {(WritebackEta is { } eta ? $"ETA {eta.TotalSeconds:0} s" : "writing back")}" : "")
        + (ReadCache is { } rc ? $", read cache {rc.Percent}%: {rc.CleanBlocks} clean, hits {rc.Hits}, inserts {rc.Inserts}, evictions {rc.Evictions}" : "")
        + (Paused ? ", write-back paused" : "")
        + (Lost is not null ? $", ORIGIN LOST: {Lost}; writes fail with EIO, the cache keeps its data" : "");
}

/// <summary>The read cache's counters (<see cref="WriteCacheReadCache"/>).</summary>
/// <param name="Percent">The share of the log clean copies may use (<c>read_cache PCT</c>; 0: no new inserts).</param>
/// <param name="CleanBlocks">Clean copies of origin blocks cached now.</param>
/// <param name="Hits">Blocks read from clean copies (also counted in the status's read hits).</param>
/// <param name="Inserts">Clean copies made from origin reads.</param>
/// <param name="Evictions">Copies evicted for room: the log reached their slot, or the insert cursor came round.</param>
/// <param name="Dropped">Copies dropped because their block was written or discarded (or the log was sealed).</param>
/// <param name="Refused">Inserts refused because a write of the block raced the origin read.</param>
public readonly record struct WriteCacheReadCacheStatus(int Percent, long CleanBlocks, long Hits, long Inserts, long Evictions, long Dropped, long Refused);
