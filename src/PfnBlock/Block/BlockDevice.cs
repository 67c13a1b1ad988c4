using System.Diagnostics;
using System.Runtime.CompilerServices;
using PfnBlock.Memory;

namespace PfnBlock.Block;

/// <summary>
/// The common edge of every device: validates a bio once (op, bounds, alignment, read-only),
/// splits bios larger than the driver takes, strips flush flags a device without a volatile
/// cache does not need, keeps statistics, then hands the bio to <see cref="SubmitCore"/>.
/// Drivers may therefore assume every bio they see is well-formed.
/// </summary>
public abstract class BlockDevice : IBlockDevice
{
    private int _disposed;

    /// <summary>Initialises the common state.</summary>
    protected BlockDevice(string name, PhysicalAddressSpace? addressSpace)
    {
        Name = name;
        AddressSpace = addressSpace ?? PhysicalAddressSpace.Shared;
    }

    /// <inheritdoc/>
    public string Name { get; }
    /// <inheritdoc/>
    public abstract long CapacitySectors { get; }
    /// <inheritdoc/>
    public long CapacityBytes => CapacitySectors << Bio.SectorShift;
    /// <inheritdoc/>
    public abstract DeviceLimits Limits { get; }
    /// <inheritdoc/>
    public abstract DeviceFeatures Features { get; }
    /// <inheritdoc/>
    public DiskStats Stats { get; } = new();
    /// <inheritdoc/>
    public PhysicalAddressSpace AddressSpace { get; }

    /// <summary>The pool that splits of oversized bios come from.</summary>
    protected BioPool SplitPool { get; } = BioPool.Shared;

    /// <inheritdoc/>
    public void Submit(Bio bio)
    {
        BlockStatus status = Validate(bio);
        if (status != BlockStatus.Ok) { bio.Complete(status); return; }

        DeviceFeatures features = Features;
        if ((features & DeviceFeatures.WriteCache) == 0)
        {
            // Nothing volatile to flush: an empty flush is already done, and the flags are moot.
            bio.Flags &= ~(BioFlags.Preflush | BioFlags.Fua);
            if (bio.Op == BioOp.Flush) { bio.Complete(BlockStatus.Ok); return; }
        }

        uint max = (uint)Limits.MaxBytesPerBio;
        if (bio.Size > max && bio.Op is BioOp.Read or BioOp.Write)
        {
            SubmitSplit(bio, max);
            return;
        }
        StartAccounting(bio);
        SubmitCore(bio);
    }

    /// <summary>Carries out a validated bio and calls <see cref="Bio.Complete"/> exactly once.</summary>
    protected abstract void SubmitCore(Bio bio);

    /// <summary>Checks a bio against this device; <see cref="BlockStatus.Ok"/> when it may be carried out.</summary>
    public BlockStatus Validate(Bio bio)
    {
        if (Volatile.Read(ref _disposed) != 0) return BlockStatus.IoError;
        DeviceFeatures features = Features;
        switch (bio.Op)
        {
            case BioOp.Flush:
                return bio.Size == 0 ? BlockStatus.Ok : BlockStatus.Invalid;
            case BioOp.Discard:
                if ((features & DeviceFeatures.Discard) == 0) return BlockStatus.NotSupported;
                break;
            case BioOp.WriteZeroes:
                if ((features & DeviceFeatures.WriteZeroes) == 0) return BlockStatus.NotSupported;
                break;
            case BioOp.Read:
            case BioOp.Write:
                break;
            default:
                return BlockStatus.NotSupported;
        }
        if (bio.Op != BioOp.Read && (features & DeviceFeatures.ReadOnly) != 0) return BlockStatus.ReadOnly;
        if (bio.Size == 0) return BlockStatus.Invalid;

        DeviceLimits limits = Limits;
        long sector = bio.Sector;
        long sectors = bio.Size >> Bio.SectorShift;
        if (sector < 0 || sector > CapacitySectors || sectors > CapacitySectors - sector) return BlockStatus.OutOfRange;
        int lbsMask = limits.LogicalBlockSize - 1;
        if ((((sector << Bio.SectorShift) | bio.Size) & lbsMask) != 0) return BlockStatus.Invalid;
        if (bio.Op is BioOp.Read or BioOp.Write)
        {
            // Discard and write-zeroes carry no data, so their size need not match vectors.
            if (bio.VecCount == 0) return BlockStatus.Invalid;
            if (limits.DmaAlignment > 1 && !VectorsAligned(bio, (uint)limits.DmaAlignment - 1)) return BlockStatus.Invalid;
        }
        return BlockStatus.Ok;
    }

    private static bool VectorsAligned(Bio bio, uint mask)
    {
        foreach (BioVec v in bio.Segments)
            if (((v.Offset | v.Length) & mask) != 0) return false;
        return true;
    }

    private void SubmitSplit(Bio bio, uint max)
    {
        // Each split waits on the original, which completes after the last part (blk_queue_split).
        int splitSectors = (int)(max >> Bio.SectorShift);
        while (bio.Size > max)
        {
            Bio part = bio.Split(splitSectors, SplitPool);
            part.Chain(bio);
            Stats.Merge(bio.Op);
            StartAccounting(part);
            SubmitCore(part);
        }
        StartAccounting(bio);
        SubmitCore(bio);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void StartAccounting(Bio bio)
    {
        bio.AccountingDevice = this;
        bio.StartTimestamp = Stopwatch.GetTimestamp();
        Stats.Start(bio.Op);
    }

    internal void EndAccounting(Bio bio)
    {
        bio.AccountingDevice = null;
        Stats.Done(bio.Op, bio.Size, Stopwatch.GetTimestamp() - bio.StartTimestamp);
    }

    /// <summary>Stops accepting I/O and releases the device.</summary>
    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        Dispose(true);
        GC.SuppressFinalize(this);
    }

    /// <summary>Releases the device's resources.</summary>
    protected virtual void Dispose(bool disposing) { }
}

/// <summary>Conveniences for submitters.</summary>
public static class BlockDeviceExtensions
{
    /// <summary>Submits <paramref name="bio"/> and returns a task that completes with its status; allocates nothing when the device completes inline.</summary>
    public static ValueTask<BlockStatus> SubmitAsync(this IBlockDevice device, Bio bio)
    {
        ValueTask<BlockStatus> task = bio.PrepareAwait();
        device.Submit(bio);
        return task;
    }

    /// <summary>Submits <paramref name="bio"/> and blocks until it completes.</summary>
    public static BlockStatus SubmitAndWait(this IBlockDevice device, Bio bio)
    {
        ValueTask<BlockStatus> task = device.SubmitAsync(bio);
        return task.IsCompleted ? task.Result : task.AsTask().GetAwaiter().GetResult();
    }
}
