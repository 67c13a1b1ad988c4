using PfnBlock.Common;
using PfnBlock.Interop;
using PfnBlock.Memory;

namespace PfnBlock.Namespaces;

/// <summary>Choices for <see cref="PmemNamespace.Create"/>.</summary>
public sealed record NamespaceCreateOptions
{
    /// <summary>Total size in bytes (file size).</summary>
    public required long Size { get; init; }
    /// <summary>Mode of the data area.</summary>
    public NamespaceMode Mode { get; init; } = NamespaceMode.Raw;
    /// <summary>Logical block size (512 or 4096).</summary>
    public uint SectorSize { get; init; } = 512;
    /// <summary>Data alignment; 0 picks 2 MiB for namespaces of 256 MiB and more, else 4 KiB.</summary>
    public uint Align { get; init; }
    /// <summary>Page-descriptor map to use when the namespace is opened.</summary>
    public DescriptorMapKind MapKind { get; init; } = DescriptorMapKind.None;
    /// <summary>A name shown by info.</summary>
    public string Name { get; init; } = "";
    /// <summary>
    /// The page size that must back the mapping: 0 takes what the filesystem gives, 4096 insists
    /// on base pages, the huge page size (2 MiB) insists on huge pages (hugetlbfs, or tmpfs mounted
    /// huge=always). A filesystem that gives another size is refused before the file is touched.
    /// </summary>
    public long PageSize { get; init; }
    /// <summary>Overwrite an existing namespace or foreign data.</summary>
    public bool Force { get; init; }
    /// <summary>A deliberate ordering bug, for the crash explorer's mutation tests.</summary>
    internal OrderingMutation Mutation { get; init; }

    /// <summary>The smallest namespace: info block, one data page, backup info block.</summary>
    public const long MinSize = 1 << 20;
}

/// <summary>The region of a namespace's data area in the physical address space.</summary>
public sealed unsafe class PmemRegion : MemoryRegion
{
    // While the region is registered its pfns can be kmapped, so it keeps the namespace's mapping
    // alive (unfinalized) even if the namespace object itself is dropped without Dispose.
#pragma warning disable IDE0052 // held for its lifetime, never read
    private readonly SafeMmapHandle _mapping;
#pragma warning restore IDE0052

    internal PmemRegion(string name, long frames, byte* address, IPageDescriptorMap descriptors, SafeMmapHandle mapping)
        : base(name, RegionKind.Pmem, frames, address, PfnFlags.None, descriptors) => _mapping = mapping;
}

/// <summary>
/// A persistent-memory namespace: a file (on a DAX filesystem, tmpfs or any filesystem) or a
/// device-DAX node, formatted with a <see cref="NamespaceInfoBlock"/>, claimed exclusively,
/// mapped shared, and registered as a <see cref="PmemRegion"/> so its frames have pfns.
/// </summary>
public sealed unsafe partial class PmemNamespace : IDisposable
{
    private readonly NamespaceFile _file;
    // The whole namespace, info blocks included. DataAddress and the region's base are derived
    // from it once; I/O never touches the handle, and Dispose unmaps only after the region is gone.
    private readonly SafeMmapHandle _mapping;
    private int _disposed;
    // Replaced whole when the bad-block list changes (PmemNamespace.BadBlocks.cs); geometry never changes.
    private NamespaceInfoBlock _info;

    // A read-only open's private copy of the descriptor reserve (its pins stay in this process).
    private readonly SafeMmapHandle? _reserveCopy;

    private PmemNamespace(NamespaceFile file, SafeMmapHandle mapping, NamespaceInfoBlock info, PersistenceMode mode, bool recoveredFromBackup,
        PhysicalAddressSpace space, bool readOnly = false, bool sharedMapping = true, OrderingMutation mutation = OrderingMutation.None)
    {
        _file = file;
        _mapping = mapping;
        _info = info;
        ReadOnly = readOnly;
        Persistence = mode;
        RecoveredFromBackup = recoveredFromBackup;
        DataAddress = mapping.Address + info.DataOffset;
        // PmemNamespace.Holes.cs: which pages of a tmpfs file are holes (a private copy has its own pages).
        _holes = sharedMapping && mode == PersistenceMode.Msync && file.IsRegularFile && Libc.IsTmpfs(file.Fd)
            ? new NamespaceHoles(file.Fd, info.DataOffset, DataAddress, info.DataSize, canPunch: !readOnly)
            : null;
        long frames = info.DataSize >> Pfn.PageShift;
        IPageDescriptorMap descriptors;
        if (info.MapKind == DescriptorMapKind.Device)
        {
            byte* reserve = mapping.Address + info.MapOffset;
            if (readOnly)
            {
                // Pins are stores: a read-only opener keeps them in a private copy of the reserve.
                _reserveCopy = SafeMmapHandle.TryMap((nuint)info.MapSize, Libc.PROT_READ | Libc.PROT_WRITE, Libc.MAP_PRIVATE, file.Fd, info.MapOffset)
                    ?? throw Libc.ErrnoException(Libc.Errno, "mmap(descriptor reserve)", file.Path);
                reserve = _reserveCopy.Address;
            }
            // A writer holds the exclusive claim: no other process can hold a pin, so left-over counts are stale.
            PageDescriptor* d = DescriptorReserve.Open(reserve, info, readOnly ? PersistenceMode.Msync : mode, resetRuntime: true, mutation, out DescriptorReserveReport report);
            DescriptorReport = report;
            descriptors = new DeviceDescriptorMap(d, frames, info.MapSize);
        }
        else descriptors = DescriptorMaps.Create(info.MapKind, frames);
        Region = new PmemRegion(file.Path, frames, DataAddress, descriptors, mapping);
        space.Add(Region);
    }

    /// <summary>For a namespace with <c>--map device</c>: what opening its descriptor reserve found and rebuilt; null for other maps.</summary>
    public DescriptorReserveReport? DescriptorReport { get; }

    /// <summary>The file or device path.</summary>
    public string Path => _file.Path;
    /// <summary>The validated info block (a new one after each change of the bad-block list).</summary>
    public NamespaceInfoBlock Info => Volatile.Read(ref _info);
    /// <summary>Opened read-only: nothing this process does reaches the file.</summary>
    public bool ReadOnly { get; }
    /// <summary>How writes become durable on this mapping.</summary>
    public PersistenceMode Persistence { get; }
    /// <summary>True when the primary info block was bad and the backup was used (and rewritten to the primary).</summary>
    public bool RecoveredFromBackup { get; }
    /// <summary>CPU address of the data area.</summary>
    public byte* DataAddress { get; }
    /// <summary>Bytes in the data area.</summary>
    public long DataSize => Info.DataSize;
    /// <summary>The data area's frames.</summary>
    public PmemRegion Region { get; }
    /// <summary>CPU address of the namespace's first byte (the info block).</summary>
    public byte* BaseAddress => _mapping.Address;

    /// <summary>
    /// Formats <paramref name="path"/> as a namespace and opens it. Refuses to overwrite an existing
    /// namespace or a non-empty file unless <see cref="NamespaceCreateOptions.Force"/>.
    /// </summary>
    public static PmemNamespace Create(string path, NamespaceCreateOptions options, PhysicalAddressSpace? space = null)
    {
        bool sector = options.Mode == NamespaceMode.Sector;
        // Sector namespaces keep the BTT at namespace offset 4096, where the kernel puts a v1.1 BTT.
        if (sector && options.Align is not (0 or (uint)Pfn.PageSize))
            throw new ArgumentException($"sector namespaces place the BTT at offset 4096 (kernel BTT v1.1); alignment {options.Align} does not apply");
        uint align = sector ? (uint)Pfn.PageSize : options.Align != 0 ? options.Align : options.Size >= 256L << 20 ? 2u << 20 : (uint)Pfn.PageSize;
        if (options.Size < NamespaceCreateOptions.MinSize)
            throw new ArgumentException($"namespace size {options.Size} is below the minimum of {NamespaceCreateOptions.MinSize} bytes");
        if (options.Size % Pfn.PageSize != 0) throw new ArgumentException($"namespace size {options.Size} is not a multiple of 4096");
        if (align < Pfn.PageSize || !uint.IsPow2(align)) throw new ArgumentException($"alignment {align} must be a power of two of at least 4096");
        if (options.SectorSize is not (512 or 4096)) throw new ArgumentException($"sector size {options.SectorSize} must be 512 or 4096");
        if (sector && options.Size - 2 * NamespaceInfoBlock.Size < Btt.Btt.MinSize)
            throw new ArgumentException($"a sector namespace needs at least {Btt.Btt.MinSize + 2 * NamespaceInfoBlock.Size} bytes (one 16 MiB BTT arena plus the info blocks)");
        // Checked here, not when the info block is written or the region mapped: by then the file is formatted.
        if (System.Text.Encoding.UTF8.GetByteCount(options.Name) > 64) throw new ArgumentException($"name '{options.Name}' is longer than 64 bytes");
        bool deviceMap = options.MapKind == DescriptorMapKind.Device;
        if (deviceMap && sector)
            throw new ArgumentException("--map device keeps its descriptor reserve at offset 4096, where a sector namespace's BTT lives (kernel BTT v1.1); use another map for sector mode");
        if (!Enum.IsDefined(options.MapKind)) throw new ArgumentException($"unknown descriptor map kind {(int)options.MapKind}");
        if (options.Mode == NamespaceMode.DevDax)
        {
            // As the kernel's device-DAX: whole 2 MiB pages from a 2 MiB-aligned data offset.
            if (options.Align == 0) align = DaxNamespace.DevDaxAlign;
            else if (align < DaxNamespace.DevDaxAlign) throw new ArgumentException($"alignment {align}: devdax data is 2M-aligned (use --align 2M or more)");
        }
        else if (!Enum.IsDefined(options.Mode)) throw new ArgumentException($"unknown namespace mode {(uint)options.Mode}");
        PageBacking? backing = CheckPageBacking(path, options, ref align);
        // The reserve's geometry is checked before the file is touched.
        (long DataOffset, long ReserveSize, long Frames)? reserveLayout = deviceMap ? DescriptorReserve.Layout(options.Size, align) : null;

        bool existed = File.Exists(path);
        NamespaceFile file = NamespaceFile.OpenClaimed(path, create: true);
        SafeMmapHandle? map = null;
        try
        {
            if (!options.Force) RefuseToOverwrite(file);
            if (!file.IsDeviceDax) ResizeForBacking(file, options.Size, backing);
            else if (file.Size < options.Size) throw new ArgumentException($"device '{path}' has only {file.Size} bytes");

            long dataOffset = reserveLayout?.DataOffset ?? AlignUp(NamespaceInfoBlock.Size, align);
            long dataSize = (NamespaceInfoBlock.BackupOffset(options.Size) - dataOffset) & ~(long)(Pfn.PageSize - 1);
            if (dataSize <= 0) throw new ArgumentException($"namespace size {options.Size} leaves no data area with alignment {align}");
            var info = new NamespaceInfoBlock
            {
                Uuid = Guid.NewGuid(),
                NamespaceSize = options.Size,
                DataOffset = dataOffset,
                DataSize = dataSize,
                Align = align,
                Mode = options.Mode,
                SectorSize = options.SectorSize,
                MapKind = options.MapKind,
                MapOffset = deviceMap ? NamespaceInfoBlock.Size : 0,
                MapSize = reserveLayout?.ReserveSize ?? 0,
                Name = options.Name,
            };
            (map, PersistenceMode mode) = Map(file, options.Size);
            if (options.PageSize > PageBacking.SmallPage) RequireHugeMapping(path, backing!, map, options.Size);
            byte* p = map.Address;
            RetireInfoBlocks(p, options.Size, mode);
            void LayOutBtt()
            {
                byte* data = p + dataOffset;
                var media = new Btt.BttMedia(data, dataSize, mode, (o, l) => PersistMapped(data + o, l, mode),
                    () => PersistMapped(p, options.Size, mode));
                Btt.Btt.Format(media, new Btt.BttOptions { LbaSize = options.SectorSize, ParentUuid = info.Uuid, Flavor = Btt.BttFlavor.Kernel });
            }
            bool infoFirst = PmemTrace.Enabled && options.Mutation == OrderingMutation.NamespaceInfoBeforeLayout;
            // Lay out the BTT before the info blocks: a valid info block then implies a complete layout.
            if (sector && !infoFirst) LayOutBtt();
            // The reserve before the info blocks too, though open checks it whatever it finds.
            if (deviceMap) DescriptorReserve.Format(p + info.MapOffset, info, mode);
            // Backup first, then primary: a crash in between leaves a valid backup to recover from.
            info.Store(p + NamespaceInfoBlock.BackupOffset(options.Size));
            PersistMapped(p + NamespaceInfoBlock.BackupOffset(options.Size), NamespaceInfoBlock.Size, mode);
            info.Store(p);
            PersistMapped(p, NamespaceInfoBlock.Size, mode);
            if (sector && infoFirst) LayOutBtt();
            return new PmemNamespace(file, map, info, mode, false, space ?? PhysicalAddressSpace.Shared, readOnly: false);
        }
        catch
        {
            // A failed create leaves no file of its own making behind (e.g. a huge sparse file after ENOSPC).
            map?.Dispose();
            if (!existed) File.Delete(path);
            file.Dispose();
            throw;
        }
    }

    /// <summary>Opens and claims an existing namespace, validating its info block (falling back to the backup copy).</summary>
    /// <param name="path">The namespace file or device.</param>
    /// <param name="space">The address space to number its frames in (default: the shared one).</param>
    /// <param name="readOnly">
    /// Open with O_RDONLY and a shared claim (other read-only openers may share it, writers may not),
    /// so a file the caller may only read can be served; nothing is written to the file. A raw
    /// namespace is mapped PROT_READ; a sector namespace copy-on-write, so that the BTT's recovery
    /// of an interrupted write stays in memory.
    /// </param>
    /// <exception cref="InvalidNamespaceException">Neither info block is valid.</exception>
    /// <exception cref="NamespaceInUseException">Another process holds the namespace.</exception>
    public static PmemNamespace Open(string path, PhysicalAddressSpace? space = null, bool readOnly = false) =>
        OpenMutated(path, space, readOnly, OrderingMutation.None);

    /// <summary>
    /// Opens a namespace of any mode with the exclusive claim to change its metadata (the bad-block
    /// list of <see cref="MediaErrors"/>): unlike <see cref="Open"/> it takes devdax namespaces too,
    /// whose data nothing here reads or writes as blocks.
    /// </summary>
    internal static PmemNamespace OpenForMetadata(string path) => OpenMutated(path, null, readOnly: false, OrderingMutation.None, anyMode: true);

    internal static PmemNamespace OpenMutated(string path, PhysicalAddressSpace? space, bool readOnly, OrderingMutation mutation, bool anyMode = false)
    {
        NamespaceFile file = NamespaceFile.OpenClaimed(path, create: false, writable: !readOnly);
        SafeMmapHandle? map = null;
        try
        {
            NamespaceInfoBlock info = ReadValidInfo(file, out bool fromBackup);
            if (info.Mode == NamespaceMode.DevDax && !anyMode)
                throw new InvalidNamespaceException($"'{path}' is a devdax namespace: it has no block I/O; applications map it (DaxNamespace.Map), as they map /dev/daxX.Y");
            (map, PersistenceMode mode) = Map(file, info.NamespaceSize, writable: !readOnly, privateCopy: readOnly && info.Mode == NamespaceMode.Sector);
            if (fromBackup && !readOnly)
            {
                // Repair the primary from the backup so the next open need not fall back.
                info.Store(map.Address);
                PersistMapped(map.Address, NamespaceInfoBlock.Size, mode);
            }
            bool privateCopy = readOnly && info.Mode == NamespaceMode.Sector;
            return new PmemNamespace(file, map, info, mode, fromBackup, space ?? PhysicalAddressSpace.Shared, readOnly, sharedMapping: !privateCopy, mutation);
        }
        catch
        {
            map?.Dispose();
            file.Dispose();
            throw;
        }
    }

    /// <summary>Reads and validates the info block without claiming or mapping (works while another process has the namespace open).</summary>
    /// <exception cref="InvalidNamespaceException">The path is not a valid namespace; the message says what it is instead.</exception>
    public static NamespaceInfoBlock ReadInfo(string path, out bool fromBackup) =>
        NamespaceProbe.Probe(path).RequireNamespace(out fromBackup);

    /// <summary>The valid info block of an open file, as <see cref="NamespaceProbe"/> finds it; throws its message for anything else.</summary>
    internal static NamespaceInfoBlock ReadValidInfo(NamespaceFile file, out bool fromBackup) =>
        NamespaceProbe.Probe(file).RequireNamespace(out fromBackup);

    /// <summary>
    /// Deletes a namespace file, holding its exclusive claim while doing so. Refuses a file that
    /// is not a valid namespace unless <paramref name="force"/>.
    /// </summary>
    public static void Destroy(string path, bool force)
    {
        using (NamespaceFile file = NamespaceFile.OpenClaimed(path, create: false))
        {
            // Unlinking a device node would not wipe the device, only its name: refuse, even with force.
            if (!file.IsRegularFile) throw new NotSupportedException($"'{path}' is a device, not a namespace file; destroy only deletes namespace files");
            if (!force) _ = ReadValidInfo(file, out _);
            // Delete while the claim is held so no one opens it between the check and the unlink.
            File.Delete(path);
        }
    }

    /// <summary>
    /// Erases the info blocks of a namespace being overwritten before anything else is written: a
    /// crash part-way through the create then leaves no namespace (open refuses), never the old info
    /// block describing a data area that is half rewritten (a sector namespace's BTT broken). The
    /// whole block is zeroed, not just the signature: a new block torn over the old one would
    /// otherwise restore the old signature over the old, valid, body. Both found by the crash-state
    /// explorer.
    /// </summary>
    private static void RetireInfoBlocks(byte* map, long size, PersistenceMode mode)
    {
        foreach (long offset in (long[])[0, NamespaceInfoBlock.BackupOffset(size)])
        {
            if (!NamespaceInfoBlock.HasSignature(new ReadOnlySpan<byte>(map + offset, NamespaceInfoBlock.Size))) continue;
            PmemStore.Clear(map + offset, NamespaceInfoBlock.Size);
            PersistMapped(map + offset, NamespaceInfoBlock.Size, mode);
        }
    }

    /// <summary>
    /// Checks the requested page size against what the filesystem offers and the geometry huge pages
    /// need (size a multiple of the page); a raw namespace that asks for huge pages gets them as
    /// its default alignment. Null for device-DAX, whose pages the driver decides.
    /// </summary>
    private static PageBacking? CheckPageBacking(string path, NamespaceCreateOptions options, ref uint align)
    {
        long want = options.PageSize;
        if (want != 0 && want != PageBacking.SmallPage && want != PageBacking.PmdPageSize)
            throw new ArgumentException($"page size {SizeParser.Format(want)} is not one this machine maps files with: use 4k or {SizeParser.Format(PageBacking.PmdPageSize)}");
        if (path.StartsWith("/dev/dax", StringComparison.Ordinal))
        {
            if (want != 0) throw new ArgumentException("device-DAX pages are decided by the device's own alignment (daxctl); --page-size applies to namespace files");
            return null;
        }
        PageBacking offered = PageBacking.Offered(path);
        if (want != 0 && want != offered.OfferedPageSize)
            throw new ArgumentException(want > PageBacking.SmallPage
                ? $"'{path}' is on {offered.Detail}, which maps files with {SizeParser.Format(offered.OfferedPageSize)} pages, not {SizeParser.Format(want)}: " +
                  "create it on hugetlbfs (mount -t hugetlbfs -o pagesize=2M) or on a tmpfs mounted with huge=always"
                : $"'{path}' is on {offered.Detail}, which maps files with {SizeParser.Format(offered.OfferedPageSize)} pages, not 4 KiB: use a tmpfs without huge= or another filesystem");
        long page = offered.OfferedPageSize;
        if (page > PageBacking.SmallPage)
        {
            // hugetlbfs refuses sizes and mappings that are not whole huge pages; on tmpfs a partial last page would be small.
            if ((options.Size % page != 0) && (want != 0 || offered.Filesystem == BackingFilesystem.Hugetlbfs))
                throw new ArgumentException($"namespace size {options.Size} is not a multiple of the {SizeParser.Format(page)} pages of {offered.Detail}");
            // The TLB sees the mapping, which is aligned whatever the data offset; aligning the data
            // area too lets a DAX range of the data be handed out in whole huge pages.
            if (want != 0 && options.Align == 0 && options.Mode == NamespaceMode.Raw) align = (uint)page;
        }
        return offered;
    }

    /// <summary>Sizes the file; on hugetlbfs a failed reservation is reported as the pool being too small.</summary>
    private static void ResizeForBacking(NamespaceFile file, long size, PageBacking? backing)
    {
        try
        {
            file.Resize(size);
        }
        catch (IOException e) when (backing?.Filesystem == BackingFilesystem.Hugetlbfs && e.HResult == Libc.ENOSPC)
        {
            throw new IOException($"'{file.Path}': {backing.Detail} has too few free huge pages for {SizeParser.Format(size)} " +
                $"({size / backing.OfferedPageSize} needed; the pool is /proc/sys/vm/nr_hugepages, or the mount's size= limit)", e);
        }
    }

    /// <summary>Populates the whole mapping and refuses it unless the kernel backed it with huge pages throughout (a fragmented memory gives small ones silently).</summary>
    private static void RequireHugeMapping(string path, PageBacking backing, SafeMmapHandle map, long size)
    {
        // fallocate allocated every page already, so filling the page tables costs no memory; a
        // fallocated tmpfs page counts as resident only once faulted (until then it is not uptodate).
        if (Libc.madvise((nint)map.Address, (nuint)size, Libc.MADV_POPULATE_WRITE) != 0) Libc.ThrowErrno("madvise(MADV_POPULATE_WRITE)", path);
        PageBacking measured = backing.Measure(map.Address, size);
        if (measured.HugeMappedBytes < size)
            throw new IOException($"'{path}': the kernel mapped only {SizeParser.Format(measured.HugeMappedBytes)} of {SizeParser.Format(size)} " +
                $"with {SizeParser.Format(backing.OfferedPageSize)} pages ({backing.Detail}; memory too fragmented for huge pages?)");
    }

    /// <summary>
    /// Which page size backs this namespace's mapping now: what the filesystem offers, and what
    /// <c>/proc/self/smaps</c> shows in the page tables of the whole mapping.
    /// </summary>
    public PageBacking MeasureBacking() =>
        (_file.IsDeviceDax ? new PageBacking { Detail = "device-DAX" } : PageBacking.Offered(_file.Fd, _file.Path)).Measure(_mapping.Address, (long)_mapping.Length);

    /// <summary>
    /// Which page size backs a mapping of the namespace at <paramref name="path"/>, without claiming
    /// it (it may be open elsewhere): maps it read-only, fills the page tables where the file has
    /// pages (never its holes, which a read would fill on tmpfs) and measures them.
    /// </summary>
    public static PageBacking ProbeBacking(string path)
    {
        using NamespaceFile file = NamespaceFile.OpenUnclaimed(path);
        if (file.IsDeviceDax) return new PageBacking { Detail = "device-DAX" };
        if (!file.IsRegularFile) return new PageBacking { Detail = "block device" };
        NamespaceInfoBlock info = ReadValidInfo(file, out _);
        (SafeMmapHandle map, _) = Map(file, info.NamespaceSize, writable: false);
        using (map)
        {
            PageBacking offered = PageBacking.Offered(file.Fd, path);
            // A hugetlbfs mapping's page size is the VMA's own; populating it could only allocate pages.
            if (offered.Filesystem != BackingFilesystem.Hugetlbfs) NamespaceHoles.PopulateResident(map.Address, info.NamespaceSize);
            return offered.Measure(map.Address, info.NamespaceSize);
        }
    }

    private static void RefuseToOverwrite(NamespaceFile file)
    {
        if (file.Size == 0) return;
        NamespaceProbeResult probe = NamespaceProbe.Probe(file);
        throw new IOException(probe.Kind switch
        {
            NamespaceKind.RawNamespace or NamespaceKind.SectorNamespace or NamespaceKind.CorruptNamespace =>
                $"'{file.Path}' is already a PfnBlock namespace; use --force to overwrite it",
            NamespaceKind.PmemblkPool or NamespaceKind.OtherPmdkPool =>
                $"'{file.Path}' already holds a PMDK {probe.PmdkPoolType} pool; use --force to overwrite it",
            _ => $"'{file.Path}' already exists and holds {file.Size} bytes of other data; use --force to overwrite it",
        });
    }

    /// <summary>
    /// Maps <paramref name="size"/> bytes of <paramref name="file"/> shared, with MAP_SYNC where the
    /// filesystem offers it; read-only mappings never need it. <paramref name="privateCopy"/> (with a
    /// read-only file): a private copy-on-write mapping, whose stores never reach the file.
    /// </summary>
    internal static (SafeMmapHandle Map, PersistenceMode Mode) Map(NamespaceFile file, long size, bool writable = true, bool privateCopy = false)
    {
        // Huge pages back a file mapping only where the virtual address is aligned to them (PageBacking.cs).
        long page = file.IsRegularFile ? PageBacking.Offered(file.Fd, file.Path).OfferedPageSize : PageBacking.SmallPage;
        SafeMmapHandle? TryMap(int prot, int flags) => page > PageBacking.SmallPage
            ? SafeMmapHandle.TryMapAligned((nuint)size, (nuint)page, prot, flags, file.Fd, 0)
            : SafeMmapHandle.TryMap((nuint)size, prot, flags, file.Fd, 0);
        if (!writable)
        {
            SafeMmapHandle ro = (privateCopy
                ? TryMap(Libc.PROT_READ | Libc.PROT_WRITE, Libc.MAP_PRIVATE)
                : TryMap(Libc.PROT_READ, Libc.MAP_SHARED))
                ?? throw Libc.ErrnoException(Libc.Errno, "mmap", file.Path);
            return (ro, PersistenceMode.Msync);
        }
        // MAP_SYNC only exists for DAX mappings; elsewhere fall back to page-cache semantics and say so.
        // MAP_POPULATE builds the page tables now, so the first I/O to each page pays no fault.
        SafeMmapHandle? p = TryMap(Libc.PROT_READ | Libc.PROT_WRITE, Libc.MAP_SHARED_VALIDATE | Libc.MAP_SYNC | Libc.MAP_POPULATE);
        if (p is not null) return (p, PersistenceMode.CpuCache);
        int errno = Libc.Errno;
        if (errno is not (Libc.EOPNOTSUPP or Libc.EINVAL)) throw Libc.ErrnoException(errno, "mmap(MAP_SYNC)", file.Path);
        // On tmpfs, populating would fill every hole of a sparse namespace with a new page: only the
        // pages that exist are populated (PmemNamespace.Holes.cs).
        bool sparse = file.IsRegularFile && Libc.IsTmpfs(file.Fd);
        p = TryMap(Libc.PROT_READ | Libc.PROT_WRITE, Libc.MAP_SHARED | (sparse ? 0 : Libc.MAP_POPULATE))
            ?? throw Libc.ErrnoException(Libc.Errno, "mmap", file.Path);
        if (sparse) NamespaceHoles.PopulateResident(p.Address, size);
        return (p, PersistenceMode.Msync);
    }

    /// <summary>Makes a range of a mapping durable: cache flush + fence under MAP_SYNC, else msync of the covering pages.</summary>
    internal static void PersistMapped(byte* address, long length, PersistenceMode mode)
    {
        if (mode == PersistenceMode.CpuCache) { PersistentMemory.Persist(address, (nuint)length); return; }
        nint start = (nint)address & ~(nint)(Pfn.PageSize - 1);
        nint end = ((nint)address + (nint)length + Pfn.PageSize - 1) & ~(nint)(Pfn.PageSize - 1);
        if (Libc.msync(start, (nuint)(end - start), Libc.MS_SYNC) != 0) Libc.ThrowErrno("msync");
        if (PmemTrace.Enabled) PmemTrace.Msynced(address, (nuint)length);
    }

    /// <summary>Makes <paramref name="length"/> bytes of the data area at <paramref name="offset"/> durable.</summary>
    public void PersistRange(long offset, long length) => PersistMapped(DataAddress + offset, length, Persistence);

    /// <summary>Makes every write to the namespace durable (<c>nvdimm_flush</c>).</summary>
    public void Flush()
    {
        if (Persistence == PersistenceMode.CpuCache) { PersistentMemory.Drain(); return; }
        if (Libc.msync((nint)_mapping.Address, _mapping.Length, Libc.MS_SYNC) != 0) Libc.ThrowErrno("msync", Path);
        if (PmemTrace.Enabled) PmemTrace.Msynced(_mapping.Address, _mapping.Length);
    }

    /// <summary>A one-line description of the persistence path in force (like libpmem's <c>pmem_is_pmem</c>).</summary>
    public string PersistenceDescription => Persistence switch
    {
        PersistenceMode.CpuCache => $"MAP_SYNC DAX mapping: writes durable after {PersistentMemory.CopyPath} non-temporal stores ({PersistentMemory.FlushInstruction} for partial lines) + sfence",
        _ => $"page-cache mapping (no MAP_SYNC on this filesystem): writes ({PersistentMemory.CopyPath} non-temporal stores) survive a process kill at once, power loss only after msync on flush/FUA",
    };

    private static long AlignUp(long value, long align) => (value + align - 1) & ~(align - 1);

    /// <summary>Removes the region, unmaps and releases the claim.</summary>
    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        Region.Dispose();
        _reserveCopy?.Dispose();
        _mapping.Dispose();
        _file.Dispose();
    }
}
