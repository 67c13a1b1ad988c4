using PfnBlock.Memory;

namespace PfnBlock.Block;

/// <summary>What a bio asks of a device (the kernel's REQ_OP_*).</summary>
public enum BioOp : byte
{
    /// <summary>Read sectors into the bio's frames.</summary>
    Read,
    /// <summary>Write the bio's frames to sectors.</summary>
    Write,
    /// <summary>Make every completed write durable; carries no data.</summary>
    Flush,
    /// <summary>The sectors' contents are no longer needed; reads after it return zeros on devices that say so.</summary>
    Discard,
    /// <summary>Set the sectors to zeros; carries no data.</summary>
    WriteZeroes,
}

/// <summary>Modifiers of a bio (the kernel's REQ_* flags).</summary>
[Flags]
public enum BioFlags : ushort
{
    /// <summary>No modifier.</summary>
    None = 0,
    /// <summary>Forced unit access: the write is durable when the bio completes.</summary>
    Fua = 1,
    /// <summary>Flush the device's volatile cache before the data of this bio.</summary>
    Preflush = 2,
    /// <summary>Write-zeroes must not deallocate (NBD's NO_HOLE).</summary>
    NoUnmap = 4,
    /// <summary>
    /// The submitter waits for this bio by polling (the kernel's REQ_POLLED): on a thread inside
    /// <see cref="BlockPoll.Begin"/>, a device with <see cref="DeviceFeatures.Poll"/> may leave the
    /// bio's completion to that thread's <see cref="BlockPoll.Poll"/> instead of completing it on a
    /// thread of its own. Elsewhere, and on devices that cannot poll, the flag changes nothing.
    /// </summary>
    Polled = 8,
    /// <summary>
    /// The receiver of this write's completion fences for it (no kernel equivalent: the kernel's
    /// pmem driver fences per request too). A memory device that stores the data with
    /// non-temporal stores may leave out its store fence; whoever gets the completion calls
    /// <see cref="Memory.PersistentMemory.Drain"/> on the completing thread before it treats the
    /// write as durable. That is enough because a memory device copies and completes a bio on one
    /// thread. A mirror sets it on its legs so that the legs' copies drain together, behind one
    /// fence, instead of one after the other. Clones do not inherit it; other devices ignore it.
    /// </summary>
    DeferFence = 16,
}

/// <summary>Completion status of a bio (the kernel's blk_status_t).</summary>
public enum BlockStatus : byte
{
    /// <summary>Success.</summary>
    Ok,
    /// <summary>The medium or the backing store failed (EIO).</summary>
    IoError,
    /// <summary>The device does not implement the operation (EOPNOTSUPP).</summary>
    NotSupported,
    /// <summary>The request reaches beyond the device's capacity.</summary>
    OutOfRange,
    /// <summary>Malformed request: misaligned, empty, or a vector the device cannot reach (EINVAL).</summary>
    Invalid,
    /// <summary>The device cannot take the request now; resubmit later (never a failure).</summary>
    Busy,
    /// <summary>Write to a read-only device (EPERM/EROFS).</summary>
    ReadOnly,
    /// <summary>
    /// A read touched a bad sector (a media error: pmem poison, a BTT sector in the error state;
    /// the kernel's BLK_STS_MEDIUM). Reported as EIO; unlike <see cref="IoError"/> it says the rest
    /// of the device is fine and that writing whole sectors over the bad ones repairs them, which
    /// a redundant target does with data from its other legs (docs/DESIGN.md, "Media errors").
    /// </summary>
    MediaError,
}

/// <summary>Classes of <see cref="BlockStatus"/> that several layers test alike.</summary>
public static class BlockStatusExtensions
{
    /// <summary>
    /// The device failed the request (EIO): an I/O error or a media error. A redundant target
    /// retries these on another leg; a refused request (invalid, out of range, read-only) would
    /// fail anywhere and is not retried.
    /// </summary>
    public static bool IsDeviceError(this BlockStatus status) => status is BlockStatus.IoError or BlockStatus.MediaError;
}

/// <summary>
/// One segment of a bio: a byte range within a run of physically contiguous frames, named by
/// pfn (the seed's <c>bio_vec</c> with <c>__pfn_t</c> in place of <c>struct page *</c>).
/// </summary>
/// <param name="Pfn">The first frame.</param>
/// <param name="Offset">Byte offset from the start of that frame (may exceed a page for multi-page vectors).</param>
/// <param name="Length">Bytes in the segment.</param>
public readonly record struct BioVec(Pfn Pfn, uint Offset, uint Length);

/// <summary>A device's capabilities, as data (the kernel's queue_limits.features).</summary>
[Flags]
public enum DeviceFeatures
{
    /// <summary>None.</summary>
    None = 0,
    /// <summary>The device has a volatile write cache; FLUSH and PREFLUSH do work.</summary>
    WriteCache = 1,
    /// <summary>FUA writes are honoured natively.</summary>
    Fua = 2,
    /// <summary>Discard is supported.</summary>
    Discard = 4,
    /// <summary>Write-zeroes is supported.</summary>
    WriteZeroes = 8,
    /// <summary>Direct access by pfn (<see cref="IDaxDevice"/>).</summary>
    Dax = 16,
    /// <summary>Writes are refused.</summary>
    ReadOnly = 32,
    /// <summary>The device completes every bio before Submit returns.</summary>
    Synchronous = 64,
    /// <summary>Reads after discard return zeros.</summary>
    DiscardZeroesData = 128,
    /// <summary>The device stores nothing (null device): reads return no written data.</summary>
    DiscardsData = 256,
    /// <summary>The device tells which sectors are holes or zeros (<see cref="IAllocationMap"/>); without it, everything counts as data.</summary>
    AllocationMap = 512,
    /// <summary>
    /// Polled bios (<see cref="BioFlags.Polled"/>) submitted on a polling thread may complete in
    /// that thread's <see cref="BlockPoll.Poll"/>: the submitter reaps its own completions, and no
    /// other thread is woken per I/O.
    /// </summary>
    Poll = 1024,
}

/// <summary>Size and alignment limits of a device (the kernel's queue_limits).</summary>
/// <param name="LogicalBlockSize">Smallest addressable unit in bytes (512 or 4096); bio offsets and lengths are multiples of it.</param>
/// <param name="PhysicalBlockSize">Unit the device writes atomically or most efficiently.</param>
/// <param name="MaxBytesPerBio">Largest bio the driver takes; bigger ones are split by the block layer.</param>
/// <param name="DmaAlignment">Required alignment of each vector's memory address and length (1 for CPU copies, 512 for O_DIRECT).</param>
public readonly record struct DeviceLimits(int LogicalBlockSize, int PhysicalBlockSize, int MaxBytesPerBio, int DmaAlignment)
{
    /// <summary>Limits of a CPU-copying memory device.</summary>
    public static DeviceLimits Memory(int logicalBlockSize = 512) => new(logicalBlockSize, Pfn.PageSize, 1 << 30, 1);
}
