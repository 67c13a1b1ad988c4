using PfnBlock.Common;
using PfnBlock.Interop;
using PfnBlock.Memory;

namespace PfnBlock.Namespaces;

// Shrinking a namespace: a new, smaller layout that keeps every byte of data below the cut.
public sealed unsafe partial class PmemNamespace
{
    /// <summary>
    /// Shrinks the namespace at <paramref name="path"/> to <paramref name="newSize"/> bytes,
    /// keeping the data offset and every data byte below the new end of the data area.
    /// </summary>
    /// <remarks>
    /// Holds the exclusive claim throughout, so it is refused while anyone has the namespace open
    /// — a block device, an export, a devdax mapper — and with them every pin on its frames: pins
    /// live only while an opener does (the <c>--map device</c> reserve's counts are reset on open),
    /// so no frame in the cut range can be pinned while the claim is held. Order: the new backup
    /// info block at <c>newSize − 4096</c> (inside the cut range, whose data is being dropped),
    /// then the primary, each persisted, then the file is truncated. A crash before the primary
    /// leaves the old namespace; after it, the new one (with the file still long, which open
    /// accepts). Sector namespaces (the BTT's arenas are laid out for the old size), <c>--map
    /// device</c> (its reserve is sized for the old frames) and bad blocks in the cut range are refused.
    /// </remarks>
    /// <exception cref="NamespaceInUseException">Someone has the namespace open (and may hold pins in it).</exception>
    /// <exception cref="ArgumentException">The new size is not smaller, leaves no data, or is not whole pages.</exception>
    public static NamespaceInfoBlock Shrink(string path, long newSize)
    {
        using NamespaceFile file = NamespaceFile.OpenClaimed(path, create: false);
        NamespaceInfoBlock info = ReadValidInfo(file, out _);
        if (info.Mode == NamespaceMode.Sector)
            throw new NotSupportedException($"'{path}' is a sector namespace: its BTT arenas are laid out for {SizeParser.Format(info.NamespaceSize)}; copy the data to a new namespace instead");
        if (info.MapKind == DescriptorMapKind.Device)
            throw new NotSupportedException($"'{path}' keeps its descriptors on the device (--map device), in a reserve sized for its present frames; shrinking it is not supported");
        if (newSize >= info.NamespaceSize)
            throw new ArgumentException($"new size {SizeParser.Format(newSize)} is not smaller than the namespace ({SizeParser.Format(info.NamespaceSize)}); only shrinking is supported");
        PageBacking backing = file.IsRegularFile ? PageBacking.Offered(file.Fd, path) : new PageBacking();
        long unit = Math.Max(Pfn.PageSize, backing.OfferedPageSize);
        if (newSize % unit != 0) throw new ArgumentException($"new size {newSize} is not a multiple of {SizeParser.Format(unit)} (the pages of {(backing.Detail.Length > 0 ? backing.Detail : "this file")})");
        long dataSize = (NamespaceInfoBlock.BackupOffset(newSize) - info.DataOffset) & ~(long)(Pfn.PageSize - 1);
        if (dataSize <= 0)
            throw new ArgumentException($"new size {SizeParser.Format(newSize)} leaves no data area after the {SizeParser.Format(info.DataOffset)} in front of it");
        long cutSector = dataSize >> 9;
        if (info.BadBlocks.Ranges.Any(r => r.Start + r.Count > cutSector))
            throw new ArgumentException($"'{path}' has bad blocks beyond the new end of its data ({info.BadBlocks}); clear them first (namespace clear-errors)");

        NamespaceInfoBlock shrunk = info with { NamespaceSize = newSize, DataSize = dataSize };
        (SafeMmapHandle map, PersistenceMode mode) = Map(file, info.NamespaceSize);
        using (map)
        {
            shrunk.Store(map.Address + NamespaceInfoBlock.BackupOffset(newSize));
            PersistMapped(map.Address + NamespaceInfoBlock.BackupOffset(newSize), NamespaceInfoBlock.Size, mode);
            shrunk.Store(map.Address);
            PersistMapped(map.Address, NamespaceInfoBlock.Size, mode);
        }
        // A device keeps its size; a file gives the cut range back.
        if (file.IsRegularFile && Libc.ftruncate(file.Fd, newSize) != 0) Libc.ThrowErrno("ftruncate", path);
        return shrunk;
    }
}
