using PfnBlock.Block;

namespace PfnBlock.Targets.Md;

/// <summary>
/// One array write as a personality carries it (the context of a pooled bio): the array's bio,
/// the bitmap regions it counts itself in, whether a member was lost under it, and its
/// completion, which waits for the superblocks when a member was lost. Personalities add their
/// own per-write state in a subclass.
/// </summary>
internal abstract class MdWrite : IBitmapWaiter, IMdDeferred
{
    /// <summary>The pooled bio this write is the context of.</summary>
    public Bio? Carrier;
    /// <summary>The array's bio.</summary>
    public Bio? Parent;
    /// <summary>A member failed a write of this one.</summary>
    public bool LostMember;
    /// <summary>A status other than an I/O error of a member (a bad vector): the write's result.</summary>
    public BlockStatus Error;
    /// <summary>The status the parent completes with.</summary>
    public BlockStatus Result;
    /// <summary>The bitmap counted this write in a thread's own counters (its lock-free path), not in the region's word.</summary>
    public bool PerThreadCount;

    public int FirstRegion { get; private set; }
    public int LastRegion { get; private set; }
    public IBitmapWaiter? NextWaiter { get; set; }
    public IMdDeferred? NextDeferred { get; set; }

    /// <summary>Readies the context for <paramref name="parent"/> writing regions <paramref name="first"/>..<paramref name="last"/>.</summary>
    public virtual void Start(Bio carrier, Bio parent, int first, int last)
    {
        Carrier = carrier;
        Parent = parent;
        FirstRegion = first;
        LastRegion = last;
        LostMember = false;
        Error = BlockStatus.Ok;
    }

    /// <summary>The bits of its regions are durable (now, or when a bitmap flush completed): the personality issues the write. Must not block.</summary>
    public abstract void BitsDurable();

    /// <summary>Completes the parent with <see cref="Result"/> and returns the carrier to its pool.</summary>
    public void CompleteDeferred()
    {
        Bio parent = Parent!, carrier = Carrier!;
        Parent = null;
        Carrier = null;
        BlockStatus result = Result;
        carrier.Release();
        parent.Complete(result);
    }

    /// <summary>
    /// Ends the write with <paramref name="result"/>: its regions, then the parent; when a member
    /// was lost under a write that succeeded, only once the superblocks record the loss, or after a
    /// crash the stale member could be taken for current.
    /// </summary>
    public void Finish(MdArray array, BlockStatus result)
    {
        array.Regions.EndWrite(FirstRegion, LastRegion, PerThreadCount);
        Result = result;
        if (LostMember && result == BlockStatus.Ok && !array.IsReadOnly) array.DeferUntilSuperblocks(this);
        else CompleteDeferred();
    }
}
