using System.Globalization;
using System.Text;
using System.Text.Json.Nodes;
using PfnBlock.Devices;
using PfnBlock.Targets.Md;

namespace PfnBlock.Management.Control.Commands;

/// <summary>
/// <c>md [NAME [status|fail MEMBER|SLOT|add SPEC|check|speed MIN MAX]]</c>: /proc/mdstat for the
/// md arrays the server serves (exported, or anywhere below an export), and mdadm's and sysfs's
/// controls for one of them: fail a member, add a replacement (rebuild starts), start a check
/// (scrub, counting <c>mismatch_cnt</c>), set the sync speed limits (<c>speed_limit_min/max</c>).
/// </summary>
public sealed class MdCommand : IRegisteredControlCommand
{
    /// <inheritdoc/>
    public static ControlCommand Command { get; } = new("md", "[NAME [status|fail MEMBER|SLOT|add SPEC|check|speed MIN MAX]]",
        "md arrays: mdstat-like status (members, degraded, sync progress and speed, mismatch_cnt), fail a member, add a replacement, start a check, sync speed limits (KiB/s)", Run);

    private static JsonNode Run(ControlRequest request)
    {
        request.RequireArgs(0, 4);
        List<(string Label, MdArray Array)> arrays = Arrays(request.Server);
        if (request.Args.Count == 0)
        {
            var all = new JsonObject
            {
                ["arrays"] = new JsonArray([.. arrays.Select(a => (JsonNode?)Status(a.Label, a.Array))]),
                ["summary"] = Mdstat(arrays),
            };
            return all;
        }
        string name = request.Args[0];
        (string label, MdArray array) = Find(arrays, name);
        string action = request.Args.Count > 1 ? request.Args[1] : "status";
        int argc = request.Args.Count - 2;
        switch (action)
        {
            case "status" when argc <= 0: break;
            case "fail" when argc == 1:
                int slot = Slot(array, request.Args[2]);
                if (array.Members[slot].State is MdMemberState.Faulty or MdMemberState.Missing)
                    throw new ControlException($"md {array.Name}: slot {slot} ({array.Members[slot].Spec}) is already {array.Members[slot].State.ToString().ToLowerInvariant()}");
                array.FailMember(slot);
                break;
            case "add" when argc == 1:
                RefuseServed(request.Server, array, request.Args[2]);
                try { array.AddReplacement(request.Args[2]); }
                catch (Exception e) when (e is InvalidOperationException or IOException or ArgumentException or FormatException)
                {
                    throw new ControlException(e.Message, e);
                }
                break;
            case "check" when argc == 0:
                try { array.StartCheck(); }
                catch (InvalidOperationException e) { throw new ControlException(e.Message, e); }
                break;
            case "speed" when argc == 2:
                int min = Speed(request.Args[2], "MIN"), max = Speed(request.Args[3], "MAX");
                if (min > max) throw new ControlException($"the minimum sync speed {min} KiB/s exceeds the maximum {max} KiB/s");
                // Raise the maximum first when moving up, so the pair is never min > max in between.
                if (max >= array.SpeedLimitMax) { array.SpeedLimitMax = max; array.SpeedLimitMin = min; }
                else { array.SpeedLimitMin = min; array.SpeedLimitMax = max; }
                break;
            default:
                throw new ControlException($"unknown action '{string.Join(' ', request.Args.Skip(1))}' (status, fail MEMBER|SLOT, add SPEC, check, speed MIN MAX)");
        }
        return Status(label, array);
    }

    /// <summary>The arrays among the served devices (an array may sit below a table), with their labels.</summary>
    private static List<(string Label, MdArray Array)> Arrays(ServerContext server)
    {
        var seen = new HashSet<MdArray>(ReferenceEqualityComparer.Instance);
        var list = new List<(string, MdArray)>();
        foreach (ServedDevice d in server.ServedDevices())
            if (MdArray.Of(d.Device) is { } a && seen.Add(a)) list.Add((d.Label, a));
        return list;
    }

    /// <summary>The array called <paramref name="name"/> (its md name, or its served device's label).</summary>
    private static (string Label, MdArray Array) Find(List<(string Label, MdArray Array)> arrays, string name)
    {
        List<(string Label, MdArray Array)> byName = [.. arrays.Where(a => a.Array.Name == name)];
        if (byName.Count > 1)
            throw new ControlException($"{byName.Count} arrays are called '{name}'; name one by its device ({string.Join(", ", byName.Select(a => a.Label))})");
        if (byName.Count == 1) return byName[0];
        foreach ((string Label, MdArray Array) a in arrays)
            if (a.Label == name) return a;
        throw new ControlException($"no md array '{name}' (served: {(arrays.Count == 0 ? "none" : string.Join(", ", arrays.Select(a => a.Array.Name)))})");
    }

    /// <summary>A slot number, or the slot of the member whose spec is <paramref name="member"/>.</summary>
    private static int Slot(MdArray array, string member)
    {
        IReadOnlyList<MdMemberStatus> members = array.Members;
        if (int.TryParse(member, NumberStyles.None, CultureInfo.InvariantCulture, out int slot))
            return slot < members.Count ? slot : throw new ControlException($"md {array.Name} has slots 0 to {members.Count - 1}, not {slot}");
        MdMemberStatus? m = members.FirstOrDefault(s => s.Spec == member);
        return m?.Slot ?? throw new ControlException($"md {array.Name} has no member '{member}' (members: {string.Join(", ", members.Select(s => $"{s.Slot}={s.Spec}"))})");
    }

    /// <summary>
    /// Refuses a replacement the server already uses outside this array (an export, a table's
    /// lower device, another array's member): rebuilding onto it would overwrite live data. A
    /// member this array failed may come back.
    /// </summary>
    private static void RefuseServed(ServerContext server, MdArray array, string spec)
    {
        string key;
        try { key = DeviceSpec.Parse(spec).Key; }
        catch (FormatException e) { throw new ControlException($"md {array.Name}: replacement {spec}: {e.Message}", e); }
        bool own = array.Members.Any(m => m.Spec == spec || m.Spec == key);
        ServedDevice? used = server.ServedDevices().FirstOrDefault(d => d.Label == key);
        if (used is not null && !own)
            throw new ControlException($"md {array.Name}: replacement {spec} is in use by this server ({(used.Exports.Count > 0 ? "export " + string.Join(", ", used.Exports) : "below another device")})");
    }

    private static int Speed(string text, string what) =>
        int.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out int v) && v > 0 ? v
            : throw new ControlException($"{what} must be a positive whole number of KiB/s, not '{text}'");

    private static JsonObject Status(string label, MdArray array)
    {
        MdSyncStatus s = array.Sync;
        return new JsonObject
        {
            ["name"] = array.Name,
            ["device"] = label,
            ["uuid"] = array.Uuid,
            ["level"] = MdExamine.LevelName((uint)array.Level),
            ["state"] = array.IsFailed ? "failed" : array.Degraded > 0 ? "degraded" : array.IsReadOnly ? "read-only" : "active",
            ["raid_disks"] = array.RaidDisks,
            ["degraded"] = array.Degraded,
            ["chunk_bytes"] = array.ChunkSectors * 512,
            ["sectors"] = array.Sectors,
            ["events"] = array.Events,
            ["journal"] = array.JournalStatus is { } j ? new JsonObject
            {
                ["spec"] = j.Spec,
                ["mode"] = Raid5Journal.ModeName(j.Mode),
                ["state"] = j.Failed ? "failed" : "active",
                ["block_bytes"] = Raid5JournalLayout.BlockBytes,
                ["blocks"] = j.Blocks,
                ["used_blocks"] = j.UsedBlocks,
                ["records"] = j.Records,
                ["replayed"] = j.Replayed,
                ["reclaims"] = j.Reclaims,
                ["pending"] = j.Pending,
                ["written_out"] = j.WrittenOut,
            } : array.HasJournal ? new JsonObject { ["state"] = "missing" } : null,
            ["members"] = new JsonArray([.. array.Members.Select(m => (JsonNode?)new JsonObject
            {
                ["slot"] = m.Slot,
                ["spec"] = m.Spec,
                ["state"] = StateName(m.State),
                ["recovery_offset"] = m.State == MdMemberState.Recovering ? m.RecoveryOffset : null,
                ["io_errors"] = m.IoErrors,
            })]),
            ["sync_action"] = s.Action.ToString().ToLowerInvariant(),
            ["sync_done_sectors"] = s.DoneSectors,
            ["sync_total_sectors"] = s.TotalSectors,
            ["sync_percent"] = s.Action == MdSyncAction.Idle ? null : Math.Round(s.TotalSectors == 0 ? 100 : 100.0 * s.DoneSectors / s.TotalSectors, 1),
            ["sync_speed_kib"] = s.SpeedKiBPerSecond,
            ["sync_pending"] = new JsonArray([.. s.Pending.Select(p => (JsonNode?)p.ToString().ToLowerInvariant())]),
            ["speed_limit_min"] = array.SpeedLimitMin,
            ["speed_limit_max"] = array.SpeedLimitMax,
            ["mismatch_cnt"] = array.MismatchCount,
            ["summary"] = $"{array.Name} : {array.StatusLine}",
        };
    }

    private static string StateName(MdMemberState state) => state switch
    {
        MdMemberState.InSync => "in_sync",
        _ => state.ToString().ToLowerInvariant(),
    };

    /// <summary>/proc/mdstat's text: one line per array, then its members with their slots and (F) for faulty.</summary>
    private static string Mdstat(List<(string Label, MdArray Array)> arrays)
    {
        var sb = new StringBuilder();
        foreach ((_, MdArray a) in arrays)
        {
            sb.Append(a.Name).Append(" : ").Append(a.StatusLine).Append(" members");
            foreach (MdMemberStatus m in a.Members)
                sb.Append(' ').Append(m.Spec).Append('[').Append(m.Slot).Append(']')
                    .Append(m.State switch { MdMemberState.Faulty => "(F)", MdMemberState.Missing => "(missing)", MdMemberState.Recovering => "(R)", _ => "" });
            sb.Append('\n');
        }
        return sb.Length == 0 ? "no md arrays" : sb.ToString().TrimEnd('\n');
    }
}
