using System.CommandLine;
using System.Globalization;
using System.Text.Json;
using PfnBlock.Devices;
using PfnBlock.Targets.Md;

namespace PfnBlock.Cli.Commands;

/// <summary>
/// <c>pfnblock raid create|examine|assemble</c>: mdadm's <c>--create</c>, <c>--examine</c> and
/// <c>--assemble</c> for md arrays whose members are device specs (pmem namespaces mostly). A
/// served array is then opened by the spec <c>md:A+B+…</c>.
/// </summary>
internal static class RaidCommands
{
    public static Command Create()
    {
        var cmd = new Command("raid", "Create md arrays (RAID1, RAID5) on member devices, print a member's md superblock, assemble members.");
        cmd.Subcommands.Add(CreateCommand());
        cmd.Subcommands.Add(ExamineCommand());
        cmd.Subcommands.Add(AssembleCommand());
        return cmd;
    }

    private static Argument<string[]> Members(int min) => new("MEMBER")
    {
        Description = "Member device specs (pmem:/dev/shm/r0, …), in slot order.",
        Arity = new ArgumentArity(min, ArgumentArity.ZeroOrMore.MaximumNumberOfValues),
    };

    private static Command CreateCommand()
    {
        var level = new Option<int>("--level") { Description = "RAID level: 1 (mirror) or 5 (left-symmetric parity).", Required = true };
        Option<long> chunk = Cli.SizeOption("--chunk", "RAID5 chunk size, a power of two of 4K or more (default 512K, md's).", 512 << 10);
        Option<long> bitmapChunk = Cli.SizeOption("--bitmap-chunk", "Bytes of each member per write-intent bitmap bit (default: mdadm's, 64M or more).", 0);
        var name = new Option<string>("--name") { Description = "The array's name, stored in the superblocks.", DefaultValueFactory = _ => "pfnblock" };
        var force = new Option<bool>("--force") { Description = "Overwrite members that already carry an md superblock." };
        var assumeClean = new Option<bool>("--assume-clean") { Description = "Do not resync on first assembly (the members are known to agree, e.g. all zeros)." };
        var journal = new Option<string>("--journal") { Description = "RAID5: make this pmem namespace the array's write journal (mdadm --write-journal); serve with md:…,journal=SPEC." };
        var journalMode = new Option<string>("--journal-mode") { Description = "The journal's mode: write-through (md's default: closes the write hole) or write-back (writes complete once their data is in the journal; stripes are written out in the background).", DefaultValueFactory = _ => "write-through" };
        Argument<string[]> members = Members(1);
        var cmd = new Command("create", "Write md v1.2 superblocks and write-intent bitmaps to the members (mdadm --create); serve the array as md:A+B+….")
            { level, chunk, bitmapChunk, name, force, assumeClean, journal, journalMode, members };
        cmd.SetAction(r => Cli.Run(() =>
        {
            string[] specs = r.GetValue(members) ?? [];
            using var set = new DeviceSet();
            IReadOnlyList<MdCreatedMember> created = MdCreate.Create(specs, new MdCreateOptions
            {
                Level = r.GetValue(level),
                ChunkBytes = r.GetValue(chunk),
                BitmapChunkBytes = r.GetValue(bitmapChunk),
                Name = r.GetValue(name)!,
                Force = r.GetValue(force),
                AssumeClean = r.GetValue(assumeClean),
                Journal = r.GetValue(journal),
                JournalMode = Raid5JournalInfo.ParseMode(r.GetValue(journalMode)!),
            }, set);
            MdSuperblock sb = created[0].Superblock;
            Console.WriteLine($"created {MdExamine.LevelName(sb.Level)} '{sb.SetName}' {sb.UuidText}: {created.Count} members, {sb.ArraySectors * 512} bytes of data"
                + (sb.Level == 5 ? $", chunk {sb.ChunkSectors / 2}K" : ""));
            foreach (MdCreatedMember m in created) Console.WriteLine($"  {MdExamine.RoleName(m.Superblock.Role)}: {m.Spec}");
            if (r.GetValue(journal) is { } j) Console.WriteLine($"  journal: {j}");
            Console.WriteLine($"serve it as md:{DeviceSpec.Quote(string.Join('+', created.Select(m => m.Spec)))}"
                + (r.GetValue(journal) is { } js ? ",journal=" + DeviceSpec.Quote(js) : ""));
            return 0;
        }));
        return cmd;
    }

    private static Command ExamineCommand()
    {
        var json = new Option<bool>("--json") { Description = "Print one JSON document." };
        var member = new Argument<string>("MEMBER") { Description = "A member device spec (pmem:/dev/shm/r0), or a RAID5 journal's." };
        var cmd = new Command("examine", "Print the md superblock and bitmap a member carries (mdadm --examine), or a RAID5 journal's superblock and what it would replay; exit 1 when it has none.") { json, member };
        cmd.SetAction(r => Cli.Run(() =>
        {
            string spec = r.GetValue(member)!;
            using var set = new DeviceSet(readOnly: true);
            using DeviceHandle h = set.Acquire(spec);
            MdMemberInfo info;
            try { info = MdExamine.Examine(h.Device); }
            catch (InvalidDataException e)
            {
                if (Raid5JournalInfo.Describe(h.Device) is not { } journal) throw new IOException($"{spec}: {e.Message}", e);
                if (r.GetValue(json)) Console.WriteLine(JsonSerializer.Serialize(new { journal = spec, consistent = journal.Consistent, report = journal.Lines }, new JsonSerializerOptions { WriteIndented = true }));
                else foreach (string line in journal.Lines) Console.WriteLine($"{spec}: {line}");
                return journal.Consistent ? 0 : Cli.ExitFailure;
            }
            if (!r.GetValue(json))
            {
                Console.Write(MdExamine.Format(spec, info));
                return 0;
            }
            MdSuperblock sb = info.Superblock;
            var doc = new
            {
                member = spec,
                uuid = sb.UuidText,
                name = sb.SetName,
                level = (int)sb.Level,
                raid_disks = (int)sb.RaidDisks,
                chunk_bytes = sb.Level == 5 ? (long)sb.ChunkSectors * 512 : 0,
                array_sectors = sb.ArraySectors,
                used_dev_sectors = sb.Size,
                data_offset = sb.DataOffset,
                data_size = sb.DataSize,
                events = sb.Events,
                state = sb.IsClean ? "clean" : "active",
                role = MdExamine.RoleName(sb.Role),
                array_state = MdExamine.ArrayState(sb),
                device_uuid = MdSuperblock.FormatUuid(sb.DeviceUuid),
                recovery_offset = (sb.FeatureMap & MdSuperblock.FeatureRecoveryOffset) != 0 ? (ulong?)sb.RecoveryOffset : null,
                journal = (sb.FeatureMap & MdSuperblock.FeatureJournal) != 0,
                bitmap = info.Bitmap is { } bm ? new { bits = bm.Bits, chunk_bytes = bm.ChunkBytes, dirty_bits = info.DirtyBits } : null,
                bitmap_error = info.BitmapError,
                update_time = MdSuperblock.DecodeTime(sb.UTime).ToString("u", CultureInfo.InvariantCulture),
            };
            Console.WriteLine(JsonSerializer.Serialize(doc, new JsonSerializerOptions { WriteIndented = true }));
            return 0;
        }));
        return cmd;
    }

    private static Command AssembleCommand()
    {
        Argument<string[]> members = Members(1);
        var dirty = new Option<bool>("--start-dirty-degraded") { Description = "Start a RAID5 that stopped uncleanly with a member missing (stale parity may return wrong data)." };
        var journal = new Option<string>("--journal") { Description = "The array's write journal (its records are replayed onto the members)." };
        var cmd = new Command("assemble", "Assemble the members into their array (as serving md:A+B+… would; 'missing' for an absent member), print its state as /proc/mdstat does, and stop it again (marked clean).") { dirty, journal, members };
        cmd.SetAction(r => Cli.Run(() =>
        {
            string[] specs = r.GetValue(members) ?? [];
            MdArray.MessageSink = line => Console.Error.WriteLine(line);
            using var set = new DeviceSet();
            using DeviceHandle h = set.Acquire($"md:{DeviceSpec.Quote(string.Join('+', specs))}" + (r.GetValue(dirty) ? ",start_dirty_degraded" : "")
                + (r.GetValue(journal) is { } j ? ",journal=" + DeviceSpec.Quote(j) : ""));
            MdArray array = MdArray.Of(h.Device) ?? throw new InvalidOperationException("md: did not open an md array");
            Console.WriteLine($"{array.Name} : {array.StatusLine} {array.Uuid}");
            foreach (MdMemberStatus m in array.Members) Console.WriteLine($"  [{m.Slot}] {m.Spec}: {(m.State == MdMemberState.InSync ? "in_sync" : m.State.ToString().ToLowerInvariant())}");
            return 0;
        }));
        return cmd;
    }
}
