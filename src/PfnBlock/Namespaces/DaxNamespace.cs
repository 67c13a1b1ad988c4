using PfnBlock.Interop;
using PfnBlock.Memory;

namespace PfnBlock.Namespaces;

/// <summary>
/// A devdax namespace's data area mapped for direct load/store by an application, like
/// <c>mmap</c> of a kernel <c>/dev/daxX.Y</c>: no block I/O, the data 2 MiB-aligned in the file and
/// mapped at a 2 MiB-aligned address, so huge pages can back it where the filesystem gives them.
/// </summary>
/// <remarks>
/// The claim is <c>flock</c> on the namespace file, the lock block-mode opens already take:
/// mappers take it shared (<c>LOCK_SH</c>), so any number of processes map the namespace at once,
/// while block-mode opens, <c>create --force</c>, destroy and resize take it exclusive
/// (<c>LOCK_EX</c>) and are refused while anyone maps it. flock rather than a lock file: it lives
/// and dies with the mapper's descriptor (a killed mapper leaves no stale lock and there is no file
/// to clean up), the kernel arbitrates shared against exclusive, and it is the lock every other
/// opener of the namespace already honours. The descriptor stays open for the mapping's life.
/// <para>
/// Within the process the data area is a <see cref="PmemRegion"/> with the descriptor map the info
/// block names, so ranges handed out by <see cref="MapRange"/> are pinned and dirty-tracked through
/// the same seams as a block-mode namespace's DAX ranges (<see cref="DaxMapping"/>): overlapping
/// ranges (aliases) count in the same descriptor, writes through them mark frames dirty, a
/// persist writes back only the dirty runs, and <see cref="Dispose"/> waits for the ranges to go.
/// Pins are per process, as a kernel's page references are per kernel: a DRAM map lives in this
/// process, and <c>--map device</c> descriptors are read into a private copy of the reserve (the
/// shared reserve would let mappers reset or bump each other's counts). What protects the data
/// from other processes is the flock: while anyone maps, nothing can discard, shrink, destroy or
/// re-create it, and nothing can change its bad-block list.
/// </para>
/// <para>
/// Media errors: a real device-DAX raises SIGBUS on a load from poisoned memory. A library cannot
/// trap loads without owning the process's signal handling (the .NET runtime does), so the check
/// is at map time, where PMDK's libpmem2 checks bad blocks: <see cref="MapRange"/> refuses a range
/// that touches a bad block with a <see cref="MediaErrorException"/> naming it, and
/// <see cref="BadBlocks"/> lists them for an application that loads through <see cref="Address"/>
/// itself. The list cannot change while mapped (injecting or clearing takes the exclusive claim),
/// so a check at map time stays true for the mapping's life.
/// </para>
/// </remarks>
public sealed unsafe class DaxNamespace : IDisposable
{
    // As PmemDevice: a mapping still pinned at Dispose is waited for, not unmapped under the user.
    private static readonly TimeSpan s_pinDrainTimeout = TimeSpan.FromSeconds(30);

    private readonly NamespaceFile _file;
    private readonly SafeMmapHandle _mapping;
    // --map device: this process's private copy of the descriptor reserve (see remarks).
    private readonly SafeMmapHandle? _reserveCopy;
    private int _disposed;

    private DaxNamespace(NamespaceFile file, SafeMmapHandle mapping, SafeMmapHandle? reserveCopy, IPageDescriptorMap descriptors,
        NamespaceInfoBlock info, PersistenceMode mode, PhysicalAddressSpace space)
    {
        _file = file;
        _mapping = mapping;
        _reserveCopy = reserveCopy;
        Info = info;
        Persistence = mode;
        Region = new PmemRegion(file.Path, info.DataSize >> Pfn.PageShift, mapping.Address, descriptors, mapping);
        space.Add(Region);
    }

    /// <summary>The namespace's info block.</summary>
    public NamespaceInfoBlock Info { get; }
    /// <summary>The first byte of the data area in this process.</summary>
    public byte* Address => _mapping.Address;
    /// <summary>Bytes of the data area.</summary>
    public long Size => Info.DataSize;
    /// <summary>How stores become durable: cache flushes under MAP_SYNC, else msync.</summary>
    public PersistenceMode Persistence { get; }
    /// <summary>The data area's frames, with the descriptor map, pins and dirty tracking of this process.</summary>
    public PmemRegion Region { get; }
    /// <summary>The data area's media errors in 512-byte blocks, fixed while mapped (see remarks).</summary>
    public BadBlockList BadBlocks => Info.BadBlocks;

    /// <summary>
    /// Maps the data area of the devdax namespace at <paramref name="path"/> with a shared claim.
    /// </summary>
    /// <param name="path">The namespace file.</param>
    /// <param name="space">The address space to number its frames in (default: the shared one).</param>
    /// <exception cref="NamespaceInUseException">A block-mode opener holds the namespace.</exception>
    /// <exception cref="InvalidNamespaceException">The path is not a devdax namespace (a raw or sector namespace is opened as a block device instead).</exception>
    public static DaxNamespace Map(string path, PhysicalAddressSpace? space = null)
    {
        NamespaceFile file = NamespaceFile.OpenShared(path);
        SafeMmapHandle? map = null, reserveCopy = null;
        IPageDescriptorMap? descriptors = null;
        try
        {
            NamespaceInfoBlock info = PmemNamespace.ReadValidInfo(file, out _);
            if (info.Mode != NamespaceMode.DevDax)
                throw new InvalidNamespaceException($"'{path}' is a {info.Mode.ToString().ToLowerInvariant()} namespace, not devdax: open it as a block device (pmem:{path})");
            // Whole huge pages from a 2 MiB-aligned file offset: create guarantees the data offset.
            nuint length = (nuint)info.DataSize;
            map = SafeMmapHandle.TryMapAligned(length, DevDaxAlign, Libc.PROT_READ | Libc.PROT_WRITE, Libc.MAP_SHARED_VALIDATE | Libc.MAP_SYNC, file.Fd, info.DataOffset);
            PersistenceMode mode = PersistenceMode.CpuCache;
            if (map is null)
            {
                int errno = Libc.Errno;
                if (errno is not (Libc.EOPNOTSUPP or Libc.EINVAL)) throw Libc.ErrnoException(errno, "mmap(MAP_SYNC)", path);
                map = SafeMmapHandle.TryMapAligned(length, DevDaxAlign, Libc.PROT_READ | Libc.PROT_WRITE, Libc.MAP_SHARED, file.Fd, info.DataOffset)
                    ?? throw Libc.ErrnoException(Libc.Errno, "mmap", path);
                mode = PersistenceMode.Msync;
            }
            long frames = info.DataSize >> Pfn.PageShift;
            if (info.MapKind == DescriptorMapKind.Device)
            {
                // Validated and rebuilt in the private copy, never written to the shared reserve.
                reserveCopy = SafeMmapHandle.TryMap((nuint)info.MapSize, Libc.PROT_READ | Libc.PROT_WRITE, Libc.MAP_PRIVATE, file.Fd, info.MapOffset)
                    ?? throw Libc.ErrnoException(Libc.Errno, "mmap(descriptor reserve)", path);
                PageDescriptor* d = DescriptorReserve.Open(reserveCopy.Address, info, PersistenceMode.Msync, resetRuntime: true, OrderingMutation.None, out _);
                descriptors = new DeviceDescriptorMap(d, frames, info.MapSize);
            }
            else descriptors = DescriptorMaps.Create(info.MapKind, frames);
            return new DaxNamespace(file, map, reserveCopy, descriptors, info, mode, space ?? PhysicalAddressSpace.Shared);
        }
        catch
        {
            descriptors?.Dispose();
            reserveCopy?.Dispose();
            map?.Dispose();
            file.Dispose();
            throw;
        }
    }

    /// <summary>The data alignment of every devdax namespace (the kernel's default device-DAX alignment).</summary>
    public const uint DevDaxAlign = 2u << 20;

    /// <summary>
    /// Hands out <paramref name="pages"/> pages from <paramref name="pageOffset"/> of the data area
    /// as a <see cref="DaxMapping"/>: pinned in the namespace's descriptor map until disposed,
    /// with writes through it dirty-tracked for <see cref="DaxMapping.Persist"/>.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">The range leaves the data area, or is longer than one pin holds.</exception>
    /// <exception cref="MediaErrorException">The range touches a bad block (a device-DAX load there would raise SIGBUS).</exception>
    /// <exception cref="ObjectDisposedException">The namespace was unmapped.</exception>
    public DaxMapping MapRange(long pageOffset, long pages)
    {
        ObjectDisposedException.ThrowIf(_disposed != 0, this);
        long total = Region.FrameCount;
        if (pageOffset < 0 || pages <= 0 || pageOffset > total - pages)
            throw new ArgumentOutOfRangeException(nameof(pageOffset), $"pages [{pageOffset}, +{pages}) are not inside the namespace's {total} pages");
        long sectorsPerPage = Pfn.PageSize >> 9;
        if (BadBlocks.FirstOverlap(pageOffset * sectorsPerPage, pages * sectorsPerPage, out BadBlockRange bad))
            throw new MediaErrorException($"'{_file.Path}': pages [{pageOffset}, +{pages}) hold bad blocks {bad} (512-byte blocks of the data area); clear them with 'namespace clear-errors' while nobody maps it");
        FramePin pin = FramePin.TryPin(Region.Pins, pageOffset, pages);
        if (!pin.IsPinned)
            throw new ArgumentOutOfRangeException(nameof(pages), $"pages [{pageOffset}, +{pages}) cannot be pinned ({DescriptorMaps.Name(Region.Pins.Kind)} pins hold at most {RangePinTable.MaxPages} pages each, or the namespace is being unmapped)");
        return new DaxMapping(Region, Persistence, pin);
    }

    /// <summary>Makes <paramref name="length"/> bytes at <paramref name="offset"/> of the data area durable.</summary>
    public void Persist(long offset, long length)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(offset);
        ArgumentOutOfRangeException.ThrowIfNegative(length);
        if (offset > Size - length) throw new ArgumentOutOfRangeException(nameof(length), $"[{offset}, +{length}) is outside the {Size}-byte data area");
        PmemNamespace.PersistMapped(Address + offset, length, Persistence);
    }

    /// <summary>Unmaps and releases the shared claim, after waiting for ranges still handed out (new ones are refused meanwhile).</summary>
    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        int fence = Region.Pins.Fence(0, Region.FrameCount);
        SpinWait.SpinUntil(() => !Region.Pins.AnyPinned, s_pinDrainTimeout);
        if (fence >= 0) Region.Pins.Unfence(fence);
        Region.Dispose();
        _reserveCopy?.Dispose();
        _mapping.Dispose();
        _file.Dispose();
    }
}
