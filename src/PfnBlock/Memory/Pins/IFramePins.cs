namespace PfnBlock.Memory;

/// <summary>
/// The pin seam: how a region records that frames are in use by someone who holds their address
/// (a DAX mapping, an NBD reply waiting to leave, an O_DIRECT transfer into them), so that discard,
/// write-zeroes and teardown wait for them. Each descriptor map has its own implementation — the
/// per-range table for <c>none</c>, reference counts in the descriptors for the stable maps, the
/// range table plus a pooled descriptor per pin for <c>temporary</c> — behind this one contract.
/// </summary>
/// <remarks>
/// Frames are region-relative indices. A fence refuses new pins on a range while the fencer waits
/// for the pins already taken to go (a discard answers Busy meanwhile); pin and fence each make a
/// full barrier before checking the other, so one of them always sees the other.
/// </remarks>
public interface IFramePins
{
    /// <summary>The descriptor map the pins are kept in (the no-op map for per-range pins).</summary>
    DescriptorMapKind Kind { get; }

    /// <summary>Pins <paramref name="frames"/> frames from <paramref name="firstFrame"/>.</summary>
    /// <param name="firstFrame">The first frame, region-relative.</param>
    /// <param name="frames">How many frames.</param>
    /// <param name="token">What <see cref="Unpin"/> needs back (a slot, a descriptor).</param>
    /// <returns>False when a fence covers any of the frames or the pin store is full (the caller falls back to a copy).</returns>
    /// <exception cref="ArgumentOutOfRangeException">The range is empty or leaves the region.</exception>
    bool TryPin(long firstFrame, long frames, out long token);

    /// <summary>Releases a pin taken by <see cref="TryPin"/> with the same range and token, exactly once.</summary>
    void Unpin(long firstFrame, long frames, long token);

    /// <summary>Puts up a fence: new pins overlapping the range are refused until <see cref="Unfence"/>; pins already taken stay.</summary>
    /// <returns>The fence's slot, or -1 when every fence slot is taken (retry later).</returns>
    int Fence(long firstFrame, long frames);

    /// <summary>Takes down a fence.</summary>
    void Unfence(int fence);

    /// <summary>True when a pin overlaps the range.</summary>
    bool IsPinned(long firstFrame, long frames);

    /// <summary>True when any frame is pinned (a scan: for teardown, not for I/O).</summary>
    bool AnyPinned { get; }

    /// <summary>References on <paramref name="frame"/> as the pins record them (for huge descriptors, on its whole 2 MiB).</summary>
    int PinCount(long frame);
}

/// <summary>Creates the pin implementation a descriptor map calls for.</summary>
public static class FramePins
{
    /// <summary>The pins of a region of <paramref name="frameCount"/> frames whose descriptors are <paramref name="map"/>.</summary>
    public static IFramePins Create(IPageDescriptorMap map, long frameCount) => map.Kind switch
    {
        DescriptorMapKind.None => new RangePinTable(),
        DescriptorMapKind.Temporary => new TemporaryPins((TemporaryDescriptorMap)map, frameCount),
        _ => new DescriptorPins(map, frameCount),
    };
}

/// <summary>
/// A pin held on frames of a region: what a consumer keeps until it has stopped using the frames.
/// Copying the struct does not copy the pin: unpin exactly once.
/// </summary>
public readonly struct FramePin
{
    private readonly IFramePins? _pins;
    private readonly long _token;

    internal FramePin(IFramePins pins, long first, long frames, long token)
    {
        _pins = pins;
        First = first;
        Frames = frames;
        _token = token;
    }

    /// <summary>The first pinned frame, region-relative.</summary>
    public long First { get; }
    /// <summary>Frames pinned; 0 for an empty pin.</summary>
    public long Frames { get; }
    /// <summary>True when this holds a pin.</summary>
    public bool IsPinned => _pins is not null;

    /// <summary>Releases the pin (nothing for an empty one).</summary>
    public void Unpin() => _pins?.Unpin(First, Frames, _token);

    /// <summary>Pins a range of <paramref name="pins"/>; an empty pin when it refuses.</summary>
    public static FramePin TryPin(IFramePins pins, long first, long frames) =>
        pins.TryPin(first, frames, out long token) ? new FramePin(pins, first, frames, token) : default;
}
