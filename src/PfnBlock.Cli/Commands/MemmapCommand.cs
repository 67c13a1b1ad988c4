using System.CommandLine;
using System.Text.Json;
using PfnBlock.Cli.Bench;
using PfnBlock.Common;
using PfnBlock.Memory;
using PfnBlock.Namespaces;

namespace PfnBlock.Cli.Commands;

/// <summary><c>pfnblock memmap</c>: what every page-descriptor alternative of the thread costs, measured here.</summary>
internal static class MemmapCommand
{
    public static Command Create()
    {
        var path = new Option<string?>("--path") { Description = "A namespace: its data size is the size to describe (and its own map is marked)." };
        Option<long> size = Cli.SizeOption("--size", "A size to describe, such as 1T (computed from a smaller measured namespace; nothing of this size is allocated).", 0);
        Option<long> measure = Cli.SizeOption("--measure", "Data size of the namespaces actually created and measured (default: the size, at most 1G).", 0);
        var dir = new Option<string?>("--dir") { Description = "Where the measured namespaces are created (sparse files; default: the data directory, /dev/shm/pfnblock)." };
        var maps = new Option<string[]>("--map") { Description = "Measure only these maps (repeatable).", AllowMultipleArgumentsPerToken = true };
        maps.AcceptOnlyFromAmong([.. DescriptorMaps.All.Select(DescriptorMaps.Name)]);
        var ops = new Option<int>("--ops") { Description = "Operations per timed loop (default 1000000).", DefaultValueFactory = _ => 1_000_000 };
        var rounds = new Option<int>("--rounds") { Description = "Rounds over all maps; each figure is the median (default 3).", DefaultValueFactory = _ => 3 };
        var scan = new Option<string?>("--scan") { Description = "Instead: scan a directory tree for the thread's file-size claims (size distribution, bytes in files of 2M or more and in .git/objects/pack, bytes in 2M-aligned contiguous extents from FIEMAP)." };
        var json = new Option<bool>("--json") { Description = "Print the rows as JSON." };
        var cmd = new Command("memmap", "Measure each page-descriptor map (none, dense, device, huge, temporary, on-demand): DRAM, device bytes, open time, lookup, pin+unpin and 4 KiB DAX read cost.")
        {
            path, size, measure, dir, maps, ops, rounds, scan, json,
        };
        cmd.SetAction(r => Cli.Run(() =>
        {
            if (r.GetValue(scan) is string tree) return Scan(tree, r.GetValue(json));
            long target = r.GetValue(size);
            DescriptorMapKind? current = null;
            if (r.GetValue(path) is string p)
            {
                NamespaceInfoBlock info = PmemNamespace.ReadInfo(p, out _);
                current = info.MapKind;
                if (target == 0) target = info.DataSize;
            }
            if (target == 0) target = 1L << 40;
            long measured = r.GetValue(measure);
            if (measured == 0) measured = Math.Min(target, 1L << 30);
            if (measured < (8 << 20)) throw new ArgumentException($"--measure {measured} is below 8M: too small to time random frames");
            if (r.GetValue(ops) is < 1000 or > 100_000_000) throw new ArgumentException($"--ops {r.GetValue(ops)} is outside 1000..100000000");
            string[]? chosen = r.GetValue(maps);
            IReadOnlyList<DescriptorMapKind> kinds = chosen is { Length: > 0 } ? [.. chosen.Select(DescriptorMaps.Parse)] : DescriptorMaps.All;
            string directory = r.GetValue(dir) ?? Cli.DataDirectory();
            bool quiet = r.GetValue(json);
            List<MemmapRow> rows = MemmapMeasure.Run(kinds, measured, target, directory, r.GetValue(ops), Math.Clamp(r.GetValue(rounds), 1, 99), quiet ? null : m => Console.Error.WriteLine(m));
            if (quiet)
            {
                var doc = rows.Select(x => new
                {
                    map = DescriptorMaps.Name(x.Kind),
                    measured_bytes = x.MeasuredBytes,
                    target_bytes = x.TargetBytes,
                    extrapolated = x.Extrapolated,
                    rss_anon_delta_bytes = x.RssAnonDelta,
                    dram_bytes_measured = x.DramReported,
                    dram_bytes_after_pins_measured = x.DramAfterPins,
                    dram_bytes = x.DramAtTarget,
                    dram_bytes_after_pins = x.DramAfterPinsAtTarget,
                    device_bytes = x.DeviceAtTarget,
                    open_ms = x.OpenMs,
                    lookup_ns = x.LookupNs,
                    pin_unpin_ns = x.PinUnpinNs,
                    dax_read_4k_ns = x.DaxReadNs,
                    copy_4k_ns = x.CopyOnlyNs,
                });
                Console.WriteLine(JsonSerializer.Serialize(doc, new JsonSerializerOptions { WriteIndented = true }));
                return 0;
            }
            Console.WriteLine($"measured on {SizeParser.Format(rows[0].MeasuredBytes)} namespaces in {directory}; " +
                (rows[0].Extrapolated ? $"DRAM and device bytes extrapolated to {SizeParser.Format(target)} (fixed-size pin tables and pools kept as measured)" : "figures as measured"));
            Console.WriteLine($"{"map",-11} {"RssAnon@open",12} {"DRAM@" + SizeParser.Format(target),12} {"after pins",12} {"device",12} {"open",9} {"lookup",9} {"pin+unpin",10} {"DAX 4k rd",10} {"copy 4k",9}");
            foreach (MemmapRow x in rows)
                Console.WriteLine($"{DescriptorMaps.Name(x.Kind) + (x.Kind == current ? " *" : ""),-11} {Bytes(x.RssAnonDelta),12} {Bytes(x.DramAtTarget),12} {Bytes(x.DramAfterPinsAtTarget),12} {Bytes(x.DeviceAtTarget),12} " +
                    $"{x.OpenMs,6:F1} ms {x.LookupNs,6:F1} ns {x.PinUnpinNs,7:F1} ns {x.DaxReadNs,7:F0} ns {x.CopyOnlyNs,6:F0} ns");
            if (current is not null) Console.WriteLine("* the map of the namespace given with --path");
            Console.WriteLine("the thread's figure: 64 B per 4 KiB frame = 16G per 1T for a dense memmap (1.56 %)");
            return 0;
        }));
        return cmd;
    }

    private static int Scan(string tree, bool json)
    {
        FileTreeScan s = FileTreeScan.Run(tree);
        double Share(long part, long whole) => whole == 0 ? 0 : (double)part / whole;
        if (json)
        {
            var doc = new
            {
                root = Path.GetFullPath(tree),
                total_files = s.TotalFiles,
                total_bytes = s.TotalBytes,
                size_classes = s.Classes.Select(c => new { up_to = c.UpTo == long.MaxValue ? (long?)null : c.UpTo, files = c.Files, bytes = c.Bytes }),
                large_file_bytes = s.LargeFileBytes,
                large_file_bytes_share = Share(s.LargeFileBytes, s.TotalBytes),
                git_pack_bytes = s.GitPackBytes,
                fiemap_files = s.FilesMapped,
                fiemap_bytes = s.BytesMapped,
                aligned_2m_extent_bytes = s.BytesInAligned2MExtents,
                aligned_2m_extent_share = Share(s.BytesInAligned2MExtents, s.BytesMapped),
                unreadable = s.Unreadable,
            };
            Console.WriteLine(JsonSerializer.Serialize(doc, new JsonSerializerOptions { WriteIndented = true }));
            return 0;
        }
        Console.WriteLine($"{Path.GetFullPath(tree)}: {s.TotalFiles} files, {Bytes(s.TotalBytes)} (apparent sizes)");
        Console.WriteLine($"{"size up to",12} {"files",10} {"files %",8} {"bytes",12} {"bytes %",8}");
        foreach (FileSizeClass c in s.Classes)
            Console.WriteLine($"{(c.UpTo == long.MaxValue ? "more" : c.UpTo == 0 ? "0" : Bytes(c.UpTo)),12} {c.Files,10} {100 * Share(c.Files, s.TotalFiles),7:F1}% {Bytes(c.Bytes),12} {100 * Share(c.Bytes, s.TotalBytes),7:F1}%");
        Console.WriteLine($"bytes in files of 2 MiB or more: {Bytes(s.LargeFileBytes)} ({100 * Share(s.LargeFileBytes, s.TotalBytes):F1} %); in .git/objects/pack: {Bytes(s.GitPackBytes)}");
        Console.WriteLine(s.FilesMapped == 0
            ? "FIEMAP: the filesystem reported no extents (tmpfs and some overlays do not support it)"
            : $"FIEMAP: {s.FilesMapped} files, {Bytes(s.BytesMapped)} placed; in 2 MiB-aligned contiguous extents: {Bytes(s.BytesInAligned2MExtents)} ({100 * Share(s.BytesInAligned2MExtents, s.BytesMapped):F1} %)");
        if (s.Unreadable > 0) Console.WriteLine($"{s.Unreadable} files could not be read");
        return 0;
    }

    /// <summary>Bytes with a binary unit and three significant digits: 16.0 GiB, 300 KiB.</summary>
    internal static string Bytes(long b)
    {
        if (b == 0) return "0";
        string[] units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
        double v = Math.Abs((double)b);
        int u = 0;
        while (v >= 1024 && u < units.Length - 1) { v /= 1024; u++; }
        string n = v >= 100 || u == 0 ? v.ToString("F0", System.Globalization.CultureInfo.InvariantCulture) : v.ToString(v >= 10 ? "F1" : "F2", System.Globalization.CultureInfo.InvariantCulture);
        return (b < 0 ? "-" : "") + n + " " + units[u];
    }
}
