using System.Runtime.InteropServices;
using PfnBlock.Block;
using PfnBlock.Devices;
using PfnBlock.Memory;

namespace PfnBlock.Targets.Zero;

/// <summary>
/// Reads return zeros and writes vanish (the kernel's <c>dm-zero</c>, the block-device analogue of
/// <c>/dev/zero</c>): a sparse device's holes, or a sink for benchmarks. Table:
/// <c>START LENGTH zero</c>. No lower device; it advertises discard and write-zeroes (both are
/// no-ops that leave the range reading as zeros) and <see cref="DeviceFeatures.DiscardsData"/>.
/// </summary>
public sealed unsafe class ZeroTarget : Target, IRegisteredTarget
{
    private readonly PhysicalAddressSpace _space;

    private ZeroTarget(PhysicalAddressSpace space) => _space = space;

    /// <inheritdoc/>
    public static TargetType TargetType { get; } = new()
    {
        Name = "zero",
        Version = new(1, 2, 0),
        Arguments = "",
        Summary = "reads of the line return zeros, writes are dropped (discard and write-zeroes are supported)",
        Create = ctx =>
        {
            ctx.RequireArgs(0);
            return new ZeroTarget(ctx.AddressSpace);
        },
        // The lower devices the suite offers go unused: the line is the size of one of them.
        Samples = [new("a whole lower device's worth of zeros", s => new("", s.LowerSectors))],
    };

    /// <inheritdoc/>
    public override DeviceFeatures Adds => DeviceFeatures.DiscardsData;

    /// <inheritdoc/>
    public override MapResult Map(Bio bio, out IBlockDevice? lower)
    {
        lower = null;
        bio.Complete(bio.Op == BioOp.Read ? ZeroFill(bio) : BlockStatus.Ok); // writes, discards, write-zeroes and flushes: nothing to do
        return MapResult.Submitted;
    }

    private BlockStatus ZeroFill(Bio bio)
    {
        foreach (BioVec seg in bio.Segments)
        {
            byte* p = _space.TryKmap(seg.Pfn, seg.Offset, seg.Length);
            if (p == null) return BlockStatus.Invalid; // a frame the CPU cannot reach: the submitter's bug
            NativeMemory.Clear(p, seg.Length);
        }
        return BlockStatus.Ok;
    }

    /// <inheritdoc/>
    public override string Arguments => "";
}
