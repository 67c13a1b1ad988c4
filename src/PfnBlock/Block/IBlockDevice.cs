using PfnBlock.Memory;

namespace PfnBlock.Block;

/// <summary>
/// The seam where devices plug into the block layer (the kernel's gendisk + submit_bio).
/// </summary>
/// <remarks>
/// Contract: <see cref="Submit"/> always leads to exactly one <see cref="Bio.Complete"/>, also for
/// requests that fail validation; it never throws for a bad request. Bounds, alignment, op
/// support and read-only are checked once at the edge (<see cref="BlockDevice"/>); drivers only
/// assert them. <see cref="BlockStatus.Busy"/> means "resubmit", never failure.
/// </remarks>
public interface IBlockDevice : IDisposable
{
    /// <summary>A short name ("pmem0", "ram0", a file path).</summary>
    string Name { get; }
    /// <summary>Capacity in 512-byte sectors.</summary>
    long CapacitySectors { get; }
    /// <summary>Capacity in bytes.</summary>
    long CapacityBytes => CapacitySectors << Bio.SectorShift;
    /// <summary>Size and alignment limits.</summary>
    DeviceLimits Limits { get; }
    /// <summary>Capabilities.</summary>
    DeviceFeatures Features { get; }
    /// <summary>I/O statistics like /sys/block/*/stat.</summary>
    DiskStats Stats { get; }
    /// <summary>The address space the bio vectors' pfns belong to.</summary>
    PhysicalAddressSpace AddressSpace { get; }
    /// <summary>Submits a bio; it completes exactly once, possibly before this returns.</summary>
    void Submit(Bio bio);
}

/// <summary>
/// Direct access by pfn to a device whose sectors are memory (the kernel's
/// <c>dax_operations.direct_access</c>): no copy, no bio.
/// </summary>
public unsafe interface IDaxDevice
{
    /// <summary>
    /// Translates page <paramref name="pageOffset"/> of the device (4 KiB units) into the pfn and CPU address
    /// of its first frame.
    /// </summary>
    /// <param name="pageOffset">Device offset in 4 KiB pages.</param>
    /// <param name="pages">Pages wanted.</param>
    /// <param name="pfn">The pfn of the first page.</param>
    /// <param name="address">Its CPU address.</param>
    /// <returns>How many contiguous pages are available from there (at most <paramref name="pages"/>), or 0 past the end.</returns>
    long DirectAccess(long pageOffset, long pages, out Pfn pfn, out byte* address);

    /// <summary>Makes <paramref name="length"/> bytes at device offset <paramref name="offset"/>, written through direct access, durable.</summary>
    void PersistRange(long offset, long length);
}
