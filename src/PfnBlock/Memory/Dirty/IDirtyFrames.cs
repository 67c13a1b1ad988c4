namespace PfnBlock.Memory;

/// <summary>
/// Which frames of a region were written since they were last written back: the state a DAX
/// flush needs when the mapping is not synchronous (no MAP_SYNC: tmpfs, ext4 without DAX), so
/// that it writes back only what changed, as the kernel's DAX fsync writes back only the entries
/// tagged dirty. Kept where the region's descriptor map says: the <see cref="PageFlags.Dirty"/>
/// bit of each descriptor for the stable maps (a 2 MiB descriptor is split when only part of it is
/// written), a bitmap beside the frames for <c>none</c> and <c>temporary</c>, whose frames have no
/// descriptor that outlives an I/O.
/// </summary>
/// <remarks>
/// Marking is lock-free (an atomic OR); taking the dirty ranges clears each frame's mark before
/// the range is reported, so a write racing with a flush is either in this flush or marks the
/// frame again for the next one.
/// </remarks>
public interface IDirtyFrames
{
    /// <summary>The map kind the marks are kept in.</summary>
    DescriptorMapKind Kind { get; }

    /// <summary>Marks <paramref name="frames"/> frames from <paramref name="firstFrame"/> dirty.</summary>
    /// <exception cref="ArgumentOutOfRangeException">The range is empty or leaves the region.</exception>
    void MarkDirty(long firstFrame, long frames);

    /// <summary>True when <paramref name="frame"/> is dirty.</summary>
    bool IsDirty(long frame);

    /// <summary>
    /// Clears every dirty mark and reports the dirty frames as maximal runs, in frame order, to
    /// <paramref name="writeBack"/> (first frame, frame count).
    /// </summary>
    /// <returns>Dirty frames reported.</returns>
    long TakeDirty(Action<long, long> writeBack);
}

/// <summary>Creates the dirty tracking a descriptor map calls for.</summary>
public static class DirtyFrames
{
    /// <summary>The dirty tracking of a region of <paramref name="frameCount"/> frames whose descriptors are <paramref name="map"/>.</summary>
    public static IDirtyFrames Create(IPageDescriptorMap map, long frameCount) => map switch
    {
        HugeDescriptorMap huge => new HugeDirtyFrames(huge, frameCount),
        { IsStable: true, Kind: not DescriptorMapKind.None } => new DescriptorDirtyFrames(map, frameCount),
        _ => new DirtyBitmap(map.Kind, frameCount),
    };

    internal static void CheckRange(long firstFrame, long frames, long frameCount)
    {
        if (frames <= 0 || firstFrame < 0 || firstFrame > frameCount - frames)
            throw new ArgumentOutOfRangeException(nameof(firstFrame), $"frames [{firstFrame}, +{frames}) are not inside the region's {frameCount} frames");
    }

    /// <summary>Reports runs of frames for which <paramref name="takeFrame"/> (clearing the mark) says dirty.</summary>
    internal static long Runs(long frameCount, Func<long, bool> takeFrame, Action<long, long> writeBack)
    {
        long total = 0, start = -1;
        for (long f = 0; f < frameCount; f++)
        {
            if (takeFrame(f))
            {
                if (start < 0) start = f;
                total++;
                continue;
            }
            if (start >= 0) writeBack(start, f - start);
            start = -1;
        }
        if (start >= 0) writeBack(start, frameCount - start);
        return total;
    }
}

/// <summary>Dirty marks in the <see cref="PageFlags.Dirty"/> bit of 4 KiB descriptors (dense, device, on-demand).</summary>
public sealed unsafe class DescriptorDirtyFrames(IPageDescriptorMap map, long frameCount) : IDirtyFrames
{
    /// <inheritdoc/>
    public DescriptorMapKind Kind => map.Kind;

    /// <inheritdoc/>
    public void MarkDirty(long firstFrame, long frames)
    {
        DirtyFrames.CheckRange(firstFrame, frames, frameCount);
        for (long f = firstFrame; f < firstFrame + frames; f++)
        {
            PageDescriptor* d = map.Get(f);
            // Read first: rewriting a dirty descriptor would cost a store (and on-demand, no page).
            if ((Volatile.Read(ref d->Flags) & (ulong)PageFlags.Dirty) == 0) Interlocked.Or(ref d->Flags, (ulong)PageFlags.Dirty);
        }
    }

    /// <inheritdoc/>
    public bool IsDirty(long frame) => (Volatile.Read(ref map.Head(frame)->Flags) & (ulong)PageFlags.Dirty) != 0;

    /// <inheritdoc/>
    public long TakeDirty(Action<long, long> writeBack) => DirtyFrames.Runs(frameCount, f =>
    {
        // Head, not Get: a lookup that only looks must not populate an on-demand page.
        PageDescriptor* d = map.Head(f);
        return (Volatile.Read(ref d->Flags) & (ulong)PageFlags.Dirty) != 0 && (Interlocked.And(ref d->Flags, ~(ulong)PageFlags.Dirty) & (ulong)PageFlags.Dirty) != 0;
    }, writeBack);
}

/// <summary>
/// Dirty marks for the huge map: a write covering a whole 2 MiB marks its 2 MiB descriptor; a
/// smaller one splits it and marks the 4 KiB descriptors it covers (Rik's "split where a 4 KiB
/// operation needs one"), so a flush writes back 4 KiB where 4 KiB changed.
/// </summary>
public sealed unsafe class HugeDirtyFrames(HugeDescriptorMap map, long frameCount) : IDirtyFrames
{
    private const long Unit = HugeDescriptorMap.FramesPerHead;

    /// <inheritdoc/>
    public DescriptorMapKind Kind => DescriptorMapKind.Huge;

    /// <inheritdoc/>
    public void MarkDirty(long firstFrame, long frames)
    {
        DirtyFrames.CheckRange(firstFrame, frames, frameCount);
        long end = firstFrame + frames;
        for (long u = firstFrame / Unit * Unit; u < end; u += Unit)
        {
            long from = Math.Max(u, firstFrame), to = Math.Min(Math.Min(u + Unit, end), frameCount);
            bool whole = from == u && to == Math.Min(u + Unit, frameCount);
            if (whole && !map.IsSplit(u))
            {
                Interlocked.Or(ref map.Head(u)->Flags, (ulong)PageFlags.Dirty);
                continue;
            }
            map.Split(u);
            for (long f = from; f < to; f++) Interlocked.Or(ref map.Get(f)->Flags, (ulong)PageFlags.Dirty);
        }
    }

    /// <inheritdoc/>
    public bool IsDirty(long frame) => (Volatile.Read(ref map.Get(frame)->Flags) & (ulong)PageFlags.Dirty) != 0
        || (Volatile.Read(ref map.Head(frame)->Flags) & (ulong)PageFlags.Dirty) != 0;

    /// <inheritdoc/>
    public long TakeDirty(Action<long, long> writeBack)
    {
        // A 2 MiB descriptor's own bit stands for all its frames (a whole-unit write, or a unit
        // dirty before it split: the split copied the bit down, and taking both reports it once).
        bool unitDirty = false;
        return DirtyFrames.Runs(frameCount, f =>
        {
            PageDescriptor* head = map.Head(f);
            if (f % Unit == 0) unitDirty = Take(head);
            PageDescriptor* d = map.Get(f);
            bool own = d != head && Take(d);
            return unitDirty || own;
        }, writeBack);
    }

    private static bool Take(PageDescriptor* d) =>
        (Volatile.Read(ref d->Flags) & (ulong)PageFlags.Dirty) != 0 && (Interlocked.And(ref d->Flags, ~(ulong)PageFlags.Dirty) & (ulong)PageFlags.Dirty) != 0;
}

/// <summary>
/// Dirty marks in a bitmap of one bit per frame, beside a map that has no lasting descriptor per
/// frame (<c>none</c>, <c>temporary</c>): the user-space form of the kernel's dirty tag on DAX
/// entries, 32 MiB per TiB.
/// </summary>
public sealed class DirtyBitmap(DescriptorMapKind kind, long frameCount) : IDirtyFrames
{
    private readonly ulong[] _bits = new ulong[(frameCount + 63) / 64];

    /// <inheritdoc/>
    public DescriptorMapKind Kind => kind;

    /// <summary>Bytes of the bitmap.</summary>
    public long Bytes => _bits.Length * sizeof(ulong);

    /// <inheritdoc/>
    public void MarkDirty(long firstFrame, long frames)
    {
        DirtyFrames.CheckRange(firstFrame, frames, frameCount);
        for (long f = firstFrame; f < firstFrame + frames; f++) Interlocked.Or(ref _bits[f >> 6], 1UL << (int)(f & 63));
    }

    /// <inheritdoc/>
    public bool IsDirty(long frame) => (Volatile.Read(ref _bits[frame >> 6]) & (1UL << (int)(frame & 63))) != 0;

    /// <inheritdoc/>
    public long TakeDirty(Action<long, long> writeBack) => DirtyFrames.Runs(frameCount, f =>
        IsDirty(f) && (Interlocked.And(ref _bits[f >> 6], ~(1UL << (int)(f & 63))) & (1UL << (int)(f & 63))) != 0, writeBack);
}
