namespace PfnBlock.Memory;

/// <summary>
/// Pins kept as reference counts in a stable descriptor map (dense, device, huge, on-demand):
/// a pin raises the count of every descriptor unit the range covers (<see cref="IPageDescriptorMap.Head"/>),
/// so every user of a frame — two DAX mappings, a mapping and an NBD reply — counts in the same
/// place (Ingo's and Al's point: one descriptor per pfn across aliases).
/// </summary>
/// <remarks>
/// For the huge map a unit is 2 MiB: a 4 KiB pin pins its whole 2 MiB, and fences are widened to
/// whole units so that a discard of one 4 KiB waits for a pin of its neighbour (the false sharing
/// that coarse descriptors cost). Ordering against fences is the per-range table's: the
/// increment is a full barrier before the fence check, and the fencer scans the counts after
/// publishing its fence. A count of live pins lets the checks that find nothing pinned — the
/// usual case — answer without reading a descriptor: on the on-demand map a read of an untouched
/// descriptor costs a page of DRAM where the kernel has no shared zero page (a PVM guest booted
/// with <c>pvm_no_zero_page=1</c>). The count is raised before the descriptors and dropped after
/// them, and it is read after a fence is published, so a fencer that reads zero has no pin to wait for.
/// </remarks>
public sealed unsafe class DescriptorPins : IFramePins
{
    private readonly IPageDescriptorMap _map;
    private readonly long _frames;
    private readonly long _unit;
    private readonly RangeFenceSet _fences = new(64);
    private long _live; // pins taken (or being taken) and not yet released

    /// <summary>Keeps pins in <paramref name="map"/>, which covers <paramref name="frameCount"/> frames.</summary>
    public DescriptorPins(IPageDescriptorMap map, long frameCount)
    {
        if (!map.IsStable || map.Kind == DescriptorMapKind.None)
            throw new ArgumentException($"descriptor map '{DescriptorMaps.Name(map.Kind)}' cannot hold pins: its descriptors are not stable per frame", nameof(map));
        _map = map;
        _frames = frameCount;
        _unit = map.FramesPerDescriptor;
    }

    /// <inheritdoc/>
    public DescriptorMapKind Kind => _map.Kind;

    /// <inheritdoc/>
    public bool TryPin(long firstFrame, long frames, out long token)
    {
        token = 0;
        CheckRange(firstFrame, frames);
        long end = firstFrame + frames;
        Interlocked.Increment(ref _live);
        for (long f = firstFrame; f < end; f = NextUnit(f)) Interlocked.Increment(ref _map.Head(f)->RefCount);
        if (_fences.Any && FencedUnits(firstFrame, frames))
        {
            for (long f = firstFrame; f < end; f = NextUnit(f)) Interlocked.Decrement(ref _map.Head(f)->RefCount);
            Interlocked.Decrement(ref _live);
            return false;
        }
        return true;
    }

    /// <inheritdoc/>
    public void Unpin(long firstFrame, long frames, long token)
    {
        long end = firstFrame + frames;
        for (long f = firstFrame; f < end; f = NextUnit(f))
            if (Interlocked.Decrement(ref _map.Head(f)->RefCount) < 0)
                throw new InvalidOperationException($"frame {f} was not pinned (double unpin)");
        Interlocked.Decrement(ref _live);
    }

    /// <inheritdoc/>
    public int Fence(long firstFrame, long frames) => _fences.Add(firstFrame, frames);

    /// <inheritdoc/>
    public void Unfence(int fence) => _fences.Remove(fence);

    /// <inheritdoc/>
    public bool IsPinned(long firstFrame, long frames)
    {
        if (Volatile.Read(ref _live) == 0) return false;
        long end = Math.Min(firstFrame + frames, _frames);
        for (long f = Math.Max(firstFrame, 0); f < end; f = NextUnit(f))
            if (Volatile.Read(ref _map.Head(f)->RefCount) != 0) return true;
        return false;
    }

    /// <inheritdoc/>
    public bool AnyPinned => Volatile.Read(ref _live) != 0;

    /// <inheritdoc/>
    public int PinCount(long frame) => Volatile.Read(ref _map.Head(frame)->RefCount);

    private long NextUnit(long frame) => _unit == 1 ? frame + 1 : (frame / _unit + 1) * _unit;

    /// <summary>A fence anywhere in the descriptor units the range touches (a unit pins all of its frames).</summary>
    private bool FencedUnits(long firstFrame, long frames)
    {
        long first = firstFrame / _unit * _unit;
        long end = Math.Min((firstFrame + frames + _unit - 1) / _unit * _unit, _frames);
        return _fences.Overlaps(first, end - first);
    }

    private void CheckRange(long firstFrame, long frames)
    {
        if (frames <= 0 || firstFrame < 0 || firstFrame > _frames - frames)
            throw new ArgumentOutOfRangeException(nameof(firstFrame), $"frames [{firstFrame}, +{frames}) are not inside the region's {_frames} frames");
    }
}
