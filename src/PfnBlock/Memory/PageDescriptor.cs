using System.Runtime.InteropServices;
using PfnBlock.Interop;

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
    /// <summary>On a 2 MiB head descriptor: split into 512 descriptors of 4 KiB (its <see cref="PageDescriptor.Private"/> points at them).</summary>
    Split = 16,
}

/// <summary>The page-descriptor alternatives argued in the seed thread.</summary>
/// <remarks>The values are stored in the namespace info block (<c>map_kind</c>); never renumber them.</remarks>
public enum DescriptorMapKind
{
    /// <summary>No descriptors at all (Dan's __pfn_t: I/O needs none; pins are kept per range).</summary>
    None = 0,
    /// <summary>One descriptor per 4 KiB frame in DRAM (the classic memmap; Ingo's "real struct pages", 16 GiB per TiB).</summary>
    Dense = 1,
    /// <summary>One descriptor per frame stored in the device itself, in a reserve in front of the data (vmem_altmap, ndctl --map=dev).</summary>
    Device = 2,
    /// <summary>One descriptor per 2 MiB, split into 4 KiB descriptors where per-frame state is needed (Rik van Riel).</summary>
    Huge = 3,
    /// <summary>The whole memmap reserved as address space and populated by page faults where touched (Jerome Glisse's vmemmap-on-fault).</summary>
    OnDemand = 4,
    /// <summary>Descriptors made per I/O from a pool and dropped at its end (Linus's "fake struct page"): two for one frame do not share state.</summary>
    Temporary = 5,
}

/// <summary>
/// Maps a region's frames to page descriptors. Implementations decide where descriptors live
/// (nowhere, DRAM, the device, a pool) and when they exist (always, per 2 MiB, on first touch,
/// per I/O); callers see one contract, so every alternative of the thread can be selected per
/// region and measured.
/// </summary>
/// <remarks>
/// Two lookups, as in the kernel: <see cref="Get"/> is the descriptor holding frame i's own
/// state (flags such as dirty), <see cref="Head"/> the one holding its reference count
/// (<c>compound_head</c>): the same for maps of 4 KiB descriptors, the 2 MiB descriptor for the
/// huge map even after a split (the kernel's folio refcount), so a pin always counts once per
/// descriptor unit and a split never moves pins.
/// </remarks>
public unsafe interface IPageDescriptorMap : IDisposable
{
    /// <summary>Which alternative this is.</summary>
    DescriptorMapKind Kind { get; }
    /// <summary>Frames that share one reference count: 1, or 512 for the huge map (split or not).</summary>
    int FramesPerDescriptor { get; }
    /// <summary>
    /// True when every lookup of a frame yields the same descriptor, so two users of one frame
    /// (two mappings, an I/O and a mapping) see each other's references. False only for the
    /// temporary map: the aliasing problem of the thread.
    /// </summary>
    bool IsStable { get; }
    /// <summary>DRAM the map uses now, in bytes (for the on-demand map: the pages the kernel populated, measured).</summary>
    long DramBytes { get; }
    /// <summary>Device capacity the map reserves, in bytes.</summary>
    long DeviceBytes { get; }
    /// <summary>
    /// The descriptor of frame <paramref name="frameIndex"/> of the region: its own state. Null
    /// when the map keeps none. The temporary map makes a new one on every call, which the caller
    /// gives back with <see cref="Put"/>.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">The frame is outside the map.</exception>
    PageDescriptor* Get(long frameIndex);
    /// <summary>The descriptor that holds the reference count of frame <paramref name="frameIndex"/> (<c>compound_head</c>); null when the map keeps none.</summary>
    /// <exception cref="ArgumentOutOfRangeException">The frame is outside the map.</exception>
    PageDescriptor* Head(long frameIndex);
    /// <summary>Done with a descriptor from <see cref="Get"/> or <see cref="Head"/>: the temporary map returns it to its pool; stable maps do nothing (<c>put_page</c> of the last reference).</summary>
    void Put(PageDescriptor* descriptor);
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
    public bool IsStable => true;
    /// <inheritdoc/>
    public long DramBytes => 0;
    /// <inheritdoc/>
    public long DeviceBytes => 0;
    /// <inheritdoc/>
    public PageDescriptor* Get(long frameIndex) => null;
    /// <inheritdoc/>
    public PageDescriptor* Head(long frameIndex) => null;
    /// <inheritdoc/>
    public void Put(PageDescriptor* descriptor) { }
    /// <inheritdoc/>
    public void Dispose() { }
}

/// <summary>
/// The <see cref="DescriptorMapKind.Dense"/> map: a DRAM array of one 64-byte descriptor per
/// frame, allocated and initialised up front like the kernel's memmap.
/// </summary>
/// <remarks>
/// The array is its own anonymous mapping, not heap memory: its pages are what the process's
/// RssAnon grows by when the map is made (what <c>pfnblock memmap</c> measures), and they go back
/// to the kernel when it is disposed, rather than staying in a malloc arena for the next one.
/// </remarks>
public sealed unsafe class DenseDescriptorMap : IPageDescriptorMap
{
    private readonly SafeMmapHandle _mapping;
    private readonly PageDescriptor* _map;
    private readonly long _frames;

    /// <summary>Allocates descriptors for <paramref name="frameCount"/> frames, each naming its frame.</summary>
    /// <exception cref="IOException">The memory could not be mapped.</exception>
    public DenseDescriptorMap(long frameCount)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(frameCount);
        _frames = frameCount;
        _mapping = SafeMmapHandle.TryMap((nuint)(frameCount * PageDescriptor.Size), Libc.PROT_READ | Libc.PROT_WRITE, Libc.MAP_PRIVATE | Libc.MAP_ANONYMOUS, -1, 0)
            ?? throw Libc.ErrnoException(Libc.Errno, "mmap(anonymous)", "dense descriptor map");
        _map = (PageDescriptor*)_mapping.Address;
        // Initialised as the kernel's memmap_init_zone does: every descriptor knows its frame (the mapping starts zeroed).
        for (long i = 0; i < frameCount; i++) _map[i].Index = (ulong)i;
    }

    /// <inheritdoc/>
    public DescriptorMapKind Kind => DescriptorMapKind.Dense;
    /// <inheritdoc/>
    public int FramesPerDescriptor => 1;
    /// <inheritdoc/>
    public bool IsStable => true;
    /// <inheritdoc/>
    public long DramBytes => _frames * PageDescriptor.Size;
    /// <inheritdoc/>
    public long DeviceBytes => 0;

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

    /// <inheritdoc/>
    public void Dispose() => _mapping.Dispose();
}

/// <summary>Creates descriptor maps by kind, and names them as the command line does.</summary>
public static class DescriptorMaps
{
    /// <summary>Every kind, in the order the thread argued them.</summary>
    public static IReadOnlyList<DescriptorMapKind> All { get; } =
        [DescriptorMapKind.None, DescriptorMapKind.Dense, DescriptorMapKind.Device, DescriptorMapKind.Huge, DescriptorMapKind.Temporary, DescriptorMapKind.OnDemand];

    /// <summary>
    /// A DRAM-resident map of <paramref name="kind"/> for a region of <paramref name="frameCount"/>
    /// frames. <see cref="DescriptorMapKind.Device"/> needs a device to hold the descriptors and is
    /// made by the namespace that owns the reserve, never here.
    /// </summary>
    /// <exception cref="NotSupportedException">The kind needs a device (a DRAM arena cannot hold it).</exception>
    public static IPageDescriptorMap Create(DescriptorMapKind kind, long frameCount) => kind switch
    {
        DescriptorMapKind.None => NoDescriptorMap.Instance,
        DescriptorMapKind.Dense => new DenseDescriptorMap(frameCount),
        DescriptorMapKind.Huge => new HugeDescriptorMap(frameCount),
        DescriptorMapKind.OnDemand => new OnDemandDescriptorMap(frameCount),
        DescriptorMapKind.Temporary => new TemporaryDescriptorMap(frameCount),
        DescriptorMapKind.Device => throw new NotSupportedException(
            "descriptor map 'device' stores descriptors in a reserve of a pmem namespace; this memory has no device to hold them (use none, dense, huge, temporary or on-demand)"),
        _ => throw new NotSupportedException($"unknown descriptor map kind {(int)kind}"),
    };

    /// <summary>The command-line name of a kind: none, dense, device, huge, temporary, on-demand.</summary>
    public static string Name(DescriptorMapKind kind) => kind == DescriptorMapKind.OnDemand ? "on-demand" : kind.ToString().ToLowerInvariant();

    /// <summary>The kind a command-line name stands for.</summary>
    /// <exception cref="ArgumentException">Not a kind's name.</exception>
    public static DescriptorMapKind Parse(string name)
    {
        foreach (DescriptorMapKind kind in All)
            if (string.Equals(Name(kind), name, StringComparison.OrdinalIgnoreCase)) return kind;
        throw new ArgumentException($"unknown descriptor map '{name}' (one of: {string.Join(", ", All.Select(Name))})");
    }

    [System.Diagnostics.CodeAnalysis.DoesNotReturn]
    internal static void ThrowOutOfRange(long frameIndex, long frames) =>
        throw new ArgumentOutOfRangeException(nameof(frameIndex), frameIndex, $"map covers {frames} frames");
}
