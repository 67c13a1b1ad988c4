namespace PfnBlock.Block;

/// <summary>What a target's <see cref="Target.Map"/> did with a bio (the kernel's <c>DM_MAPIO_*</c>).</summary>
public enum MapResult
{
    /// <summary>The target remapped the bio in place (cursor moved, vectors untouched) and named the lower device; the core submits it there.</summary>
    Remapped,
    /// <summary>
    /// The target took the bio: it submitted clones chained to it, and/or it will call
    /// <see cref="Bio.Complete"/> on it exactly once (at once for a target that completes bios
    /// itself, after its clones for one that fans out).
    /// </summary>
    Submitted,
    /// <summary>The target cannot take the bio now (a pool is empty, a stripe is locked): the core requeues it and maps it again later.</summary>
    Requeue,
}

/// <summary>
/// One line of a device-mapper table: maps the bios of a sector range of a <see cref="MappedDevice"/>
/// onto lower devices (the kernel's <c>dm_target</c> with its <c>target_type</c> operations).
/// </summary>
/// <remarks>
/// <para><see cref="Map"/> sees a bio whose sector is relative to the start of the target's range,
/// that lies wholly inside the range, and that the core has validated: bounds, alignment and
/// read-only need no second check. A flush carries no sectors; it reaches every target
/// <see cref="FlushBios"/> times, numbered by <see cref="Bio.TargetBioNumber"/>.</para>
/// <para>To see the completion of a bio it sent down (mirror read retry, reconstruction, cache
/// fill), a target also implements <see cref="IBioEndIo"/>: the core pushes it as an end_io hook
/// before submitting a remapped bio, and a target that clones pushes it on its clones itself.</para>
/// <para>Ownership: the table that created the target owns the lower devices and releases them
/// after disposing the target; a target releases only what it allocated itself.</para>
/// </remarks>
public abstract class Target : IDisposable
{
    /// <summary>Initialises a target whose bios go to <paramref name="devices"/> (which decide the stacked limits and features).</summary>
    protected Target(params IBlockDevice[] devices)
    {
        ArgumentNullException.ThrowIfNull(devices);
        Devices = devices;
    }

    /// <summary>The lower devices this target sends bios to.</summary>
    public IReadOnlyList<IBlockDevice> Devices { get; }

    /// <summary>How many empty flushes a flush of the table sends to this target (<c>num_flush_bios</c>): one per lower device it writes to; 0 for a target that stores nothing.</summary>
    public virtual int FlushBios => Devices.Count == 0 ? 0 : 1;

    /// <summary>
    /// The features this target can pass on when its lower devices have them (a mask over
    /// <see cref="DeviceFeatures"/>): a target that cannot honour discard, say, leaves it out.
    /// </summary>
    public virtual DeviceFeatures PassesThrough => DeviceFeatures.WriteCache | DeviceFeatures.Fua | DeviceFeatures.Discard
        | DeviceFeatures.DiscardZeroesData | DeviceFeatures.WriteZeroes | DeviceFeatures.Synchronous | DeviceFeatures.ReadOnly
        | DeviceFeatures.DiscardsData | DeviceFeatures.AllocationMap | DeviceFeatures.Poll;

    /// <summary>Features the target adds whatever its lower devices have (e.g. a zero target that discards and zeroes by itself).</summary>
    public virtual DeviceFeatures Adds => DeviceFeatures.None;

    /// <summary>
    /// True when every bio this target remaps lands inside its lower device and keeps to its
    /// limits (checked once, when the table was built), so the core need not validate it again
    /// there. A target whose mapping cannot promise that leaves it false.
    /// </summary>
    public virtual bool RemapsWithinLimits => false;

    /// <summary>Lets the target tighten the stacked limits (e.g. a striped target's chunk as the optimal size).</summary>
    public virtual DeviceLimits AdjustLimits(DeviceLimits stacked) => stacked;

    /// <summary>Maps one bio; runs on the submitter's thread and must not block.</summary>
    /// <param name="bio">The bio, sector relative to the target's start.</param>
    /// <param name="lower">For <see cref="MapResult.Remapped"/>: the device to submit the remapped bio to.</param>
    public abstract MapResult Map(Bio bio, out IBlockDevice? lower);

    /// <summary>The target's table arguments, printed back as <c>dmsetup table</c> does (they must parse back to the same target).</summary>
    public abstract string Arguments { get; }

    /// <summary>
    /// Direct access to page <paramref name="pageOffset"/> (relative to the target's start) for a
    /// target that maps onto DAX devices; 0 when the target cannot (the default).
    /// </summary>
    public virtual long DirectAccess(long pageOffset, long pages, out DaxRange range)
    {
        range = default;
        return 0;
    }

    /// <summary>
    /// The allocation state of the target's sectors from <paramref name="sector"/> (relative to the
    /// target's start, inside its range), as <see cref="IAllocationMap.QueryAllocation"/> answers it:
    /// a state and a run of 1 to <paramref name="sectors"/> sectors. A target that remaps onto a
    /// device with an allocation map asks it; one that cannot tell keeps this default, "all data",
    /// which is always safe (a client then reads what it could have skipped).
    /// </summary>
    public virtual AllocationState QueryAllocation(long sector, long sectors, out long run)
    {
        run = sectors;
        return AllocationState.Data;
    }

    /// <summary>
    /// The first run of bad sectors overlapping the target's sectors [<paramref name="sector"/>,
    /// +<paramref name="sectors"/>) (relative to the target's start), as
    /// <see cref="IBadSectorMap.FindBadSectors"/> answers it, in the target's sectors. A target that
    /// remaps onto a device with a bad-sector map asks it; the default knows of none.
    /// </summary>
    public virtual bool FindBadSectors(long sector, long sectors, out long badStart, out long badCount)
    {
        badStart = badCount = 0;
        return false;
    }

    /// <summary>Makes bytes written through <see cref="DirectAccess"/> durable (offset relative to the target's start).</summary>
    public virtual void PersistRange(long offset, long length) => throw new NotSupportedException("target has no direct access");

    /// <summary>Releases what the target allocated itself (pools, timers); never its lower devices.</summary>
    public virtual void Dispose() => GC.SuppressFinalize(this);
}
