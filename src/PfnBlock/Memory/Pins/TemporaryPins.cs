namespace PfnBlock.Memory;

/// <summary>
/// Pins for the temporary map: each pin takes a descriptor from the pool (reference count 1,
/// the "fake struct page" of the I/O) and gives it back at unpin. Because two pins of one frame
/// get two descriptors, their counts cannot say whether the frame is pinned; the truth is kept
/// by range in a <see cref="RangePinTable"/>, and fences consult that. The pool's
/// get/put is the measured extra cost of the temporary design.
/// </summary>
public sealed unsafe class TemporaryPins : IFramePins
{
    private const int SlotBits = 20;
    private readonly TemporaryDescriptorMap _map;
    private readonly RangePinTable _table = new();
    private readonly long _frames;

    /// <summary>Pins for a region of <paramref name="frameCount"/> frames with descriptors from <paramref name="map"/>.</summary>
    public TemporaryPins(TemporaryDescriptorMap map, long frameCount)
    {
        _map = map;
        _frames = frameCount;
    }

    /// <inheritdoc/>
    public DescriptorMapKind Kind => DescriptorMapKind.Temporary;

    /// <inheritdoc/>
    public bool TryPin(long firstFrame, long frames, out long token)
    {
        token = 0;
        if (frames <= 0 || firstFrame < 0 || firstFrame > _frames - frames)
            throw new ArgumentOutOfRangeException(nameof(firstFrame), $"frames [{firstFrame}, +{frames}) are not inside the region's {_frames} frames");
        if (!_table.TryPin(firstFrame, frames, out int slot)) return false;
        PageDescriptor* d = _map.Get(firstFrame);
        if (d == null)
        {
            _table.Unpin(slot);
            return false;
        }
        d->RefCount = 1;
        // Descriptors are 64-byte aligned user-space addresses: 41 bits once shifted, beside a 20-bit slot.
        token = (long)((ulong)d >> 6 << SlotBits) | (uint)slot;
        return true;
    }

    /// <inheritdoc/>
    public void Unpin(long firstFrame, long frames, long token)
    {
        var d = (PageDescriptor*)((ulong)token >> SlotBits << 6);
        d->RefCount = 0;
        _map.Put(d);
        _table.Unpin((int)(token & ((1 << SlotBits) - 1)));
    }

    /// <summary>The temporary descriptor a pin's <paramref name="token"/> holds (the I/O's "struct page").</summary>
    public static PageDescriptor* DescriptorOf(long token) => (PageDescriptor*)((ulong)token >> SlotBits << 6);

    /// <inheritdoc/>
    public int Fence(long firstFrame, long frames) => _table.Fence(firstFrame, frames);
    /// <inheritdoc/>
    public void Unfence(int fence) => _table.Unfence(fence);
    /// <inheritdoc/>
    public bool IsPinned(long firstFrame, long frames) => _table.IsPinned(firstFrame, frames);
    /// <inheritdoc/>
    public bool AnyPinned => _table.AnyPinned;
    /// <summary>Pins of the frame as the range table records them (each pin's own descriptor says 1).</summary>
    public int PinCount(long frame) => _table.PinCount(frame);
}
