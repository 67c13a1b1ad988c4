using PfnBlock.Block;

namespace PfnBlock.Targets.Md;

/// <summary>
/// An md personality (md's <c>md_personality</c>: raid1, raid5) as the one target of the array's
/// mapped device: the data path for bios (<see cref="Target.Map"/>) and the sync steps the array's
/// worker runs (<see cref="SyncWindow"/>). Flushes reach it once per slot and go to that slot's
/// member.
/// </summary>
internal abstract class MdTarget : Target
{
    protected MdTarget(MdArray array, IBlockDevice[] devices) : base(devices) => Array = array;

    /// <summary>The array.</summary>
    public MdArray Array { get; }

    /// <summary>One flush per slot, numbered by <see cref="Bio.TargetBioNumber"/>.</summary>
    public override int FlushBios => Array.RaidDisks;

    /// <summary>Every remap lands inside a member's data area (the array is no larger than the members' used size) and keeps the stacked limits.</summary>
    public override bool RemapsWithinLimits => true;

    /// <summary>The members, as an md: spec lists them.</summary>
    public override string Arguments => string.Join('+', Array.Members.Select(m => m.Spec));

    /// <summary>A failed array fails everything; reads and writes go to the level, flushes to every member.</summary>
    public sealed override MapResult Map(Bio bio, out IBlockDevice? lower)
    {
        if (Array.IsFailed) return Fail(bio, out lower);
        switch (bio.Op)
        {
            case BioOp.Read: return MapRead(bio, out lower);
            case BioOp.Flush: return MapFlush(bio, out lower);
            default:
                lower = null;
                return MapWrite(bio);
        }
    }

    /// <summary>Maps a read of a working array: to one member, or by reconstruction.</summary>
    protected abstract MapResult MapRead(Bio bio, out IBlockDevice? lower);

    /// <summary>Takes a write, discard or write-zeroes of a working array; it is always carried out by the target (<see cref="MapResult.Submitted"/> or a requeue).</summary>
    protected abstract MapResult MapWrite(Bio bio);

    /// <summary>Sends a flush to the member of slot <see cref="Bio.TargetBioNumber"/>; an empty slot has nothing to flush.</summary>
    protected virtual MapResult MapFlush(Bio bio, out IBlockDevice? lower)
    {
        MdMember m = Array.Slot(bio.TargetBioNumber);
        if (m.Writable)
        {
            lower = m.Device;
            return MapResult.Remapped;
        }
        lower = null;
        bio.Complete(BlockStatus.Ok);
        return MapResult.Submitted;
    }

    /// <summary>
    /// Starts array write <paramref name="bio"/> carried by <paramref name="w"/> (the context of
    /// <paramref name="carrier"/>) over member regions <paramref name="first"/>..<paramref name="last"/>:
    /// it is issued at once when their bitmap bits are durable, by the bitmap flush that makes them
    /// so otherwise, and requeued while a sync holds a barrier on one of them.
    /// </summary>
    protected MapResult BeginWrite(Bio carrier, MdWrite w, Bio bio, int first, int last)
    {
        w.Start(carrier, bio, first, last);
        WriteIntent intent = Array.Regions.StartWrite(first, last, w, out w.PerThreadCount);
        switch (intent)
        {
            case WriteIntent.Blocked:
                w.Parent = null;
                carrier.Release();
                return MapResult.Requeue;
            case WriteIntent.Ready:
                w.BitsDurable();
                break;
        }
        return MapResult.Submitted;
    }

    /// <summary>Completes a bio of a failed array with an error (never wrong data).</summary>
    protected static MapResult Fail(Bio bio, out IBlockDevice? lower)
    {
        lower = null;
        bio.Complete(BlockStatus.IoError);
        return MapResult.Submitted;
    }

    /// <summary>
    /// One step of a sync, on the worker thread with the region's barrier raised (no array write in
    /// flight there): member sectors [<paramref name="sector"/>, +<paramref name="sectors"/>).
    /// Resync makes the members agree, recovery rebuilds <paramref name="target"/>, check counts
    /// mismatching sectors. Returns the mismatches (0 for the others), or -1 when a member failed
    /// and the sync must stop.
    /// </summary>
    internal abstract long SyncWindow(MdSyncAction action, MdMember? target, long sector, int sectors, MdSyncBuffers buffers);

    /// <summary>
    /// Rewrites member sectors [<paramref name="sector"/>, +<paramref name="sectors"/>) of
    /// <paramref name="bad"/>, which failed a read there, from the redundancy (md's
    /// fix_read_error), and reads them back; on the worker thread with the region's barrier raised.
    /// False when that failed (<see cref="MdArray.SyncIo"/> has then failed the member that could not do its part).
    /// </summary>
    internal abstract bool RepairWindow(MdMember bad, long sector, int sectors, MdSyncBuffers buffers);

    /// <summary>Stops the array (superblocks clean) before the table releases the members.</summary>
    public override void Dispose()
    {
        Array.Shutdown();
        base.Dispose();
    }
}
