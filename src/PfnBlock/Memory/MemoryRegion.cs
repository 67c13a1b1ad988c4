namespace PfnBlock.Memory;

/// <summary>What kind of memory a region's frames are.</summary>
public enum RegionKind
{
    /// <summary>Anonymous DRAM: volatile, CPU-addressable.</summary>
    Dram,
    /// <summary>Persistent memory: a mapped namespace file or device-DAX.</summary>
    Pmem,
    /// <summary>Device memory with no CPU mapping (e.g. a peer device's BAR); I/O only by DMA.</summary>
    DeviceOnly,
}

/// <summary>
/// A run of frames registered in a <see cref="PhysicalAddressSpace"/>: a DRAM arena or a pmem
/// namespace's data area. The region owns the memory; the address space only numbers it.
/// </summary>
public abstract unsafe class MemoryRegion : IDisposable
{
    private readonly IPageDescriptorMap _descriptors;

    /// <summary>Creates a region of <paramref name="frameCount"/> frames at <paramref name="baseAddress"/> (null when not CPU-addressable).</summary>
    protected MemoryRegion(string name, RegionKind kind, long frameCount, byte* baseAddress, PfnFlags flags, IPageDescriptorMap? descriptors)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(frameCount);
        Name = name;
        Kind = kind;
        FrameCount = frameCount;
        BaseAddress = baseAddress;
        _descriptors = descriptors ?? NoDescriptorMap.Instance;
        Pins = FramePins.Create(_descriptors, frameCount);
        // A frame with a descriptor is PFN_DEV|PFN_MAP (devmap); without one, plain PFN_DEV.
        Flags = kind == RegionKind.Dram ? PfnFlags.None
            : _descriptors.Kind == DescriptorMapKind.None ? flags | PfnFlags.Dev
            : flags | PfnFlags.Dev | PfnFlags.Map;
    }

    /// <summary>A human-readable name ("dram0", a namespace path).</summary>
    public string Name { get; }
    /// <summary>DRAM, pmem or device-only memory; with the descriptor map it fixes the flags of the region's pfns.</summary>
    public RegionKind Kind { get; }
    /// <summary>Number of 4 KiB frames.</summary>
    public long FrameCount { get; }
    /// <summary>Size in bytes.</summary>
    public long Size => FrameCount << Pfn.PageShift;
    /// <summary>The CPU address of the first frame, or null for memory the CPU cannot reach.</summary>
    public byte* BaseAddress { get; }
    /// <summary>True when frames can be kmapped.</summary>
    public bool IsCpuAddressable => BaseAddress != null;
    /// <summary>Flags every pfn of this region carries; fixed for the region's life.</summary>
    public PfnFlags Flags { get; }
    /// <summary>Where the region's page descriptors live, if anywhere (a no-op map when it has none); the I/O path never consults it.</summary>
    public IPageDescriptorMap Descriptors => _descriptors;
    /// <summary>
    /// Who holds the region's frames: DAX mappings, NBD replies sent from them, O_DIRECT transfers
    /// into them. Kept where the descriptor map says (per range for none, in the descriptors for
    /// the stable maps), so every consumer of a frame counts in one place.
    /// </summary>
    public IFramePins Pins { get; }
    /// <summary>
    /// Which frames were written through direct access since their last write-back, kept where the
    /// descriptor map says (descriptor flags, or a bitmap for maps without lasting descriptors);
    /// made on first use, so regions nobody writes through DAX pay nothing.
    /// </summary>
    public IDirtyFrames Dirty => _dirty ?? Interlocked.CompareExchange(ref _dirty, DirtyFrames.Create(_descriptors, FrameCount), null) ?? _dirty;
    private IDirtyFrames? _dirty;
    /// <summary>The first frame number, once registered; 0 before.</summary>
    public ulong BaseFrame { get; internal set; }
    /// <summary>The address space the region is registered in, if any.</summary>
    public PhysicalAddressSpace? AddressSpace { get; internal set; }

    /// <summary>The pfn of the region's <paramref name="frameIndex"/>-th frame.</summary>
    public Pfn PfnAt(long frameIndex)
    {
        if ((ulong)frameIndex >= (ulong)FrameCount)
            throw new ArgumentOutOfRangeException(nameof(frameIndex), frameIndex, $"region {Name} has {FrameCount} frames");
        if (AddressSpace is null) throw new InvalidOperationException($"region {Name} is not registered in an address space");
        return new Pfn(BaseFrame + (ulong)frameIndex, Flags);
    }

    /// <summary>Releases the memory. The region must have been removed from its address space first.</summary>
    public void Dispose()
    {
        AddressSpace?.Remove(this);
        Dispose(true);
        GC.SuppressFinalize(this);
    }

    /// <summary>Releases the region's memory.</summary>
    protected virtual void Dispose(bool disposing) => _descriptors.Dispose();
}
