using PfnBlock.Common;
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
            .. JournalOptions,
        ],
        Open = (spec, ctx) => MdArray.Assemble(MdArray.SplitMembers(spec.Arguments[0]), spec.Option("name"), spec.Has("start_dirty_degraded"), ctx, spec.Option("journal"), spec.Has("journal_missing")),
        Samples =
        [
            new("raid1 of 2 pmem namespaces", s => Sample(s, 1, 2, missing: -1)),
            new("raid1 of 3, one missing (degraded)", s => Sample(s, 1, 3, missing: 1)),
            new("raid5 of 4 pmem namespaces, 64 KiB chunks", s => Sample(s, 5, 4, missing: -1)),
            new("raid5 of 4, one missing (degraded)", s => Sample(s, 5, 4, missing: 2)),
            new("raid5 of 4 pmem namespaces with a write-through journal on a fifth", s => Sample(s, 5, 4, missing: -1, journal: true)),
            new("raid5 of 4 pmem namespaces with a write-back journal on a fifth", s => Sample(s, 5, 4, missing: -1, journal: true, Raid5JournalMode.WriteBack)),
        ],
    };

    /// <summary>The options that name a RAID5's write journal.</summary>
    internal static SpecOption[] JournalOptions =>
    [
        new("journal", ArgumentKind.Text, "the array's write journal (md's --write-journal): a pmem namespace made one by raid create --journal; in [ ] when it holds a comma", "SPEC"),
        new("journal_missing", null, "start an array whose journal is lost without it: read-only, as md does"),
    ];

    /// <summary>
    /// Opens a <c>mirror:</c> or <c>raid5:</c> spec: members that carry no md superblock at all are
    /// first made an array of <paramref name="level"/> (as <c>pfnblock raid create</c> would, zeroed,
    /// with the spec's chunk and bitmap chunk), then the members are assembled as <c>md:</c> does.
    /// Members that are already an array must be one of this level; a mix of formatted and blank
    /// members is refused rather than overwritten.
    /// </summary>
    internal static Block.IBlockDevice OpenLevel(int level, DeviceSpec spec, DeviceOpenContext ctx)
    {
        IReadOnlyList<string> members = MdArray.SplitMembers(spec.Arguments[0]);
        string kind = level == 5 ? "raid5" : "mirror";
        if (!members.Contains("missing") && !ctx.ReadOnly)
        {
            var blank = new List<string>();
            using (var io = new MdMetadataIo(ctx.AddressSpace ?? Memory.PhysicalAddressSpace.Shared))
                foreach (string m in members)
                {
                    // Kept, not released: the array takes these holds with the ones it acquires, so a
                    // member that lives only while held (a RAM disk) survives being formatted.
                    DeviceHandle h = ctx.Acquire(m);
                    try
                    {
                        MdSuperblock sb = MdExamine.Examine(h.Device, io).Superblock;
                        if (sb.Level != level) throw new IOException($"{kind}: member {m} is in a RAID{sb.Level} array ({sb.UuidText}), not RAID{level}; use md: to assemble it");
                    }
                    catch (InvalidDataException) { blank.Add(m); }
                }
            if (blank.Count == members.Count)
                MdCreate.Create(members, new MdCreateOptions
                {
                    Level = level,
                    ChunkBytes = spec.Option("chunk") is { } c ? SizeParser.Parse(c) : 512 << 10,
                    BitmapChunkBytes = spec.Option("bitmap_chunk") is { } b ? SizeParser.Parse(b) : 0,
                    Name = spec.Option("name") ?? kind,
                    Journal = level == 5 ? spec.Option("journal") : null,
                    JournalMode = spec.Option("journal_mode") is { } jm ? Raid5Journal.ParseMode(jm) : Raid5JournalMode.WriteThrough,
                }, ctx.Acquire);
            else if (blank.Count > 0)
                throw new IOException($"{kind}: members {string.Join(", ", blank)} carry no md superblock but the others do; refusing to overwrite (create the array with pfnblock raid create, or add them as replacements)");
        }
        return MdArray.Assemble(members, spec.Option("name"), spec.Has("start_dirty_degraded"), ctx, spec.Option("journal"), spec.Has("journal_missing"));
    }

    /// <summary>The options <c>mirror:</c> and <c>raid5:</c> take.</summary>
    internal static SpecOption[] LevelOptions(int level) =>
    [
        .. level == 5 ? [new SpecOption("chunk", ArgumentKind.Size, "chunk size when the members are formatted (default 512K, md's)", "SIZE")] : Array.Empty<SpecOption>(),
        new("bitmap_chunk", ArgumentKind.Size, "bytes per write-intent bitmap bit when formatted (default: mdadm's, 64M or more)", "SIZE"),
        new("name", ArgumentKind.Text, "the array's name (stored in its superblock; the device name)", "NAME"),
        new("start_dirty_degraded", null, "start an array that stopped uncleanly with a member missing (RAID5: stale parity may return wrong data)"),
        .. level == 5 ? [.. JournalOptions, new SpecOption("journal_mode", ArgumentKind.Text, "the journal's mode when formatted: write-through (md's default) or write-back (writes complete once their data is in the journal)", "MODE")] : Array.Empty<SpecOption>(),
    ];

    /// <summary>A sample of <paramref name="count"/> blank pmem namespaces for the level kinds (formatted on first open).</summary>
    internal static string BlankSample(SampleContext s, string kind, int count)
    {
        DeviceType pmem = DeviceTypes.Find("pmem") ?? throw new InvalidOperationException("the pmem device kind is not registered");
        string[] members = [.. Enumerable.Range(0, count).Select(_ => pmem.Samples[0].Create(s))];
        return $"{kind}:{DeviceSpec.Quote(string.Join('+', members))}" + (kind == "raid5" ? ",chunk=64K,bitmap_chunk=256K" : ",bitmap_chunk=256K");
    }

    /// <summary>Creates <paramref name="count"/> 16 MiB pmem namespaces (the pmem kind's own sample), makes them an array, and names it by spec.</summary>
    private static string Sample(SampleContext s, int level, int count, int missing, bool journal = false, Raid5JournalMode mode = Raid5JournalMode.WriteThrough)
    {
        DeviceType pmem = DeviceTypes.Find("pmem") ?? throw new InvalidOperationException("the pmem device kind is not registered");
        string[] members = [.. Enumerable.Range(0, count).Select(_ => pmem.Samples[0].Create(s))];
        string? journalSpec = journal ? pmem.Samples[0].Create(s) : null;
        using (var set = new DeviceSet())
            MdCreate.Create(members, new MdCreateOptions { Level = level, ChunkBytes = 64 << 10, BitmapChunkBytes = 256 << 10, Name = "sample", Journal = journalSpec, JournalMode = mode }, set);
        if (missing >= 0) members[missing] = "missing";
        return "md:" + DeviceSpec.Quote(string.Join('+', members)) + (journalSpec is null ? "" : ",journal=" + DeviceSpec.Quote(journalSpec));
    }
}
