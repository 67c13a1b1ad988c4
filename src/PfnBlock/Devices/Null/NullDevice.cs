using PfnBlock.Block;
using PfnBlock.Common;
using PfnBlock.Memory;

namespace PfnBlock.Devices.Null;

/// <summary>
/// A device that stores nothing and completes every bio at once (the kernel's <c>null_blk</c>):
/// reads leave the frames untouched. It measures the block layer's own overhead.
/// </summary>
public sealed class NullDevice : BlockDevice, IRegisteredDevice
{
    private readonly long _sectors;

    /// <summary>Creates a null device of <paramref name="bytes"/> bytes.</summary>
    public NullDevice(long bytes, PhysicalAddressSpace? space = null, string name = "null0") : base(name, space)
    {
        if (bytes <= 0 || bytes % Bio.SectorSize != 0) throw new ArgumentException($"null device size {bytes} must be a positive multiple of 512");
        _sectors = bytes >> Bio.SectorShift;
    }

    /// <inheritdoc/>
    public static DeviceType Type { get; } = new()
    {
        Name = "null",
        Summary = "stores nothing, completes at once: measures the block layer itself (null_blk)",
        Arguments = [new("SIZE", ArgumentKind.Size, "capacity (e.g. 1T)")],
        Options = [new("name", ArgumentKind.Text, "the device's name; equal specs share one device", "NAME")],
        Open = (spec, ctx) => new NullDevice(SizeParser.Parse(spec.Arguments[0]), ctx.AddressSpace, spec.Option("name") ?? "null0"),
        Samples = [new("16 MiB", _ => "null:16M")],
    };

    /// <inheritdoc/>
    public override long CapacitySectors => _sectors;
    /// <inheritdoc/>
    public override DeviceLimits Limits { get; } = DeviceLimits.Memory();
    /// <inheritdoc/>
    public override DeviceFeatures Features =>
        DeviceFeatures.Discard | DeviceFeatures.WriteZeroes | DeviceFeatures.Synchronous | DeviceFeatures.DiscardsData;
    /// <inheritdoc/>
    public override string Description => $"null device {Name} ({SizeParser.Format(CapacityBytes)}, stores nothing)";

    /// <inheritdoc/>
    protected override void SubmitCore(Bio bio) => bio.Complete(BlockStatus.Ok);
}
