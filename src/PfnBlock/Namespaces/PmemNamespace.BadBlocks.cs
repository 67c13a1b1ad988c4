using PfnBlock.Memory;

namespace PfnBlock.Namespaces;

/// <summary>
/// A raw namespace's bad-block list (ndctl's badblocks, PMDK's bad-block API): kept in the info
/// block, changed by <c>namespace inject-error</c> and <c>clear-errors</c> and by writes of whole
/// sectors over bad blocks.
/// </summary>
/// <remarks>
/// An update rewrites the info block as creation does: the backup copy first, persisted, then the
/// primary, persisted. A crash (or a kill) before the backup is durable leaves the old primary,
/// which open prefers; after it, the primary is either still the old one or torn, and a torn
/// primary fails its checksum, so open takes the new backup. Either way the list is the old one or
/// the new one. The crash-state explorer's namespace target runs these updates.
/// </remarks>
public sealed unsafe partial class PmemNamespace
{
    private readonly Lock _badBlocksLock = new();

    /// <summary>A deliberate ordering bug for the crash explorer's mutation tests (honoured only with tracing on).</summary>
    internal OrderingMutation Mutation { get; set; }

    /// <summary>The bad blocks of the data area, in 512-byte blocks (empty for a sector namespace, whose BTT marks errors itself).</summary>
    public BadBlockList BadBlocks => Info.BadBlocks;

    /// <summary>Marks blocks [<paramref name="start"/>, +<paramref name="count"/>) of the data area bad (an injected media error); returns the new list.</summary>
    /// <exception cref="ArgumentException">The range leaves the data area, or the list would need more than <see cref="BadBlockList.MaxRanges"/> runs.</exception>
    public BadBlockList AddBadBlocks(long start, long count)
    {
        RequireInData(start, count);
        return Update(list => list.Add(start, count));
    }

    /// <summary>
    /// Forgets bad blocks in [<paramref name="start"/>, +<paramref name="count"/>); returns the new
    /// list. With <paramref name="zeroData"/> the blocks that were bad are zeroed (and persisted)
    /// first: what they held was lost with the error, so they read as zeros afterwards, as a BTT
    /// sector does. Without it the caller has just written them.
    /// </summary>
    public BadBlockList ClearBadBlocks(long start, long count, bool zeroData)
    {
        RequireInData(start, count);
        return Update(list =>
        {
            if (zeroData) ZeroBadBlocks(list, start, count);
            return list.Remove(start, count);
        });
    }

    private void ZeroBadBlocks(BadBlockList list, long start, long count)
    {
        long end = start + count;
        foreach (BadBlockRange r in list.Ranges)
        {
            long s = Math.Max(r.Start, start), e = Math.Min(r.End, end);
            if (s >= e) continue;
            long offset = s << 9, length = (e - s) << 9;
            if (!ReserveForWrite(offset, length)) throw new IOException($"'{Path}': no space left to rewrite bad blocks {s}+{e - s}");
            PersistentMemory.ZeroNonTemporal(DataAddress + offset, (nuint)length);
            PersistentMemory.Drain();
            PersistRange(offset, length);
            NoteWritten(offset, length);
        }
    }

    private void RequireInData(long start, long count)
    {
        long blocks = DataSize >> 9;
        if (start < 0 || start >= blocks) throw new ArgumentException($"block {start} is outside the data area of '{Path}' (blocks 0..{blocks - 1} of 512 bytes)");
        if (count < 1) throw new ArgumentException($"a count of {count} blocks names no block (at least 1)");
        if (count > blocks - start) throw new ArgumentException($"blocks {start}+{count} reach past the end of the data area of '{Path}' ({blocks} blocks of 512 bytes)");
    }

    /// <summary>
    /// Changes the list under the lock (so concurrent writers clearing different blocks never undo
    /// each other), writes an info block holding the result (backup, then primary) and makes it current.
    /// </summary>
    private BadBlockList Update(Func<BadBlockList, BadBlockList> change)
    {
        if (ReadOnly) throw new InvalidOperationException($"'{Path}' is open read-only; its bad-block list cannot change");
        if (Info.Mode == NamespaceMode.Sector)
            throw new NotSupportedException($"'{Path}' is a sector namespace; its media errors are the BTT's error flags, not a bad-block list");
        lock (_badBlocksLock)
        {
            NamespaceInfoBlock current = Info;
            BadBlockList next = change(current.BadBlocks);
            if (next.Equals(current.BadBlocks)) return current.BadBlocks;
            NamespaceInfoBlock info = current with { Minor = Math.Max(current.Minor, NamespaceInfoBlock.BadBlocksMinor), BadBlocks = next };
            if (info.CheckGeometry(info.NamespaceSize) is string error) throw new ArgumentException($"'{Path}': {error}");
            byte* backup = BaseAddress + NamespaceInfoBlock.BackupOffset(info.NamespaceSize);
            bool oneFlush = PmemTrace.Enabled && Mutation == OrderingMutation.NamespaceBadBlocksOneFlush;
            info.Store(backup);
            if (!oneFlush) PersistMapped(backup, NamespaceInfoBlock.Size, Persistence);
            info.Store(BaseAddress);
            PersistMapped(BaseAddress, NamespaceInfoBlock.Size, Persistence);
            if (oneFlush) PersistMapped(backup, NamespaceInfoBlock.Size, Persistence);
            Volatile.Write(ref _info, info);
            return next;
        }
    }
}
