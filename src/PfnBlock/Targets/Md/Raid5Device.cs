using PfnBlock.Devices;

namespace PfnBlock.Targets.Md;

/// <summary>
/// The <c>raid5:</c> device kind: <c>raid5:MEMBER+MEMBER+MEMBER…[,chunk=SIZE][,bitmap_chunk=SIZE][,name=NAME][,journal=SPEC]</c>
/// is an md RAID5 (left-symmetric) of its members, formatted with md v1.2 superblocks on first
/// use (when none of them carries one) and assembled like <c>md:</c> afterwards. For a config
/// file: <c>raid5:@a+@b+@c+@d,chunk=64K</c>.
/// </summary>
public sealed class Raid5Device : IRegisteredDevice
{
    private Raid5Device() { }

    /// <inheritdoc/>
    public static DeviceType Type { get; } = new()
    {
        Name = "raid5",
        Summary = "an md RAID5 (left-symmetric) of its members (formatted with md v1.2 superblocks on first use, then assembled)",
        Arguments = [new("MEMBERS", ArgumentKind.Text, "member specs joined by '+' ('missing' for an absent member)")],
        Options = MdDevice.LevelOptions(5),
        Open = (spec, ctx) => MdDevice.OpenLevel(5, spec, ctx),
        Samples = [new("4 blank pmem namespaces, 64 KiB chunks, formatted on open", s => MdDevice.BlankSample(s, "raid5", 4))],
    };
}
