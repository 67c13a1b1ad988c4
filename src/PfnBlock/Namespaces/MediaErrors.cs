using PfnBlock.Namespaces.Btt;
using BlockTranslationTable = PfnBlock.Namespaces.Btt.Btt;

namespace PfnBlock.Namespaces;

/// <summary>
/// Injecting, clearing and listing a namespace's media errors (<c>pfnblock namespace inject-error</c>
/// and <c>clear-errors</c>, ndctl's <c>inject-error</c> and <c>clear-errors</c>). Blocks are 512-byte
/// units of the namespace's data area as its device exports it, as ndctl counts badblocks: of a raw
/// namespace, its data area; of a sector namespace, its sectors (whose size both the block and the
/// count must then be a multiple of); of a devdax namespace, its data area as mapped.
/// </summary>
/// <remarks>
/// A raw or devdax namespace keeps the list in its info block (<see cref="BadBlockList"/>); a
/// sector namespace marks the sectors with the BTT's error flag, which fails their reads until
/// they are written. Injecting and clearing claim the namespace exclusively, so neither works
/// while another process serves it or maps it (devdax): the list a mapper checked when it mapped
/// (<see cref="DaxNamespace.MapRange"/>) stays true while it maps.
/// </remarks>
public static class MediaErrors
{
    /// <summary>Marks blocks [<paramref name="start"/>, +<paramref name="count"/>) bad; returns the namespace's bad blocks afterwards.</summary>
    /// <exception cref="ArgumentException">The range leaves the data area, is empty, or (sector namespace) is not whole sectors.</exception>
    public static BadBlockList Inject(string path, long start, long count)
    {
        using PmemNamespace ns = PmemNamespace.OpenForMetadata(path);
        if (ns.Info.Mode != NamespaceMode.Sector) return ns.AddBadBlocks(start, count);
        BlockTranslationTable btt = OpenBtt(ns);
        foreach (long lba in Sectors(ns, btt, start, count)) Require(btt.SetError(lba, durable: true), ns, lba, "mark");
        return BttErrors.List(btt);
    }

    /// <summary>
    /// Clears the bad blocks in [<paramref name="start"/>, +<paramref name="count"/>), or all of them
    /// when <paramref name="start"/> is null; the blocks that were bad read as zeros afterwards
    /// (their data went with the error). Returns the namespace's bad blocks afterwards.
    /// </summary>
    public static BadBlockList Clear(string path, long? start = null, long count = 1)
    {
        using PmemNamespace ns = PmemNamespace.OpenForMetadata(path);
        if (ns.Info.Mode != NamespaceMode.Sector)
        {
            if (start is long s) return ns.ClearBadBlocks(s, count, zeroData: true);
            foreach (BadBlockRange r in ns.BadBlocks.Ranges) ns.ClearBadBlocks(r.Start, r.Count, zeroData: true);
            return ns.BadBlocks;
        }
        BlockTranslationTable btt = OpenBtt(ns);
        IEnumerable<long> lbas = start is long first ? Sectors(ns, btt, first, count) : Range(0, btt.ExternalNlba);
        foreach (long lba in lbas) Require(btt.ClearError(lba, durable: true), ns, lba, "clear");
        return BttErrors.List(btt);
    }

    /// <summary>The bad blocks of the namespace at <paramref name="path"/>, read without claiming it (it may be in use).</summary>
    public static BadBlockList List(string path)
    {
        NamespaceInfoBlock info = PmemNamespace.ReadInfo(path, out _);
        return info.Mode == NamespaceMode.Sector ? BttErrors.Read(path) : info.BadBlocks;
    }

    private static BlockTranslationTable OpenBtt(PmemNamespace ns) =>
        BlockTranslationTable.Open(BttMedia.ForNamespace(ns), new BttOptions { LbaSize = ns.Info.SectorSize, ParentUuid = ns.Info.Uuid, Flavor = BttFlavor.Kernel });

    /// <summary>The sectors a block range of a sector namespace names; refuses ranges that are not whole sectors inside the device.</summary>
    private static IEnumerable<long> Sectors(PmemNamespace ns, BlockTranslationTable btt, long start, long count)
    {
        long per = ns.Info.SectorSize >> 9, blocks = btt.ExternalNlba * per;
        if (start < 0 || start >= blocks) throw new ArgumentException($"block {start} is outside sector namespace '{ns.Path}' (blocks 0..{blocks - 1} of 512 bytes)");
        if (count < 1) throw new ArgumentException($"a count of {count} blocks names no block (at least 1)");
        if (count > blocks - start) throw new ArgumentException($"blocks {start}+{count} reach past the end of sector namespace '{ns.Path}' ({blocks} blocks of 512 bytes)");
        if (start % per != 0 || count % per != 0)
            throw new ArgumentException($"blocks {start}+{count} are not whole {ns.Info.SectorSize}-byte sectors of sector namespace '{ns.Path}': use multiples of {per} for the block and the count");
        return Range(start / per, count / per);
    }

    private static IEnumerable<long> Range(long first, long count)
    {
        for (long i = 0; i < count; i++) yield return first + i;
    }

    private static void Require(BttStatus status, PmemNamespace ns, long lba, string what)
    {
        if (status != BttStatus.Ok) throw new IOException($"'{ns.Path}': cannot {what} the error flag of sector {lba}: {status}");
    }
}
