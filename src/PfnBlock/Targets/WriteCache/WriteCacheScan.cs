namespace PfnBlock.Targets.WriteCache;

/// <summary>
/// What the entries of a write cache say (recovery's input and <c>pfnblock check</c>'s report):
/// the tail, the live entries in sequence order, the holes between them, and the first
/// inconsistency found, if any.
/// </summary>
/// <remarks>
/// Rules: the tail and commit words must decode; an entry counts when its checksum holds and its
/// sequence number is at least the tail; it is live when, besides, it is below the committed
/// sequence or has the FUA flag (the others are uncommitted: writes never flushed, which recovery erases).
/// A counted entry must sit in entry <c>seq mod N</c>, lie below
/// <c>tail + N</c> (no writer can get further ahead of the tail), cover blocks inside the origin,
/// and have an epoch no smaller than any live entry before it. Valid entries below the tail are
/// written back (stale); invalid ones are empty or torn. Sequence numbers in <c>[tail, head)</c>
/// without a live entry are holes: writes that never completed, or completed but were never
/// flushed (no FLUSH or FUA promised them), skipped by write-back.
/// </remarks>
public sealed class WriteCacheScan
{
    /// <summary>The written-back sequence (0 when the tail word is damaged).</summary>
    public long Tail { get; private init; }
    /// <summary>One past the highest live sequence number (the tail when nothing is live).</summary>
    public long Head { get; private set; }
    /// <summary>The live entries, in sequence order.</summary>
    public List<WriteCacheEntry> Live { get; } = [];
    /// <summary>The committed sequence: entries below it are committed (<see cref="long.MaxValue"/> for a 1.0 cache: all are).</summary>
    public long Committed { get; private init; }
    /// <summary>Entry numbers (0..N-1) of entries with a valid checksum from the tail and the committed sequence on that are not FUA: unflushed writes, not live.</summary>
    public List<long> Uncommitted { get; } = [];
    /// <summary>Sequence numbers in [tail, head) with no live entry.</summary>
    public long Holes { get; private set; }
    /// <summary>Entries with a valid checksum below the tail (written back, their slots reusable).</summary>
    public long Stale { get; private set; }
    /// <summary>Entries never written or whose checksum fails (torn).</summary>
    public long Empty { get; private set; }
    /// <summary>The first inconsistency, or null when the metadata is consistent.</summary>
    public string? Error { get; private set; }

    /// <summary>Scans the entries of the cache whose superblock is <paramref name="sb"/>, mapped at <paramref name="baseAddress"/>.</summary>
    /// <param name="baseAddress">The cache device's byte 0.</param>
    /// <param name="sb">Its validated superblock.</param>
    /// <param name="originBlocks">The origin's size in cache blocks (entries must stay inside it).</param>
    public static unsafe WriteCacheScan Run(byte* baseAddress, WriteCacheSuperblock sb, long originBlocks)
    {
        ulong tailWord = *(ulong*)(baseAddress + WriteCacheSuperblock.TailOffset);
        if (!sb.TryDecodeTail(tailWord, out long tail)) return new WriteCacheScan { Error = $"the written-back sequence word is damaged (0x{tailWord:x16})" };
        ulong commitWord = *(ulong*)(baseAddress + WriteCacheSuperblock.CommitOffset);
        if (!sb.TryDecodeCommit(commitWord, out long committed)) return new WriteCacheScan { Error = $"the committed-sequence word is damaged (0x{commitWord:x16})" };
        var scan = new WriteCacheScan { Tail = tail, Head = tail, Committed = committed };
        long n = sb.Layout.Entries;
        ulong seed = sb.EntrySeed;
        var bySlot = new WriteCacheEntry[n];
        for (long i = 0; i < n; i++)
        {
            if (!WriteCacheEntry.TryDecode(baseAddress + sb.Layout.MetadataOffset + i * WriteCacheLayout.EntrySize, seed, out WriteCacheEntry e)) { scan.Empty++; continue; }
            if (e.Seq < tail) { scan.Stale++; continue; }
            if (e.Seq % n != i) return scan.Fail($"entry {i} holds sequence number {e.Seq}, which belongs in entry {e.Seq % n}");
            if (e.Seq >= tail + n) return scan.Fail($"entry {i} holds sequence number {e.Seq}, more than N = {n} past the written-back sequence {tail}");
            if (e.Kind == WriteCacheEntryKind.Write ? e.Count != 1 : e.Count == 0)
                return scan.Fail($"entry {i} (sequence {e.Seq}) is a {e.Kind} of {e.Count} blocks");
            if (e.Block < 0 || e.Block > originBlocks - e.Count)
                return scan.Fail($"entry {i} (sequence {e.Seq}) names origin blocks {e.Block}..{e.Block + e.Count - 1}, beyond the origin's {originBlocks} blocks");
            if (e.Seq >= committed && (e.Flags & WriteCacheEntryFlags.Fua) == 0) { scan.Uncommitted.Add(i); continue; }
            bySlot[i] = e;
            scan.Head = Math.Max(scan.Head, e.Seq + 1);
        }
        long lastEpoch = 0;
        for (long s = tail; s < scan.Head; s++)
        {
            WriteCacheEntry e = bySlot[s % n];
            if (e.Seq != s) { scan.Holes++; continue; }
            if (e.Epoch < lastEpoch) return scan.Fail($"sequence {s} has flush epoch {e.Epoch}, older than the epoch {lastEpoch} of an entry before it");
            lastEpoch = e.Epoch;
            scan.Live.Add(e);
        }
        return scan;
    }

    private WriteCacheScan Fail(string error)
    {
        Error = error;
        Live.Clear();
        return this;
    }
}
