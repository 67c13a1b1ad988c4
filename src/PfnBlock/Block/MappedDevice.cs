using PfnBlock.Memory;

namespace PfnBlock.Block;

/// <summary>One line of a mapped device's table: a target and the sector range it serves.</summary>
/// <param name="Begin">First sector of the range on the mapped device.</param>
/// <param name="Length">Sectors in the range.</param>
/// <param name="TypeName">The target type's name as the table names it (<c>linear</c>).</param>
/// <param name="Target">The target.</param>
public sealed record TableEntry(long Begin, long Length, string TypeName, Target Target)
{
    /// <summary>The line as <c>dmsetup table</c> prints it: <c>begin length type arguments</c> (no trailing space for a target without arguments).</summary>
    public override string ToString() => Target.Arguments.Length == 0 ? $"{Begin} {Length} {TypeName}" : $"{Begin} {Length} {TypeName} {Target.Arguments}";
}

/// <summary>
/// A device whose sectors are mapped onto other devices by a table of targets (the kernel's
/// device-mapper <c>mapped_device</c>): the core of every stacked device. It splits bios at target
/// boundaries, sends flushes to every target, peels a PREFLUSH off into a flush of every lower
/// device when there are several, and hands each piece to its target's <see cref="Target.Map"/>.
/// </summary>
/// <remarks>
/// <para>Statistics stay right whichever way a target maps: the bio carries a completion frame
/// for this device (see <see cref="Bio"/>) whether it is remapped in place, split, cloned or
/// completed by the target, so this device counts it once, as its submitter sent it.</para>
/// <para>Limits and features are those of the lower devices combined by <see cref="StackedLimits"/>,
/// restricted to what the targets pass through; a table whose ranges are not aligned to the
/// combined logical block size is refused.</para>
/// </remarks>
public sealed class MappedDevice : BlockDevice, IDaxDevice, IAllocationMap, IBadSectorMap
{
    private readonly TableEntry[] _entries;
    private readonly long[] _begins;
    private readonly IDisposable? _owned;
    private readonly BioPool _pool;
    private readonly DeviceLimits _limits;
    private readonly DeviceFeatures _features;
    private readonly long _sectors;
    private readonly int _flushFanOut;
    private readonly IBioEndIo?[] _hooks;
    private readonly Action<Bio> _afterPreflush;
    // A one-line table's target, start and hook, for the remap fast path (null for several lines).
    private readonly Target? _single;
    private readonly long _singleBegin;
    private readonly IBioEndIo? _singleHook;
    private readonly bool _singleChecked;

    /// <summary>Creates a device mapping <paramref name="entries"/>, which must cover sectors 0.. without gaps or overlaps.</summary>
    /// <param name="name">The device's name.</param>
    /// <param name="entries">The table, in sector order.</param>
    /// <param name="owned">Released after the targets on dispose: the lower devices the table holds.</param>
    /// <param name="addressSpace">The address space of a table whose targets have no lower device (error, zero); else the lower devices' space.</param>
    /// <exception cref="ArgumentException">The table is empty, has gaps or overlaps, is misaligned for its lower devices, or mixes address spaces.</exception>
    public MappedDevice(string name, IReadOnlyList<TableEntry> entries, IDisposable? owned = null, PhysicalAddressSpace? addressSpace = null)
        : base(name, FirstAddressSpace(entries) ?? addressSpace)
    {
        if (entries.Count == 0) throw new ArgumentException("a table needs at least one target");
        _entries = [.. entries];
        _begins = new long[_entries.Length];
        _hooks = new IBioEndIo?[_entries.Length];
        long next = 0;
        var lower = new List<IBlockDevice>();
        DeviceFeatures features = ~DeviceFeatures.None, adds = DeviceFeatures.None;
        for (int i = 0; i < _entries.Length; i++)
        {
            TableEntry e = _entries[i];
            if (e.Length <= 0) throw new ArgumentException($"table line {i + 1}: length must be positive ({e})");
            if (e.Begin != next)
                throw new ArgumentException(e.Begin > next
                    ? $"table line {i + 1}: gap before sector {e.Begin} (the previous line ends at {next})"
                    : $"table line {i + 1}: starts at sector {e.Begin}, overlapping the previous line (which ends at {next})");
            next = e.Begin + e.Length;
            _begins[i] = e.Begin;
            _hooks[i] = e.Target as IBioEndIo;
            lower.AddRange(e.Target.Devices);
            if (e.Target.Devices.Count > 0) features &= e.Target.PassesThrough | e.Target.Adds;
            adds |= e.Target.Adds;
            _flushFanOut += e.Target.FlushBios;
        }
        _sectors = next;

        DeviceLimits limits = lower.Count > 0 ? StackedLimits.Limits(lower) : DeviceLimits.Memory();
        foreach (TableEntry e in _entries) limits = e.Target.AdjustLimits(limits);
        long lbsSectors = limits.LogicalBlockSize >> Bio.SectorShift;
        foreach (TableEntry e in _entries)
            if (e.Begin % lbsSectors != 0 || e.Length % lbsSectors != 0)
                throw new ArgumentException($"table line '{e}' is not aligned to the {limits.LogicalBlockSize}-byte logical block size of the devices below");
        _limits = limits;
        _features = ((lower.Count > 0 ? StackedLimits.Features(lower) : DeviceFeatures.Synchronous | DeviceFeatures.Discard
            | DeviceFeatures.WriteZeroes | DeviceFeatures.DiscardZeroesData) & features) | adds;
        if (_entries.Any(e => (e.Target.PassesThrough & DeviceFeatures.Dax) == 0)) _features &= ~DeviceFeatures.Dax;
        _owned = owned;
        _pool = new BioPool(new BioPoolOptions { Name = $"{name}-clones" });
        _afterPreflush = AfterPreflush;
        if (_entries.Length == 1)
        {
            _single = _entries[0].Target;
            _singleBegin = _begins[0];
            _singleHook = _hooks[0];
            _singleChecked = _single.RemapsWithinLimits;
        }
    }

    private static PhysicalAddressSpace? FirstAddressSpace(IReadOnlyList<TableEntry> entries)
    {
        foreach (TableEntry e in entries)
            foreach (IBlockDevice d in e.Target.Devices) return d.AddressSpace;
        return null;
    }

    /// <summary>The table, in sector order.</summary>
    public IReadOnlyList<TableEntry> Table => _entries;

    /// <summary>Splits and flush clones this device made that have not completed yet (0 when idle: a leak check).</summary>
    public long ClonesOutstanding => _pool.Outstanding;

    /// <summary>The table as text, one <c>dmsetup table</c> line per target.</summary>
    public string TableText => string.Join('\n', _entries.Select(e => e.ToString()));

    /// <inheritdoc/>
    public override long CapacitySectors => _sectors;
    /// <inheritdoc/>
    public override DeviceLimits Limits => _limits;
    /// <inheritdoc/>
    public override DeviceFeatures Features => _features;
    /// <inheritdoc/>
    public override string Description => $"mapped device {Name} ({CapacityBytes} bytes, {_entries.Length} target{(_entries.Length == 1 ? "" : "s")}: {string.Join(", ", _entries.Select(e => e.TypeName).Distinct())})";

    /// <summary>The fast path of a one-line table that remaps in place: the core goes on to the lower device without queuing.</summary>
    private protected override BlockDevice? SubmitOrRemap(Bio bio, out bool checkedRemap)
    {
        checkedRemap = false;
        Target? single = _single;
        if (single is null || bio.Op == BioOp.Flush || ((bio.Flags & BioFlags.Preflush) != 0 && _flushFanOut > 1))
        {
            SubmitCore(bio);
            return null;
        }
        bio.Iter.Sector -= _singleBegin;
        switch (single.Map(bio, out IBlockDevice? lower))
        {
            case MapResult.Remapped:
                if (_singleHook is IBioEndIo hook) bio.PushEndIo(hook);
                if (lower is BlockDevice next)
                {
                    checkedRemap = _singleChecked;
                    return next;
                }
                lower!.Submit(bio);
                return null;
            case MapResult.Requeue:
                bio.Complete(BlockStatus.Busy);
                return null;
            default:
                return null;
        }
    }

    /// <inheritdoc/>
    protected override void SubmitCore(Bio bio)
    {
        if (bio.Op == BioOp.Flush) { SubmitFlush(bio); return; }
        if ((bio.Flags & BioFlags.Preflush) != 0 && _flushFanOut > 1)
        {
            // Several devices below: every one must be flushed before any of the data is written,
            // so the preflush becomes a flush of the whole table that the data waits for.
            bio.Flags &= ~BioFlags.Preflush;
            Bio flush = _pool.Rent(BioOp.Flush, 0);
            flush.Private = bio;
            flush.EndIo = _afterPreflush;
            Submit(flush);
            return;
        }
        MapData(bio);
    }

    private void AfterPreflush(Bio flush)
    {
        var bio = (Bio)flush.Private!;
        BlockStatus status = flush.Status;
        flush.Release();
        if (status != BlockStatus.Ok) bio.Complete(status);
        else MapData(bio);
    }

    private void MapData(Bio bio)
    {
        if (_entries.Length == 1) { MapPiece(0, bio); return; }
        int i = Find(bio.Sector);
        while (true)
        {
            long end = _begins[i] + _entries[i].Length;
            long left = end - bio.Sector;
            if (bio.Size >> Bio.SectorShift <= left) { MapPiece(i, bio); return; }
            // The bio runs past this target: split off the part that stays inside it.
            Bio part = bio.Split((int)left, _pool);
            part.Chain(bio);
            MapPiece(i, part);
            i++;
        }
    }

    private void SubmitFlush(Bio bio)
    {
        if (_flushFanOut == 1 && _entries.Length == 1) { MapPiece(0, bio); return; }
        for (int i = 0; i < _entries.Length; i++)
        {
            int n = _entries[i].Target.FlushBios;
            for (int k = 0; k < n; k++)
            {
                Bio clone = bio.Clone(_pool);
                clone.TargetBioNumber = k;
                clone.Chain(bio);
                MapPiece(i, clone);
            }
        }
        // The flush's own reference: it completes when the last clone has.
        bio.Complete(BlockStatus.Ok);
    }

    private void MapPiece(int index, Bio bio)
    {
        if (bio.Op != BioOp.Flush) bio.Iter.Sector -= _begins[index];
        switch (_entries[index].Target.Map(bio, out IBlockDevice? lower))
        {
            case MapResult.Remapped:
                if (_hooks[index] is IBioEndIo hook) bio.PushEndIo(hook);
                lower!.Submit(bio);
                break;
            case MapResult.Requeue:
                // Completing with Busy unwinds to this device's frame (of the bio or of the one it was split from), which requeues it.
                bio.Complete(BlockStatus.Busy);
                break;
        }
    }

    private int Find(long sector)
    {
        int i = Array.BinarySearch(_begins, sector);
        return i >= 0 ? i : ~i - 1;
    }

    /// <inheritdoc/>
    public long DirectAccess(long pageOffset, long pages, out DaxRange range)
    {
        range = default;
        if ((_features & DeviceFeatures.Dax) == 0 || pageOffset < 0 || pages <= 0) return 0;
        long sector = pageOffset << (Pfn.PageShift - Bio.SectorShift);
        if (sector >= _sectors) return 0;
        int i = Find(sector);
        long relative = sector - _begins[i];
        long pagesLeft = (_entries[i].Length - relative) >> (Pfn.PageShift - Bio.SectorShift);
        if (relative % (Pfn.PageSize >> Bio.SectorShift) != 0 || pagesLeft <= 0) return 0;
        return _entries[i].Target.DirectAccess(relative >> (Pfn.PageShift - Bio.SectorShift), Math.Min(pages, pagesLeft), out range);
    }

    /// <summary>Asks the target of the line holding <paramref name="sector"/>; the answer stops at the line's end (callers loop on).</summary>
    public AllocationState QueryAllocation(long sector, long sectors, out long run)
    {
        int i = Find(sector);
        long relative = sector - _begins[i];
        long left = Math.Min(sectors, _entries[i].Length - relative);
        AllocationState state = _entries[i].Target.QueryAllocation(relative, left, out run);
        if (run >= 1 && run <= left) return state;
        // An answer outside the question would stall or mislead the caller: take the safe one.
        run = left;
        return AllocationState.Data;
    }

    /// <summary>Asks the target of each line the range crosses, in order; the first bad run found, in this device's sectors (clipped to its line).</summary>
    public bool FindBadSectors(long sector, long sectors, out long badStart, out long badCount)
    {
        long end = Math.Min(sector + sectors, CapacitySectors);
        while (sector < end)
        {
            int i = Find(sector);
            long relative = sector - _begins[i];
            long left = Math.Min(end - sector, _entries[i].Length - relative);
            if (_entries[i].Target.FindBadSectors(relative, left, out long s, out long n))
            {
                // Clip to the line: sectors beyond it belong to another target's mapping.
                long from = Math.Max(s, 0), to = Math.Min(s + n, _entries[i].Length);
                badStart = _begins[i] + from;
                badCount = to - from;
                return true;
            }
            sector += left;
        }
        badStart = badCount = 0;
        return false;
    }

    /// <inheritdoc/>
    public void PersistRange(long offset, long length)
    {
        while (length > 0)
        {
            int i = Find(offset >> Bio.SectorShift);
            long begin = _begins[i] << Bio.SectorShift;
            long n = Math.Min(length, begin + (_entries[i].Length << Bio.SectorShift) - offset);
            _entries[i].Target.PersistRange(offset - begin, n);
            offset += n;
            length -= n;
        }
    }

    /// <inheritdoc/>
    protected override void Dispose(bool disposing)
    {
        foreach (TableEntry e in _entries) e.Target.Dispose();
        _owned?.Dispose();
    }
}
