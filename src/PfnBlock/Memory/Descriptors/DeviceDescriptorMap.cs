namespace PfnBlock.Memory;

/// <summary>
/// The <see cref="DescriptorMapKind.Device"/> map (Ingo's "memmap on the device", the kernel's
/// <c>vmem_altmap</c>, ndctl <c>--map=dev</c>): 64-byte descriptors for every frame, stored in
/// the device itself, in a reserve in front of the data area. It costs no DRAM; its on-media
/// format (header, per-block checksums, rebuild on open) belongs to the namespace that holds the
/// reserve, which hands this map the validated descriptor array.
/// </summary>
/// <remarks>
/// Pins are reference counts in device memory: on tmpfs or a page-cache mapping that is DRAM
/// all the same; on real pmem every pin and unpin would be a store to the media (the write
/// endurance argument Dan raised), which is why the reference count is never flushed and is
/// reset when the namespace is opened exclusively.
/// </remarks>
public sealed unsafe class DeviceDescriptorMap : IPageDescriptorMap
{
    private readonly PageDescriptor* _map;
    private readonly long _frames;
    private readonly long _reserveBytes;

    /// <summary>Wraps <paramref name="frameCount"/> validated descriptors at <paramref name="descriptors"/>, from a reserve of <paramref name="reserveBytes"/> bytes.</summary>
    public DeviceDescriptorMap(PageDescriptor* descriptors, long frameCount, long reserveBytes)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(frameCount);
        ArgumentNullException.ThrowIfNull(descriptors);
        _map = descriptors;
        _frames = frameCount;
        _reserveBytes = reserveBytes;
    }

    /// <inheritdoc/>
    public DescriptorMapKind Kind => DescriptorMapKind.Device;
    /// <inheritdoc/>
    public int FramesPerDescriptor => 1;
    /// <inheritdoc/>
    public bool IsStable => true;
    /// <summary>0: the descriptors live in the device.</summary>
    public long DramBytes => 0;
    /// <summary>The whole reserve (header, checksums, descriptors, padding to the data alignment).</summary>
    public long DeviceBytes => _reserveBytes;

    /// <inheritdoc/>
    public PageDescriptor* Get(long frameIndex)
    {
        if ((ulong)frameIndex >= (ulong)_frames) DescriptorMaps.ThrowOutOfRange(frameIndex, _frames);
        return _map + frameIndex;
    }

    /// <inheritdoc/>
    public PageDescriptor* Head(long frameIndex) => Get(frameIndex);
    /// <inheritdoc/>
    public void Put(PageDescriptor* descriptor) { }
    /// <summary>Nothing: the namespace owns the mapping the descriptors live in.</summary>
    public void Dispose() { }
}
