namespace PfnBlock.Targets.WriteCache;

/// <summary>
/// What <c>pfnblock check</c> says of a raw namespace holding a write cache: whether its
/// metadata is consistent, and what opening it would replay (the live entries write-back still
/// owes the origin). Read-only: nothing is written.
/// </summary>
public sealed record WriteCacheCheckReport
{
    /// <summary>The superblock (null when it does not validate).</summary>
    public WriteCacheSuperblock? Superblock { get; init; }
    /// <summary>The scan of the entries (null when the superblock does not validate).</summary>
    public WriteCacheScan? Scan { get; init; }
    /// <summary>Why the cache is inconsistent, or null.</summary>
    public string? Error { get; init; }
    /// <summary>True when superblock and entries are consistent.</summary>
    public bool Consistent => Error is null;
    /// <summary>Distinct origin blocks the live writes cover (what write-back would write).</summary>
    public long DirtyBlocks => Scan?.Live.Where(e => e.Kind == WriteCacheEntryKind.Write).Select(e => e.Block).Distinct().LongCount() ?? 0;

    /// <summary>The report as lines for people.</summary>
    public IEnumerable<string> Lines()
    {
        if (Superblock is { } sb)
        {
            yield return $"writecache {sb.Major}.{sb.Minor}, cache uuid {sb.CacheUuid}, {sb.Layout.Entries} entries of 4 KiB, origin: {sb.Origin}";
            if (Scan is { Error: null } s)
            {
                yield return $"written back below sequence {s.Tail}; log head {s.Head}";
                yield return $"would replay {s.Live.Count} entries ({s.Live.Count(e => e.Kind == WriteCacheEntryKind.Write)} writes of {DirtyBlocks} distinct blocks, "
                    + $"{s.Live.Count(e => e.Kind == WriteCacheEntryKind.Discard)} discards, {s.Live.Count(e => e.Kind == WriteCacheEntryKind.WriteZeroes)} write-zeroes)"
                    + (s.Live.Count > 0 ? $", flush epochs {s.Live[0].Epoch}..{s.Live[^1].Epoch}, oldest written {DateTimeOffset.FromUnixTimeMilliseconds(s.Live[0].TimeMs):u}" : "");
                yield return $"{s.Holes} hole(s) (writes torn by a crash or never flushed), {s.Stale} written-back entries, {s.Empty} empty or torn lines";
                yield return s.Committed == long.MaxValue ? "no commit word (a 1.0 cache: every entry counts as committed)"
                    : $"committed below sequence {s.Committed}; {s.Uncommitted.Count} uncommitted entries (written, never flushed: opening the cache erases them)";
            }
        }
        if (Error is not null) yield return "error: " + Error;
    }

    /// <summary>
    /// Checks the cache whose device's first byte is <paramref name="data"/> (a namespace's data
    /// area, mapped read-only by the caller); null when it holds no write cache (no superblock magic).
    /// </summary>
    /// <param name="data">The cache device's byte 0.</param>
    /// <param name="bytes">The cache device's size.</param>
    public static unsafe WriteCacheCheckReport? Run(byte* data, long bytes)
    {
        if (bytes < WriteCacheLayout.SuperblockSize || *(ulong*)data != WriteCacheSuperblock.Magic) return null;
        var area = new ReadOnlySpan<byte>(data, WriteCacheLayout.SuperblockSize);
        WriteCacheSuperblock? sb = WriteCacheSuperblock.TryParse(area, bytes, out _, out string? error);
        if (sb is null) return new WriteCacheCheckReport { Error = error };
        WriteCacheScan scan = WriteCacheScan.Run(data, sb, sb.Origin.CapacitySectors / (WriteCacheLayout.BlockSize >> 9));
        return new WriteCacheCheckReport { Superblock = sb, Scan = scan, Error = scan.Error };
    }
}
