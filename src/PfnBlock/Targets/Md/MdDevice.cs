using PfnBlock.Devices;

namespace PfnBlock.Targets.Md;

/// <summary>
/// The <c>md:</c> device kind: <c>md:MEMBER+MEMBER+…</c> assembles an md array from its members'
/// superblocks (<see cref="MdArray"/>); <c>missing</c> in place of a member, as mdadm writes it,
/// starts the array degraded. Members are specs; one that contains a comma or a '+' is written in
/// brackets, and then the whole member list too (<c>md:[[file:/a,buffered]+[file:/b,buffered]]</c>).
/// Members are claimed by the array: no second array can assemble from them.
/// </summary>
public sealed class MdDevice : IRegisteredDevice
{
    private MdDevice() { }

    /// <inheritdoc/>
    public static DeviceType Type { get; } = new()
    {
        Name = "md",
        Summary = "an md RAID1 or RAID5 array assembled from members carrying md v1.2 superblocks (pfnblock raid create)",
        Arguments = [new("MEMBERS", ArgumentKind.Text, "member specs joined by '+' ('missing' for an absent member); a member holding ',' or '+' in [ ], and then the whole list in [ ] too")],
        Options =
        [
            new("name", ArgumentKind.Text, "the array's device name (default: the name in its superblock)", "NAME"),
            new("start_dirty_degraded", null, "start a RAID5 that stopped uncleanly with a member missing (md's start_dirty_degraded): stale parity may return wrong data"),
        ],
        Open = (spec, ctx) => MdArray.Assemble(MdArray.SplitMembers(spec.Arguments[0]), spec.Option("name"), spec.Has("start_dirty_degraded"), ctx),
        Samples =
        [
            new("raid1 of 2 pmem namespaces", s => Sample(s, 1, 2, missing: -1)),
            new("raid1 of 3, one missing (degraded)", s => Sample(s, 1, 3, missing: 1)),
            new("raid5 of 4 pmem namespaces, 64 KiB chunks", s => Sample(s, 5, 4, missing: -1)),
            new("raid5 of 4, one missing (degraded)", s => Sample(s, 5, 4, missing: 2)),
        ],
    };

    /// <summary>Creates <paramref name="count"/> 16 MiB pmem namespaces (the pmem kind's own sample), makes them an array, and names it by spec.</summary>
    private static string Sample(SampleContext s, int level, int count, int missing)
    {
        DeviceType pmem = DeviceTypes.Find("pmem") ?? throw new InvalidOperationException("the pmem device kind is not registered");
        string[] members = [.. Enumerable.Range(0, count).Select(_ => pmem.Samples[0].Create(s))];
        using (var set = new DeviceSet())
            MdCreate.Create(members, new MdCreateOptions { Level = level, ChunkBytes = 64 << 10, BitmapChunkBytes = 256 << 10, Name = "sample" }, set);
        if (missing >= 0) members[missing] = "missing";
        return "md:" + DeviceSpec.Quote(string.Join('+', members));
    }
}
