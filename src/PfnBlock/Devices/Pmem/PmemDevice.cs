using PfnBlock.Block;
using PfnBlock.Memory;
using PfnBlock.Namespaces;

namespace PfnBlock.Devices.Pmem;

/// <summary>
/// The block device of a raw-mode namespace (the kernel's <c>drivers/nvdimm/pmem.c</c>): reads
/// copy out of the mapping, writes copy in with non-temporal stores and a store fence
/// (<c>memcpy_flushcache</c>), PREFLUSH runs before the data and FUA after it. Also offers direct
/// access by pfn.
/// </summary>
public sealed unsafe class PmemDevice : MemoryDevice, IDaxDevice
{
    private readonly PmemNamespace _ns;
    private readonly bool _ownsNamespace;
    private readonly DeviceLimits _limits;
    private readonly DeviceFeatures _features;

    /// <summary>Creates the device over an open namespace.</summary>
    /// <param name="ns">The namespace.</param>
    /// <param name="ownsNamespace">Dispose the namespace with the device.</param>
    public PmemDevice(PmemNamespace ns, bool ownsNamespace = true)
        : base(System.IO.Path.GetFileName(ns.Path), ns.DataAddress, ns.DataSize, ns.Region.AddressSpace)
    {
        // Raw access would bypass (and corrupt) the BTT of a sector namespace.
        if (ns.Info.Mode == NamespaceMode.Sector) throw new NotSupportedException($"'{ns.Path}' is a sector (BTT) namespace; open it through BttDevice");
        _ns = ns;
        _ownsNamespace = ownsNamespace;
        _limits = DeviceLimits.Memory((int)ns.Info.SectorSize);
        // A read-only namespace is mapped PROT_READ: writes must be refused at the device edge, not fault.
        _features = DeviceFeatures.WriteCache | DeviceFeatures.Fua | DeviceFeatures.Discard | DeviceFeatures.DiscardZeroesData
            | DeviceFeatures.WriteZeroes | DeviceFeatures.Dax | DeviceFeatures.Synchronous
            | (ns.ReadOnly ? DeviceFeatures.ReadOnly : DeviceFeatures.None);
    }

    /// <summary>Opens the namespace at <paramref name="path"/> and creates its device.</summary>
    public static PmemDevice Open(string path, PhysicalAddressSpace? space = null) => new(PmemNamespace.Open(path, space));

    /// <summary>The namespace under the device.</summary>
    public PmemNamespace Namespace => _ns;

    /// <inheritdoc/>
    public override DeviceLimits Limits => _limits;

    /// <inheritdoc/>
    public override DeviceFeatures Features => _features;

    /// <inheritdoc/>
    protected override void WriteData(byte* dst, byte* src, nuint length) => PersistentMemory.CopyNonTemporal(dst, src, length);
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
    public long DirectAccess(long pageOffset, long pages, out Pfn pfn, out byte* address)
    {
        long total = _ns.Region.FrameCount;
        if (pageOffset < 0 || pageOffset >= total || pages <= 0) { pfn = default; address = null; return 0; }
        pfn = _ns.Region.PfnAt(pageOffset);
        address = _ns.DataAddress + (pageOffset << Pfn.PageShift);
        return Math.Min(pages, total - pageOffset);
    }

    /// <inheritdoc/>
    void IDaxDevice.PersistRange(long offset, long length) => _ns.PersistRange(offset, length);

    /// <inheritdoc/>
    protected override void Dispose(bool disposing)
    {
        if (_ownsNamespace) _ns.Dispose();
    }
}
