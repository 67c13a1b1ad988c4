using System.CommandLine;
using System.Text.Json;
using PfnBlock.Namespaces;
using PfnBlock.Namespaces.Btt;
using PfnBlock.Targets.WriteCache;

namespace PfnBlock.Cli.Commands;

/// <summary><c>pfnblock check --path P [--repair] [--json]</c>: verify a sector namespace or pmemblk pool.</summary>
internal static class CheckCommand
{
    public static Command Create()
    {
        var path = new Option<string>("--path") { Description = "Namespace or pmemblk pool file.", Required = true };
        var repair = new Option<bool>("--repair") { Description = "Restore an invalid info block from its valid copy (the only repair made; each is reported)." };
        var json = new Option<bool>("--json") { Description = "Print one JSON document." };
        var cmd = new Command("check", "Verify the BTT info blocks, map and flog of a sector namespace or pmemblk pool (of a raw namespace: its info blocks, and a write cache's superblock and entries, with what opening it would replay); exit 0 when consistent, 1 when not.") { path, repair, json };
        cmd.SetAction(r => Cli.Run(() =>
        {
            BttCheckReport report = BttCheck.Run(r.GetValue(path)!, r.GetValue(repair));
            WriteCacheCheckReport? cache = !report.HasBtt && report.Consistent ? CheckCache(report.Path) : null;
            (bool Consistent, List<string> Lines)? journal = !report.HasBtt && report.Consistent && cache is null ? CheckJournal(report.Path) : null;
            bool consistent = report.Consistent && cache?.Consistent != false && journal?.Consistent != false;
            if (r.GetValue(json))
            {
                var doc = new
                {
                    path = report.Path,
                    container = report.Container,
                    btt = report.HasBtt,
                    consistent = report.Consistent,
                    arenas = report.Arenas,
                    sectors = report.Sectors,
                    sector_size = report.SectorSize,
                    repairs = report.Repairs,
                    unrepaired_errors = report.Unrepaired,
                    badblock_count = report.BadBlocks.TotalBlocks,
                    badblocks = report.BadBlocks.Ranges.Select(b => new { offset = b.Start, length = b.Count }),
                    findings = report.Findings.Select(f => new { severity = f.Severity.ToString().ToLowerInvariant(), message = f.Message }),
                    writecache = cache is null ? null : new
                    {
                        consistent = cache.Consistent,
                        error = cache.Error,
                        entries = cache.Superblock?.Layout.Entries,
                        tail = cache.Scan?.Tail,
                        head = cache.Scan?.Head,
                        replay_entries = cache.Scan?.Live.Count,
                        dirty_blocks = cache.DirtyBlocks,
                        holes = cache.Scan?.Holes,
                    },
                    raid5_journal = journal is { } jr ? new { consistent = jr.Consistent, report = jr.Lines } : null,
                };
                Console.WriteLine(JsonSerializer.Serialize(doc, new JsonSerializerOptions { WriteIndented = true }));
            }
            else
            {
                Console.WriteLine(report.HasBtt
                    ? $"{report.Path}: {report.Container}, {report.Arenas} arena(s), {report.Sectors} sectors of {report.SectorSize} bytes"
                    : $"{report.Path}: {report.Container}: no BTT to check; checked its info blocks only");
                foreach (CheckFinding f in report.Findings) Console.WriteLine($"  {f.Severity.ToString().ToLowerInvariant()}: {f.Message}");
                if (cache is not null)
                    foreach (string line in cache.Lines()) Console.WriteLine("  " + line);
                if (journal is { } j)
                    foreach (string line in j.Lines) Console.WriteLine("  " + line);
                Console.WriteLine(report.Consistent
                    ? $"result: consistent{(report.HasBtt ? "" : " (info blocks)")}{(report.Repairs > 0 ? $" after {report.Repairs} repair(s)" : "")}"
                    : $"result: INCONSISTENT ({report.Unrepaired} error(s){(r.GetValue(repair) ? "" : "; --repair restores invalid info blocks from their copies, nothing else")})");
            }
            if (cache is { Consistent: false } && !r.GetValue(json)) Console.WriteLine("result: write cache INCONSISTENT (not opened; nothing was changed)");
            if (journal is { Consistent: false } && !r.GetValue(json)) Console.WriteLine("result: RAID5 journal INCONSISTENT (an array would refuse it; nothing was changed)");
            return consistent ? 0 : Cli.ExitFailure;
        }));
        return cmd;
    }

    /// <summary>A raw namespace's RAID5 journal, read through a read-only device; null when it holds none.</summary>
    private static (bool Consistent, List<string> Lines)? CheckJournal(string path)
    {
        using var set = new Devices.DeviceSet(readOnly: true);
        using Devices.DeviceHandle h = set.Acquire("pmem:" + Devices.DeviceSpec.Quote(path));
        return Targets.Md.Raid5JournalInfo.Describe(h.Device);
    }

    /// <summary>A raw namespace's write cache, read through a read-only mapping (shared claim, nothing written); null when it holds none.</summary>
    private static unsafe WriteCacheCheckReport? CheckCache(string path)
    {
        using PmemNamespace ns = PmemNamespace.Open(path, readOnly: true);
        return WriteCacheCheckReport.Run(ns.DataAddress, ns.DataSize);
    }
}
