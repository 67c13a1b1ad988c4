using System.Runtime.InteropServices;

namespace PfnBlock.Memory;

/// <summary>
/// The user-space counterpart of the kernel's <c>struct page</c>: 64 bytes of per-frame state
/// (the figure behind "16 GiB of DRAM per TiB of pmem"). Only descriptor maps create these;
/// the I/O path never needs one.
/// </summary>
[StructLayout(LayoutKind.Explicit, Size = Size)]
public struct PageDescriptor
{
    /// <summary>Bytes per descriptor, as the kernel's struct page on x86-64.</summary>
    public const int Size = 64;

    /// <summary>Page flags (locked, dirty, uptodate, …); see <see cref="PageFlags"/>.</summary>
    [FieldOffset(0)] public ulong Flags;
    /// <summary>Reference count: pins the frame against reuse while I/O or a mapping holds it.</summary>
    [FieldOffset(8)] public int RefCount;
    /// <summary>Number of user mappings of the frame.</summary>
    [FieldOffset(12)] public int MapCount;
    /// <summary>The frame's offset in its owner (file page index or sector).</summary>
    [FieldOffset(16)] public ulong Index;
    /// <summary>Owner-private word.</summary>
    [FieldOffset(24)] public ulong Private;
    /// <summary>The frame's own pfn (Linus's "union that contains index" holding the pfn).</summary>
    [FieldOffset(32)] public ulong PfnRaw;
}

/// <summary>Bits of <see cref="PageDescriptor.Flags"/>.</summary>
[Flags]
public enum PageFlags : ulong
{
    /// <summary>No flag.</summary>
    None = 0,
    /// <summary>Locked for I/O.</summary>
    Locked = 1,
    /// <summary>Modified since last written back.</summary>
    Dirty = 2,
    /// <summary>Contents valid.</summary>
    Uptodate = 4,
    /// <summary>A transient descriptor made for one I/O (Linus's "fake struct page").</summary>
    Transient = 8,
}

/// <summary>The page-descriptor alternatives argued in the seed thread.</summary>
public enum DescriptorMapKind
{
    /// <summary>No descriptors at all (Dan's __pfn_t: I/O needs none).</summary>
    None,
    /// <summary>One descriptor per 4 KiB frame in DRAM (the classic memmap; Ingo's "real struct pages").</summary>
    Dense,
    /// <summary>One descriptor per frame stored in the device itself (vmem_altmap, ndctl --map=dev).</summary>
    Device,
    /// <summary>One descriptor per 2 MiB, split on demand (Rik van Riel).</summary>
    Huge,
    /// <summary>Descriptors populated on first use (Jerome Glisse's vmemmap-on-fault).</summary>
    OnDemand,
}

/// <summary>
/// Maps a region's frames to page descriptors. Implementations decide where descriptors live
/// (nowhere, DRAM, the device) and when they exist (always, per 2 MiB, on first use); callers see
/// one contract, so every alternative of the thread can be selected per region and measured.
/// </summary>
public unsafe interface IPageDescriptorMap : IDisposable
{
    /// <summary>Which alternative this is.</summary>
    DescriptorMapKind Kind { get; }
    /// <summary>Frames that share one descriptor (1, or 512 for a 2 MiB map before a split).</summary>
    int FramesPerDescriptor { get; }
    /// <summary>DRAM the map uses now, in bytes.</summary>
    long DramBytes { get; }
    /// <summary>Device capacity the map reserves, in bytes.</summary>
    long DeviceBytes { get; }
    /// <summary>
    /// The descriptor of frame <paramref name="frameIndex"/> of the region, creating it if the
    /// map populates on demand; null when the map keeps none.
    /// </summary>
    PageDescriptor* Get(long frameIndex);
}

/// <summary>The <see cref="DescriptorMapKind.None"/> map: no frame has a descriptor, none costs anything.</summary>
public sealed unsafe class NoDescriptorMap : IPageDescriptorMap
{
    /// <summary>The single instance; it holds no state.</summary>
    public static NoDescriptorMap Instance { get; } = new();
    private NoDescriptorMap() { }
    /// <inheritdoc/>
    public DescriptorMapKind Kind => DescriptorMapKind.None;
    /// <inheritdoc/>
    public int FramesPerDescriptor => 1;
    /// <inheritdoc/>
    public long DramBytes => 0;
    /// <inheritdoc/>
    public long DeviceBytes => 0;
    /// <inheritdoc/>
    public PageDescriptor* Get(long frameIndex) => null;
    /// <inheritdoc/>
    public void Dispose() { }
}

/// <summary>
/// The <see cref="DescriptorMapKind.Dense"/> map: a DRAM array of one 64-byte descriptor per
/// frame, allocated and initialised up front like the kernel's memmap.
/// </summary>
public sealed unsafe class DenseDescriptorMap : IPageDescriptorMap
{
    private PageDescriptor* _map;
    private readonly long _frames;

    /// <summary>Allocates zeroed descriptors for <paramref name="frameCount"/> frames.</summary>
    public DenseDescriptorMap(long frameCount)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(frameCount);
        _frames = frameCount;
        _map = (PageDescriptor*)NativeMemory.AlignedAlloc((nuint)(frameCount * PageDescriptor.Size), 64);
        NativeMemory.Clear(_map, (nuint)(frameCount * PageDescriptor.Size));
    }

    /// <inheritdoc/>
    public DescriptorMapKind Kind => DescriptorMapKind.Dense;
    /// <inheritdoc/>
    public int FramesPerDescriptor => 1;
    /// <inheritdoc/>
    public long DramBytes => _frames * PageDescriptor.Size;
    /// <inheritdoc/>
    public long DeviceBytes => 0;

    /// <inheritdoc/>
    public PageDescriptor* Get(long frameIndex)
    {
        if ((ulong)frameIndex >= (ulong)_frames)
            throw new ArgumentOutOfRangeException(nameof(frameIndex), frameIndex, $"map covers {_frames} frames");
        return _map + frameIndex;
    }

    /// <inheritdoc/>
    public void Dispose()
    {
        if (_map != null) { NativeMemory.AlignedFree(_map); _map = null; }
    }
}

/// <summary>Creates descriptor maps by kind.</summary>
public static class DescriptorMaps
{
    /// <summary>A map of <paramref name="kind"/> for a region of <paramref name="frameCount"/> frames.</summary>
    /// <exception cref="NotSupportedException">The kind is not implemented yet.</exception>
    public static IPageDescriptorMap Create(DescriptorMapKind kind, long frameCount) => kind switch
    {
        DescriptorMapKind.None => NoDescriptorMap.Instance,
        DescriptorMapKind.Dense => new DenseDescriptorMap(frameCount),
        _ => throw new NotSupportedException($"descriptor map '{kind}' is not implemented yet (available: none, dense)"),
    };
}
