using System.Runtime.CompilerServices;
using PfnBlock.Block;
using PfnBlock.Memory;
using PfnBlock.Namespaces;
using PfnBlock.Namespaces.Btt;
using BlockTranslationTable = PfnBlock.Namespaces.Btt.Btt;

namespace PfnBlock.Devices.Btt;

/// <summary>
/// The block device of a sector namespace or a PMDK pmemblk pool (the kernel's
/// <c>drivers/nvdimm/btt.c</c> block driver): every logical block is written atomically through
/// the <see cref="BlockTranslationTable"/>. Discard and write-zeroes set the map's zero flag; a
/// block in the error state fails reads with <see cref="BlockStatus.MediaError"/> until rewritten.
/// </summary>
/// <remarks>
/// Ordering: PREFLUSH makes every earlier write durable before the bio's data; each block then
/// goes through the BTT write path; FUA makes each block durable before the bio completes (on a
/// page-cache mapping: msync of data block, then flog line, then map entry); FLUSH msyncs the
/// mapping. Under MAP_SYNC every write is durable when it completes and FLUSH is a fence.
/// </remarks>
public sealed unsafe class BttDevice : BlockDevice, IRegisteredDevice, IAllocationMap, IBadSectorMap
{
    private readonly BlockTranslationTable _btt;
    private readonly IDisposable _owner;
    private readonly DeviceLimits _limits;
    private readonly long _sectors;
    private readonly int _lbaSize;
    private readonly DeviceFeatures _features;

    /// <summary>Creates the device over an open BTT whose media <paramref name="owner"/> keeps mapped.</summary>
    /// <param name="btt">The translation table.</param>
    /// <param name="owner">Keeps the media mapped; disposed with the device.</param>
    /// <param name="name">The device name.</param>
    /// <param name="space">The address space bio vectors are numbered in.</param>
    /// <param name="readOnly">Refuse every write (the media is a read-only file's private copy).</param>
    public BttDevice(BlockTranslationTable btt, IDisposable owner, string name, PhysicalAddressSpace? space = null, bool readOnly = false) : base(name, space)
    {
        _features = DeviceFeatures.WriteCache | DeviceFeatures.Fua | DeviceFeatures.Discard | DeviceFeatures.DiscardZeroesData
            | DeviceFeatures.WriteZeroes | DeviceFeatures.Synchronous | DeviceFeatures.AllocationMap
            | (readOnly ? DeviceFeatures.ReadOnly : DeviceFeatures.None);
        _btt = btt;
        _owner = owner;
        _lbaSize = btt.LbaSize;
        _sectors = btt.ExternalNlba * _lbaSize >> Bio.SectorShift;
        _limits = DeviceLimits.Memory(_lbaSize) with { PhysicalBlockSize = _lbaSize };
    }

    /// <inheritdoc/>
    public static DeviceType Type { get; } = new()
    {
        Name = "sector",
        Summary = "a sector-mode namespace (namespace create --mode sector) or a PMDK pmemblk pool, through its BTT: every block is written atomically",
        Arguments = [new("PATH", ArgumentKind.Path, "the namespace or pool file")],
        Open = (spec, ctx) => OpenPath(spec.Arguments[0], ctx.AddressSpace, ctx.ReadOnly),
        Samples = [new("512-byte blocks", s => Sample(s, 512)), new("4096-byte blocks", s => Sample(s, 4096))],
    };

    private static string Sample(SampleContext s, uint lbaSize)
    {
        string path = s.NewPath($"sector{lbaSize}");
        PmemNamespace.Create(path, new NamespaceCreateOptions { Size = 20 << 20, Mode = NamespaceMode.Sector, SectorSize = lbaSize }).Dispose();
        return "sector:" + DeviceSpec.Quote(path);
    }

    /// <summary>Opens the BTT of the sector namespace or pmemblk pool at <paramref name="path"/>.</summary>
    /// <param name="path">The sector namespace or pool file.</param>
    /// <param name="space">The address space bio vectors are numbered in.</param>
    /// <param name="readOnly">Open O_RDONLY with a shared claim and a private copy-on-write mapping; writes are refused.</param>
    /// <exception cref="NotSupportedException">The path holds a raw namespace (no BTT).</exception>
    public static BttDevice OpenPath(string path, PhysicalAddressSpace? space = null, bool readOnly = false)
    {
        NamespaceProbeResult probe = NamespaceProbe.Probe(path);
        if (probe.Kind == NamespaceKind.PmemblkPool) return OpenPmemblk(path, space, readOnly: readOnly);
        if (!probe.IsNamespace) throw probe.ToException("a sector namespace or PMDK pmemblk pool");
        PmemNamespace ns = PmemNamespace.Open(path, space, readOnly);
        try { return OpenNamespace(ns); }
        catch
        {
            ns.Dispose();
            throw;
        }
    }

    /// <inheritdoc/>
    public override string Description => $"sector device {Name} ({Common.SizeParser.Format(CapacityBytes)}, {_lbaSize}-byte atomic blocks through a BTT)";

    /// <summary>The BTT the device reads and writes through. Calls made on it directly bypass the block layer's validation and statistics (tools and tests use it, e.g. to set error flags).</summary>
    public BlockTranslationTable Btt => _btt;

    /// <inheritdoc/>
    public override long CapacitySectors => _sectors;
    /// <inheritdoc/>
    public override DeviceLimits Limits => _limits;
    /// <inheritdoc/>
    public override DeviceFeatures Features => _features;

    /// <summary>Opens the BTT of a sector namespace; the device owns the namespace.</summary>
    public static BttDevice OpenNamespace(PmemNamespace ns, int lanes = 0)
    {
        if (ns.Info.Mode != NamespaceMode.Sector) throw new NotSupportedException($"'{ns.Path}' is a raw namespace; it has no BTT");
        BlockTranslationTable btt = BlockTranslationTable.Open(BttMedia.ForNamespace(ns),
            new BttOptions { LbaSize = ns.Info.SectorSize, ParentUuid = ns.Info.Uuid, Flavor = BttFlavor.Kernel, Lanes = lanes });
        return new BttDevice(btt, ns, Path.GetFileName(ns.Path), ns.Region.AddressSpace, ns.ReadOnly);
    }

    /// <summary>Opens a PMDK pmemblk pool file (laying out its BTT on the first write if it has none yet).</summary>
    /// <param name="path">The pool file.</param>
    /// <param name="space">The address space bio vectors are numbered in.</param>
    /// <param name="lanes">BTT lanes (0: one per processor).</param>
    /// <param name="readOnly">Open the file read-only with a shared claim and a private copy-on-write mapping; writes are refused.</param>
    public static BttDevice OpenPmemblk(string path, PhysicalAddressSpace? space = null, int lanes = 0, bool readOnly = false)
    {
        PmemblkPool pool = PmemblkPool.Open(path, writable: !readOnly, privateCopy: readOnly);
        try
        {
            BlockTranslationTable btt = BlockTranslationTable.Open(pool.Media, pool.BttOptions(lanes));
            return new BttDevice(btt, pool, Path.GetFileName(path), space, readOnly);
        }
        catch
        {
            pool.Dispose();
            throw;
        }
    }

    /// <inheritdoc/>
    protected override void SubmitCore(Bio bio)
    {
        BlockStatus status = BlockStatus.Ok;
        bool fua = (bio.Flags & BioFlags.Fua) != 0;
        if ((bio.Flags & BioFlags.Preflush) != 0 || bio.Op == BioOp.Flush) status = Flush();
        if (status == BlockStatus.Ok)
        {
            switch (bio.Op)
            {
                case BioOp.Read: status = Transfer(bio, write: false, fua); break;
                case BioOp.Write: status = Transfer(bio, write: true, fua); break;
                case BioOp.Discard:
                case BioOp.WriteZeroes:
                    long first = (bio.Sector << Bio.SectorShift) / _lbaSize;
                    long count = bio.Size / _lbaSize;
                    for (long i = 0; i < count && status == BlockStatus.Ok; i++) status = ToBlockStatus(_btt.SetZero(first + i, fua));
                    break;
            }
        }
        bio.Complete(status);
    }

    private BlockStatus Flush()
    {
        try { _btt.Flush(); return BlockStatus.Ok; }
        catch (IOException) { return BlockStatus.IoError; }
    }

    /// <summary>
    /// Moves the bio one logical block at a time. A block that lies within one segment goes
    /// straight between the segment and the BTT; a block split across segments goes through a
    /// bounce buffer, so every block stays atomic whatever the vector layout.
    /// </summary>
    [SkipLocalsInit]
    private BlockStatus Transfer(Bio bio, bool write, bool fua)
    {
        PhysicalAddressSpace space = AddressSpace;
        int lbs = _lbaSize;
        long lba = (bio.Sector << Bio.SectorShift) / lbs;
        byte* bounce = stackalloc byte[lbs];
        int filled = 0;
        try
        {
            foreach (BioVec seg in bio.Segments)
            {
                byte* mem = space.TryKmap(seg.Pfn, seg.Offset, seg.Length);
                if (mem == null) return BlockStatus.Invalid;
                uint off = 0;
                while (off < seg.Length)
                {
                    uint left = seg.Length - off;
                    if (filled == 0 && left >= lbs)
                    {
                        BttStatus s = write ? _btt.Write(lba, mem + off, fua) : _btt.Read(lba, mem + off);
                        if (s != BttStatus.Ok) return ToBlockStatus(s);
                        lba++;
                        off += (uint)lbs;
                        continue;
                    }
                    int n = (int)Math.Min(left, (uint)(lbs - filled));
                    if (write)
                    {
                        Buffer.MemoryCopy(mem + off, bounce + filled, n, n);
                    }
                    else
                    {
                        if (filled == 0)
                        {
                            BttStatus s = _btt.Read(lba, bounce);
                            if (s != BttStatus.Ok) return ToBlockStatus(s);
                        }
                        Buffer.MemoryCopy(bounce + filled, mem + off, n, n);
                    }
                    filled += n;
                    off += (uint)n;
                    if (filled == lbs)
                    {
                        if (write)
                        {
                            BttStatus s = _btt.Write(lba, bounce, fua);
                            if (s != BttStatus.Ok) return ToBlockStatus(s);
                        }
                        lba++;
                        filled = 0;
                    }
                }
            }
            return BlockStatus.Ok;
        }
        catch (IOException)
        {
            return BlockStatus.IoError;
        }
    }

    /// <summary>
    /// The map's answer, block by block: a sector never written since layout (initial entry) is a
    /// hole, one discarded or zeroed (Z flag) is zero, anything else — data, or an error the read
    /// would report — is data.
    /// </summary>
    public AllocationState QueryAllocation(long sector, long sectors, out long run)
    {
        if (IsDisposed)
        {
            run = sectors; // the map is gone with the mapping
            return AllocationState.Data;
        }
        long perBlock = _lbaSize >> Bio.SectorShift;
        long lba = sector / perBlock, last = (sector + sectors - 1) / perBlock;
        AllocationState state = StateOf(lba);
        long next = lba + 1;
        while (next <= last && StateOf(next) == state) next++;
        run = Math.Min(sector + sectors, next * perBlock) - sector;
        return state;
    }

    /// <summary>Sectors whose map entries carry the error flag (E), found by walking the map from the range's first sector.</summary>
    public bool FindBadSectors(long sector, long sectors, out long badStart, out long badCount)
    {
        badStart = badCount = 0;
        if (IsDisposed) return false;
        long perBlock = _lbaSize >> Bio.SectorShift, total = _btt.ExternalNlba;
        long lba = sector / perBlock, last = Math.Min(total - 1, (sector + sectors - 1) / perBlock);
        while (lba <= last && !_btt.MapEntryOf(lba).IsError) lba++;
        if (lba > last) return false;
        long end = lba + 1;
        while (end < total && _btt.MapEntryOf(end).IsError) end++;
        badStart = lba * perBlock;
        badCount = (end - lba) * perBlock;
        return true;
    }

    private AllocationState StateOf(long lba)
    {
        MapEntry e = _btt.MapEntryOf(lba);
        return e.IsInitial ? AllocationState.Hole : e.IsZero ? AllocationState.Zero : AllocationState.Data;
    }

    /// <summary>
    /// What a BTT outcome means to a bio. The edge has already checked bounds, so
    /// <see cref="BttStatus.OutOfRange"/> only passes through; everything the media refuses
    /// (an E-flagged sector, a damaged map entry, an arena in the error state) is EIO, as in the
    /// kernel's btt.c; an E-flagged sector says so (<see cref="BlockStatus.MediaError"/>), since a write repairs it.
    /// </summary>
    internal static BlockStatus ToBlockStatus(BttStatus status) => status switch
    {
        BttStatus.Ok => BlockStatus.Ok,
        BttStatus.OutOfRange => BlockStatus.OutOfRange,
        BttStatus.MediaError => BlockStatus.MediaError,
        _ => BlockStatus.IoError,
    };

    /// <inheritdoc/>
    protected override void Dispose(bool disposing) => _owner.Dispose();
}
