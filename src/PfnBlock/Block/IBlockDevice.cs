using PfnBlock.Memory;

namespace PfnBlock.Block;

/// <summary>
/// The seam where devices plug into the block layer (the kernel's gendisk + submit_bio).
/// </summary>
/// <remarks>
/// Contract: <see cref="Submit"/> always leads to exactly one <see cref="Bio.Complete"/>, also for
/// requests that fail validation; it never throws for a bad request. Bounds, alignment, op
/// support and read-only are checked once at the edge (<see cref="BlockDevice"/>); drivers only
/// assert them. <see cref="BlockStatus.Busy"/> means "resubmit", never failure, and the core
/// resubmits it: submitters never see it.
/// </remarks>
public interface IBlockDevice : IDisposable
{
    /// <summary>A short name for messages and statistics ("pmem0", "ram0", a file path).</summary>
    string Name { get; }
    /// <summary>Capacity in 512-byte sectors (a multiple of the logical block size).</summary>
    long CapacitySectors { get; }
    /// <summary>Capacity in bytes.</summary>
    long CapacityBytes => CapacitySectors << Bio.SectorShift;
    /// <summary>Size and alignment limits every bio must respect.</summary>
    DeviceLimits Limits { get; }
    /// <summary>What the device can do (flush, FUA, discard, DAX, …), as data; exports derive their flags from it.</summary>
    DeviceFeatures Features { get; }
    /// <summary>I/O statistics like /sys/block/*/stat.</summary>
    DiskStats Stats { get; }
    /// <summary>The address space the pfns of every bio submitted here belong to (a stack shares one).</summary>
    PhysicalAddressSpace AddressSpace { get; }
    /// <summary>One line for people: what the device is and, for persistent devices, which persistence path is in force.</summary>
    string Description { get; }
    /// <summary>Submits a bio; it completes exactly once, possibly before this returns.</summary>
    void Submit(Bio bio);
}

/// <summary>
/// Direct access by pfn to a device whose sectors are memory (the kernel's
/// <c>dax_operations.direct_access</c>): no copy, no bio. Every range handed out is pinned:
/// discard, write-zeroes and teardown of the device wait for it (or answer
/// <see cref="BlockStatus.Busy"/>, which the core requeues) until the holder unpins it.
/// </summary>
public unsafe interface IDaxDevice
{
    /// <summary>
    /// Pins and translates up to <paramref name="pages"/> pages (4 KiB units) from device page
    /// <paramref name="pageOffset"/>. The caller must <see cref="DaxRange.Unpin"/> the range
    /// exactly once, when nothing reads or writes through it any more (an NBD reply sent from it
    /// has left, an application unmapped it).
    /// </summary>
    /// <returns>How many contiguous pages are pinned from there (at most <paramref name="pages"/>),
    /// or 0 past the end, for an empty request, or while a discard of the range is pending
    /// (then the caller falls back to a bio).</returns>
    long DirectAccess(long pageOffset, long pages, out DaxRange range);

    /// <summary>Makes <paramref name="length"/> bytes at device offset <paramref name="offset"/>, written through direct access, durable.</summary>
    void PersistRange(long offset, long length);
}

/// <summary>
/// A pinned range of a DAX device: its first frame, CPU address and length, and the pin (kept in
/// the region's pin store, <see cref="MemoryRegion.Pins"/>, as its descriptor map decides).
/// Copying the struct does not copy the pin: unpin exactly once.
/// </summary>
public readonly unsafe struct DaxRange
{
    private readonly FramePin _pin;

    internal DaxRange(Pfn pfn, byte* address, long pages, FramePin pin)
    {
        Pfn = pfn;
        Address = address;
        Pages = pages;
        _pin = pin;
    }

    /// <summary>The pfn of the range's first page.</summary>
    public Pfn Pfn { get; }
    /// <summary>The CPU address of the range's first byte (valid until <see cref="Unpin"/>).</summary>
    public byte* Address { get; }
    /// <summary>Pages in the range (4 KiB each); 0 for an empty range, which holds no pin.</summary>
    public long Pages { get; }
    /// <summary>The pin the range holds.</summary>
    public FramePin Pin => _pin;

    /// <summary>Releases the pin (nothing for an empty range).</summary>
    public void Unpin() => _pin.Unpin();

    /// <summary>A range over <paramref name="pages"/> pages at <paramref name="address"/> holding <paramref name="pin"/>; for devices implementing <see cref="IDaxDevice"/>.</summary>
    public static DaxRange Create(Pfn pfn, byte* address, long pages, FramePin pin) => new(pfn, address, pages, pin);
}
