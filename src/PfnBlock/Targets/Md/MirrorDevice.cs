using PfnBlock.Devices;

namespace PfnBlock.Targets.Md;

/// <summary>
/// The <c>mirror:</c> device kind: <c>mirror:MEMBER+MEMBER+…[,bitmap_chunk=SIZE][,name=NAME]</c>
/// is an md RAID1 of its members, formatted with md v1.2 superblocks on first use (when none of
/// them carries one) and assembled like <c>md:</c> afterwards. For a config file:
/// <c>mirror:@a+@b</c>.
/// </summary>
public sealed class MirrorDevice : IRegisteredDevice
{
    private MirrorDevice() { }

    /// <inheritdoc/>
    public static DeviceType Type { get; } = new()
    {
        Name = "mirror",
        Summary = "an md RAID1 of its members (formatted with md v1.2 superblocks on first use, then assembled)",
        Arguments = [new("MEMBERS", ArgumentKind.Text, "member specs joined by '+' ('missing' for an absent member)")],
        Options = MdDevice.LevelOptions(1),
        Open = (spec, ctx) => MdDevice.OpenLevel(1, spec, ctx),
        Samples = [new("2 blank pmem namespaces, formatted on open", s => MdDevice.BlankSample(s, "mirror", 2))],
    };
}
