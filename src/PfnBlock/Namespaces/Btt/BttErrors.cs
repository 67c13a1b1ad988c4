using PfnBlock.Memory;

namespace PfnBlock.Namespaces.Btt;

/// <summary>
/// A BTT's media errors as a bad-block list: its sectors whose map entries carry the error flag (E),
/// in 512-byte blocks of the exported device, as <c>namespace info</c> and <c>check</c> show a sector
/// namespace's badblocks. The BTT itself is where they live: reads fail until the sector is written
/// (or <c>namespace clear-errors</c> zeroes it).
/// </summary>
public static unsafe class BttErrors
{
    /// <summary>The error-state sectors of an open BTT.</summary>
    public static BadBlockList List(Btt btt)
    {
        var runs = new List<BadBlockRange>();
        for (long lba = 0; lba < btt.ExternalNlba; lba++)
            if (btt.MapEntryOf(lba).IsError) Append(runs, lba, btt.LbaSize);
        return BadBlockList.FromRuns(runs);
    }

    /// <summary>
    /// The error-state sectors of the sector namespace at <paramref name="path"/>, read without
    /// claiming it (so it may be in use): its maps through a read-only mapping.
    /// </summary>
    /// <exception cref="InvalidNamespaceException">The path is not a sector namespace, or its BTT has no usable layout.</exception>
    public static BadBlockList Read(string path)
    {
        using NamespaceFile file = NamespaceFile.OpenUnclaimed(path);
        NamespaceInfoBlock info = PmemNamespace.ReadValidInfo(file, out _);
        if (info.Mode != NamespaceMode.Sector) throw new InvalidNamespaceException($"'{path}' is a raw namespace; its bad blocks are in its info block");
        (Interop.SafeMmapHandle map, PersistenceMode mode) = PmemNamespace.Map(file, info.NamespaceSize, writable: false);
        using (map)
        {
            var media = new BttMedia(map.Address + info.DataOffset, info.DataSize, mode, (_, _) => { }, () => { });
            return Scan(media, new BttOptions { LbaSize = info.SectorSize, ParentUuid = info.Uuid, Flavor = BttFlavor.Kernel });
        }
    }

    /// <summary>The error-state sectors of every arena with a usable info block (arenas without one are skipped: check reports them).</summary>
    internal static BadBlockList Scan(BttMedia media, BttOptions options)
    {
        var runs = new List<BadBlockRange>();
        long first = 0;
        foreach (ArenaInfoRead r in Btt.ReadArenaInfos(media, options))
        {
            if (r.Info is null) break; // the sectors after an unreadable arena cannot be numbered
            var a = new Arena(media, r.Index, r.Offset, first, r.Info, 1);
            for (uint premap = 0; premap < a.ExternalNlba; premap++)
                if (new MapEntry(a.Map[premap]).IsError) Append(runs, first + premap, options.LbaSize);
            first += a.ExternalNlba;
        }
        return BadBlockList.FromRuns(runs);
    }

    private static void Append(List<BadBlockRange> runs, long lba, long lbaSize)
    {
        long per = lbaSize >> 9;
        long start = lba * per;
        if (runs.Count > 0 && runs[^1].End == start) runs[^1] = runs[^1] with { Count = runs[^1].Count + per };
        else runs.Add(new BadBlockRange(start, per));
    }
}
