using PfnBlock.Block;
using PfnBlock.Common;
using PfnBlock.Devices.Btt;
using PfnBlock.Memory;
using PfnBlock.Namespaces;

namespace PfnBlock.Devices.Pmem;

/// <summary>
/// The block device of a raw-mode namespace (the kernel's <c>drivers/nvdimm/pmem.c</c>): reads
/// copy out of the mapping, writes copy in with non-temporal stores and a store fence
/// (<c>memcpy_flushcache</c>), PREFLUSH runs before the data and FUA after it. Also offers direct
/// access by pfn; ranges handed out are pinned, and a discard or write-zeroes of a pinned range
/// answers Busy (requeued by the core) until the pins are gone, refusing new pins meanwhile.
/// </summary>
/// <remarks>
/// Sparse and bad blocks (<c>PmemDevice.Media.cs</c>): on tmpfs a discard of whole pages punches
/// them out of the namespace file and the allocation map reports them as holes; the namespace's
/// bad-block list fails reads (and direct access) touching a bad block, and a write of whole
/// sectors clears the blocks it covers, as the kernel's pmem driver does with poison.
/// </remarks>
public sealed unsafe partial class PmemDevice : MemoryDevice, IDaxDevice, IRegisteredDevice, IBadSectorMap
{
    /// <summary>How long disposing waits for direct-access pins to be released before unmapping anyway.</summary>
    private static readonly TimeSpan s_pinDrainTimeout = TimeSpan.FromSeconds(30);

    private readonly PmemNamespace _ns;
    private readonly bool _ownsNamespace;
    private readonly DeviceLimits _limits;
    private readonly DeviceFeatures _features;
    private readonly IFramePins _pins;

    /// <summary>Creates the device over an open namespace.</summary>
    /// <param name="ns">An open raw namespace; its data area becomes the device's sectors.</param>
    /// <param name="ownsNamespace">Dispose the namespace with the device.</param>
    public PmemDevice(PmemNamespace ns, bool ownsNamespace = true)
        : base(System.IO.Path.GetFileName(ns.Path), ns.DataAddress, ns.DataSize, ns.Region.AddressSpace)
    {
        // Raw access would bypass (and corrupt) the BTT of a sector namespace.
        if (ns.Info.Mode == NamespaceMode.Sector) throw new NotSupportedException($"'{ns.Path}' is a sector (BTT) namespace; open it through BttDevice");
        _ns = ns;
        _pins = ns.Region.Pins;
        _ownsNamespace = ownsNamespace;
        _limits = DeviceLimits.Memory((int)ns.Info.SectorSize);
        // A read-only namespace is mapped PROT_READ: writes must be refused at the device edge, not fault.
        _features = DeviceFeatures.WriteCache | DeviceFeatures.Fua | DeviceFeatures.Discard | DeviceFeatures.DiscardZeroesData
            | DeviceFeatures.WriteZeroes | DeviceFeatures.Dax | DeviceFeatures.Synchronous | DeviceFeatures.AllocationMap
            | (ns.ReadOnly ? DeviceFeatures.ReadOnly : DeviceFeatures.None);
    }

    /// <inheritdoc/>
    public static DeviceType Type { get; } = new()
    {
        Name = "pmem",
        Summary = "a pmem namespace (pfnblock namespace create); a sector-mode namespace or a PMDK pmemblk pool opens through its BTT, as sector:PATH",
        Arguments = [new("PATH", ArgumentKind.Path, "the namespace file or device")],
        Open = (spec, ctx) => OpenPath(spec.Arguments[0], ctx.AddressSpace, ctx.ReadOnly),
        Samples = [new("512-byte sectors", s => Sample(s, 512)), new("4096-byte sectors", s => Sample(s, 4096))],
    };

    private static string Sample(SampleContext s, uint sectorSize)
    {
        string path = s.NewPath($"pmem{sectorSize}");
        PmemNamespace.Create(path, new NamespaceCreateOptions { Size = 16 << 20, SectorSize = sectorSize }).Dispose();
        return "pmem:" + DeviceSpec.Quote(path);
    }

    /// <summary>Opens whatever namespace or pool is at <paramref name="path"/>: raw namespaces here, sector namespaces and pmemblk pools through <see cref="BttDevice"/>.</summary>
    /// <param name="path">The namespace or pool file.</param>
    /// <param name="space">The address space its frames are numbered in.</param>
    /// <param name="readOnly">Open O_RDONLY with a shared claim; nothing is written to the file and the device refuses writes.</param>
    public static IBlockDevice OpenPath(string path, PhysicalAddressSpace? space = null, bool readOnly = false)
    {
        NamespaceProbeResult probe = NamespaceProbe.Probe(path);
        if (probe.Kind == NamespaceKind.PmemblkPool) return BttDevice.OpenPmemblk(path, space, readOnly: readOnly);
        if (!probe.IsNamespace) throw probe.ToException("a PfnBlock namespace or PMDK pmemblk pool");
        PmemNamespace ns = PmemNamespace.Open(path, space, readOnly);
        try
        {
            return ns.Info.Mode == NamespaceMode.Sector ? BttDevice.OpenNamespace(ns) : new PmemDevice(ns);
        }
        catch
        {
            ns.Dispose();
            throw;
        }
    }

    /// <summary>Opens the raw namespace at <paramref name="path"/> and creates its device.</summary>
    public static PmemDevice Open(string path, PhysicalAddressSpace? space = null) => new(PmemNamespace.Open(path, space));

    /// <summary>The namespace under the device.</summary>
    public PmemNamespace Namespace => _ns;

    /// <summary>How writes reach the persistence domain (for a stacked user that must know, e.g. a write cache: under MAP_SYNC a fence makes its stores durable).</summary>
    public PersistenceMode Persistence => _ns.Persistence;

    /// <summary>The namespace's uuid (its identity: kept when the file is renamed).</summary>
    public Guid NamespaceUuid => _ns.Info.Uuid;

    /// <summary>The pins of the namespace's frames (ranges handed out by <see cref="DirectAccess"/> among them), kept as the namespace's descriptor map decides.</summary>
    public IFramePins Pins => _pins;

    /// <inheritdoc/>
    public override DeviceLimits Limits => _limits;

    /// <inheritdoc/>
    public override DeviceFeatures Features => _features;

    /// <inheritdoc/>
    public override string Description => $"pmem namespace {_ns.Path} ({SizeParser.Format(CapacityBytes)}); {_ns.PersistenceDescription}";

    /// <inheritdoc/>
    protected override void SubmitCore(Bio bio)
    {
        switch (bio.Op)
        {
            case BioOp.Discard or BioOp.WriteZeroes: SubmitZeroing(bio); break;
            case BioOp.Read: SubmitRead(bio); break;
            case BioOp.Write: SubmitWrite(bio); break;
            default: base.SubmitCore(bio); break;
        }
    }

    /// <summary>Zeroes a range nobody has pinned: fence it against new pins, wait (as Busy) for the old ones, then zero.</summary>
    private void SubmitZeroing(Bio bio)
    {
        long first = bio.Sector >> (Pfn.PageShift - Bio.SectorShift);
        long pages = ((bio.Sector << Bio.SectorShift) + bio.Size + Pfn.PageSize - 1 >> Pfn.PageShift) - first;
        // A requeued bio comes back with the fence it put up, so a stream of new pins cannot starve it.
        int fence = bio.DriverCookie != 0 ? (int)bio.DriverCookie - 1 : _pins.Fence(first, pages);
        if (fence < 0 || _pins.IsPinned(first, pages))
        {
            bio.DriverCookie = fence + 1;
            bio.Complete(BlockStatus.Busy);
            return;
        }
        bio.DriverCookie = 0;
        BlockStatus status = Process(bio);
        _pins.Unfence(fence);
        // Zeros over whole sectors replace what a media error lost (PmemDevice.Media.cs).
        if (status == BlockStatus.Ok) status = ClearBadBlocks(bio.Sector, bio.Size);
        bio.Complete(status);
    }

    /// <inheritdoc/>
    protected override void WriteData(byte* dst, byte* src, nuint length) => PersistentMemory.CopyNonTemporal(dst, src, length);
    /// <inheritdoc/>
    protected override void WriteBatch(ReadOnlySpan<CopyPiece> pieces) => InterleavedCopy.Stream(pieces);
    /// <inheritdoc/>
    protected override void ZeroData(byte* dst, nuint length) => PersistentMemory.ZeroNonTemporal(dst, length);
    /// <inheritdoc/>
    protected override void WriteDone() => PersistentMemory.Drain();

    /// <inheritdoc/>
    protected override BlockStatus FlushCache()
    {
        try { _ns.Flush(); return BlockStatus.Ok; }
        catch (IOException) { return BlockStatus.IoError; }
    }

    /// <inheritdoc/>
    protected override BlockStatus PersistRange(long offset, long length)
    {
        if (_ns.Persistence == PersistenceMode.CpuCache) return BlockStatus.Ok; // NT stores + fence already did it
        try { _ns.PersistRange(offset, length); return BlockStatus.Ok; }
        catch (IOException) { return BlockStatus.IoError; }
    }

    /// <inheritdoc/>
    public long DirectAccess(long pageOffset, long pages, out DaxRange range)
    {
        range = default;
        long total = _ns.Region.FrameCount;
        if (IsDisposed || pageOffset < 0 || pageOffset >= total || pages <= 0) return 0;
        long n = Math.Min(Math.Min(pages, total - pageOffset), RangePinTable.MaxPages);
        // __pmem_direct_access: no mapping of a bad block; the caller's read goes through a bio, which fails there.
        if (TouchesBadBlocks(pageOffset << (Pfn.PageShift - Bio.SectorShift), n << Pfn.PageShift)) return 0;
        FramePin pin = FramePin.TryPin(_pins, pageOffset, n);
        if (!pin.IsPinned) return 0;
        range = new DaxRange(_ns.Region.PfnAt(pageOffset), _ns.DataAddress + (pageOffset << Pfn.PageShift), n, pin);
        return n;
    }

    /// <inheritdoc/>
    void IDaxDevice.PersistRange(long offset, long length) => _ns.PersistRange(offset, length);

    /// <summary>Maps <paramref name="pages"/> pages from <paramref name="pageOffset"/> for an application's loads and stores (see <see cref="DaxMapping"/>).</summary>
    /// <exception cref="ArgumentOutOfRangeException">The range leaves the namespace.</exception>
    /// <exception cref="InvalidOperationException">A discard of the range is pending (it cannot be pinned now), or the device is gone.</exception>
    public DaxMapping MapDax(long pageOffset, long pages)
    {
        long total = _ns.Region.FrameCount;
        if (pageOffset < 0 || pages <= 0 || pageOffset > total - pages)
            throw new ArgumentOutOfRangeException(nameof(pageOffset), $"pages [{pageOffset}, +{pages}) are not inside the namespace's {total} pages");
        long got = DirectAccess(pageOffset, pages, out DaxRange range);
        if (got == pages) return new DaxMapping(_ns.Region, _ns.Persistence, range.Pin);
        if (got > 0) range.Unpin();
        throw new InvalidOperationException($"pages [{pageOffset}, +{pages}) of {_ns.Path} cannot be pinned now (a discard of them is pending, or the device is closing)");
    }

    /// <inheritdoc/>
    protected override void Dispose(bool disposing)
    {
        // Unmapping under a pin would pull the memory from under a reply still being sent.
        SpinWait.SpinUntil(() => !_pins.AnyPinned, s_pinDrainTimeout);
        if (_ownsNamespace) _ns.Dispose();
    }
}
