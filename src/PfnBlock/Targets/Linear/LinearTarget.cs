using PfnBlock.Block;
using PfnBlock.Devices;

namespace PfnBlock.Targets.Linear;

/// <summary>
/// Maps a range onto a contiguous range of one lower device (the kernel's <c>dm-linear</c>).
/// Table: <c>START LENGTH linear DEVICE OFFSET</c>. No per-I/O state: a bio is remapped in place.
/// </summary>
public sealed class LinearTarget : Target, IRegisteredTarget
{
    private readonly IBlockDevice _lower;
    private readonly long _start;
    private readonly string _spec;

    private LinearTarget(LowerDevice dev, long start) : base(dev.Device) => (_lower, _start, _spec) = (dev.Device, start, dev.Spec);

    /// <inheritdoc/>
    public static TargetType TargetType { get; } = new()
    {
        Name = "linear",
        Version = new(1, 4, 0),
        Arguments = "DEVICE OFFSET",
        Summary = "the line's sectors are sectors OFFSET.. of DEVICE",
        Create = ctx =>
        {
            ctx.RequireArgs(2);
            long start = ctx.Sector(1, "Invalid device sector");
            LowerDevice dev = ctx.Device(0);
            TargetContext.RequireArea(dev.Device, start, ctx.Length);
            return new LinearTarget(dev, start);
        },
        Samples = [new("whole device", s => new($"{s.Lower[0]} 0", s.LowerSectors)), new("at an offset", s => new($"{s.Lower[0]} 4096", s.LowerSectors - 4096))],
    };

    /// <inheritdoc/>
    public override DeviceFeatures PassesThrough => base.PassesThrough | ((_start & 7) == 0 ? DeviceFeatures.Dax : 0);

    /// <inheritdoc/>
    public override bool RemapsWithinLimits => true; // RequireArea checked the range when the table was built

    /// <inheritdoc/>
    public override MapResult Map(Bio bio, out IBlockDevice? lower)
    {
        lower = _lower;
        if (bio.Op != BioOp.Flush) bio.Iter.Sector += _start;
        return MapResult.Remapped;
    }

    /// <inheritdoc/>
    public override string Arguments => $"{_spec} {_start}";

    /// <inheritdoc/>
    public override long DirectAccess(long pageOffset, long pages, out DaxRange range) =>
        ((IDaxDevice)_lower).DirectAccess(pageOffset + (_start >> 3), pages, out range);

    /// <summary>The lower device's answer for the remapped range (its own sectors), or "data" when it keeps no allocation map.</summary>
    public override AllocationState QueryAllocation(long sector, long sectors, out long run) =>
        (_lower.Features & DeviceFeatures.AllocationMap) != 0 && _lower is IAllocationMap map
            ? map.QueryAllocation(sector + _start, sectors, out run)
            : base.QueryAllocation(sector, sectors, out run);

    /// <summary>The lower device's bad sectors in the remapped range, moved into the target's numbering (a run starting before the range starts at the target's sector 0 or earlier).</summary>
    public override bool FindBadSectors(long sector, long sectors, out long badStart, out long badCount)
    {
        if (_lower is IBadSectorMap map && map.FindBadSectors(sector + _start, sectors, out badStart, out badCount))
        {
            badStart -= _start;
            return true;
        }
        return base.FindBadSectors(sector, sectors, out badStart, out badCount);
    }

    /// <inheritdoc/>
    public override void PersistRange(long offset, long length) =>
        ((IDaxDevice)_lower).PersistRange(offset + (_start << Bio.SectorShift), length);
}
