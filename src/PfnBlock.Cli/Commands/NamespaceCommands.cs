using System.CommandLine;
using System.Text.Json;
using PfnBlock.Common;
using PfnBlock.Memory;
using PfnBlock.Namespaces;

namespace PfnBlock.Cli.Commands;

/// <summary><c>pfnblock namespace create|info|destroy|resize|inject-error|clear-errors</c>.</summary>
internal static class NamespaceCommands
{
    public static Command Create()
    {
        var cmd = new Command("namespace", "Create, describe, shrink and destroy pmem namespaces; inject and clear media errors.");
        cmd.Subcommands.Add(CreateCommand());
        cmd.Subcommands.Add(InfoCommand());
        cmd.Subcommands.Add(DestroyCommand());
        cmd.Subcommands.Add(ResizeCommand());
        cmd.Subcommands.Add(NamespaceErrorCommands.InjectCommand());
        cmd.Subcommands.Add(NamespaceErrorCommands.ClearCommand());
        return cmd;
    }

    private static Option<string> PathOption() => new("--path") { Description = "Namespace file or device (e.g. /dev/shm/pmem0, /dev/dax0.0).", Required = true };

    private static Command CreateCommand()
    {
        Option<string> path = PathOption();
        Option<long> size = Cli.SizeOption("--size", "Namespace size, e.g. 1G.");
        var mode = new Option<NamespaceMode>("--mode")
        {
            Description = "raw (byte-addressable), sector (BTT, atomic sectors) or devdax (2M-aligned data that applications map, several at once; no block I/O).",
            DefaultValueFactory = _ => NamespaceMode.Raw,
        };
        var sectorSize = new Option<uint>("--sector-size") { Description = "Logical block size: 512 or 4096.", DefaultValueFactory = _ => 512 };
        sectorSize.AcceptOnlyFromAmong("512", "4096");
        mode.AcceptOnlyFromAmong("raw", "sector", "devdax");
        Option<long> align = Cli.SizeOption("--align", "Data alignment (default: 2M for namespaces of 256M or more, else 4k).", 0);
        var map = new Option<string>("--map")
        {
            Description = "Page-descriptor map kept for the data frames: none (pfns only, pins per range), dense (64 B DRAM per 4 KiB), " +
                "device (64 B per 4 KiB in a reserve in front of the data), huge (64 B per 2 MiB, split where needed), " +
                "temporary (per-I/O descriptors from a pool) or on-demand (a reservation populated by page faults).",
            DefaultValueFactory = _ => "none",
        };
        map.AcceptOnlyFromAmong([.. DescriptorMaps.All.Select(DescriptorMaps.Name)]);
        var name = new Option<string>("--name") { Description = "A label stored in the info block.", DefaultValueFactory = _ => "" };
        var force = new Option<bool>("--force") { Description = "Overwrite an existing namespace or other data at PATH." };
        Option<long> pageSize = Cli.SizeOption("--page-size",
            "Page size that must back the mapping: 4k, or 2M (hugetlbfs, or tmpfs mounted huge=always); refused where the filesystem gives another. " +
            "Default: what the filesystem gives. Separate from --map huge, the descriptors' granularity.", 0);
        var cmd = new Command("create", "Format a file or device as a namespace.") { path, size, mode, sectorSize, align, map, name, pageSize, force };
        cmd.SetAction(r => Cli.Run(() =>
        {
            long alignBytes = r.GetValue(align);
            if (alignBytes > uint.MaxValue) throw new ArgumentException($"alignment {SizeParser.Format(alignBytes)} is too large");
            var options = new NamespaceCreateOptions
            {
                Size = r.GetValue(size),
                Mode = r.GetValue(mode),
                SectorSize = r.GetValue(sectorSize),
                Align = (uint)alignBytes,
                MapKind = DescriptorMaps.Parse(r.GetValue(map)!),
                Name = r.GetValue(name) ?? "",
                PageSize = r.GetValue(pageSize),
                Force = r.GetValue(force),
            };
            using PmemNamespace ns = PmemNamespace.Create(r.GetValue(path)!, options);
            Console.WriteLine($"created {ns.Path}: {Describe(ns.Info)}");
            if (ns.Info.Mode == NamespaceMode.Sector)
                Console.WriteLine($"btt: {Namespaces.Btt.Btt.ExternalNlbaFor(ns.DataSize, ns.Info.SectorSize, Namespaces.Btt.BttFlavor.Kernel)} atomic sectors of {ns.Info.SectorSize} bytes (kernel BTT v1.1 layout at offset 4096)");
            if (ns.Info.MapSize != 0)
                Console.WriteLine($"descriptors: {DescriptorMaps.Name(ns.Info.MapKind)}, {ns.Info.MapSize} bytes reserved at offset {ns.Info.MapOffset} for {ns.Region.FrameCount} frames (no DRAM)");
            Console.WriteLine($"pages: {ns.MeasureBacking().Describe()}");
            Console.WriteLine($"persistence: {ns.PersistenceDescription}");
            return 0;
        }));
        return cmd;
    }

    private static Command InfoCommand()
    {
        Option<string> path = PathOption();
        var json = new Option<bool>("--json") { Description = "Print one JSON document." };
        var cmd = new Command("info", "Describe a namespace from its info block.") { path, json };
        cmd.SetAction(r => Cli.Run(() =>
        {
            string p = r.GetValue(path)!;
            // The probe says what else the path is when it is not a namespace (a PMDK pool, a directory…).
            NamespaceInfoBlock info = NamespaceProbe.Probe(p).RequireNamespace(out bool fromBackup);
            BadBlockList bad = MediaErrors.List(p);
            PageBacking pages = PmemNamespace.ProbeBacking(p);
            if (r.GetValue(json))
            {
                var doc = new
                {
                    path = p,
                    uuid = info.Uuid,
                    name = info.Name,
                    mode = info.Mode.ToString().ToLowerInvariant(),
                    version = $"{info.Major}.{info.Minor}",
                    size = info.NamespaceSize,
                    data_offset = info.DataOffset,
                    data_size = info.DataSize,
                    align = info.Align,
                    sector_size = info.SectorSize,
                    map = DescriptorMaps.Name(info.MapKind),
                    map_offset = info.MapOffset,
                    map_size = info.MapSize,
                    info_block = fromBackup ? "backup" : "primary",
                    // The TLB's page size (where the file lives), not the descriptors' granularity (map).
                    page_backing = new
                    {
                        filesystem = pages.Filesystem.ToString().ToLowerInvariant(),
                        detail = pages.Detail,
                        page_size = pages.PageSize,
                        offered_page_size = pages.OfferedPageSize,
                        mapped_bytes = pages.MappedBytes,
                        huge_mapped_bytes = pages.HugeMappedBytes,
                    },
                    // As ndctl list --media-errors: runs of 512-byte blocks from the data area's start.
                    badblock_count = bad.TotalBlocks,
                    badblocks = bad.Ranges.Select(b => new { offset = b.Start, length = b.Count }),
                };
                Console.WriteLine(JsonSerializer.Serialize(doc, new JsonSerializerOptions { WriteIndented = true }));
            }
            else
            {
                Console.WriteLine($"{p}: {Describe(info)}");
                Console.WriteLine($"  uuid {info.Uuid}  name '{info.Name}'  version {info.Major}.{info.Minor}");
                Console.WriteLine($"  data offset {info.DataOffset}  data size {info.DataSize}  align {info.Align}  descriptors {DescriptorMaps.Name(info.MapKind)}"
                    + (info.MapSize != 0 ? $" (reserve of {info.MapSize} bytes at {info.MapOffset}: 64 B per 4 KiB data frame)" : ""));
                Console.WriteLine($"  pages: {pages.Describe()}");
                Console.WriteLine($"  badblocks: {NamespaceErrorCommands.Describe(bad)}");
                if (fromBackup) Console.WriteLine("  warning: primary info block is invalid; described from the backup copy (opening the namespace repairs it)");
            }
            return 0;
        }));
        return cmd;
    }

    private static Command ResizeCommand()
    {
        Option<string> path = PathOption();
        Option<long> size = Cli.SizeOption("--size", "The new, smaller namespace size, e.g. 512M.");
        var cmd = new Command("resize", "Shrink a namespace, keeping the data below the new end (refused while it is open, and so while any of its frames is pinned).") { path, size };
        cmd.SetAction(r => Cli.Run(() =>
        {
            string p = r.GetValue(path)!;
            NamespaceInfoBlock info = PmemNamespace.Shrink(p, r.GetValue(size));
            Console.WriteLine($"resized {p}: {Describe(info)}");
            return 0;
        }));
        return cmd;
    }

    private static Command DestroyCommand()
    {
        Option<string> path = PathOption();
        var force = new Option<bool>("--force") { Description = "Delete even if PATH is not a valid namespace." };
        var cmd = new Command("destroy", "Delete a namespace (refuses if it is in use).") { path, force };
        cmd.SetAction(r => Cli.Run(() =>
        {
            string p = r.GetValue(path)!;
            PmemNamespace.Destroy(p, r.GetValue(force));
            Console.WriteLine($"destroyed {p}");
            return 0;
        }));
        return cmd;
    }

    /// <summary>Says how much of the namespace is data: the info block (padded to the alignment) comes before it, the backup info block after it.</summary>
    private static string Describe(NamespaceInfoBlock info) =>
        $"{info.Mode.ToString().ToLowerInvariant()} namespace, {SizeParser.Format(info.NamespaceSize)}: {info.DataSize} bytes of data " +
        $"({SizeParser.Format(info.DataOffset)} before it for the info block and alignment, " +
        $"{SizeParser.Format(info.NamespaceSize - info.DataOffset - info.DataSize)} after it for the backup info block), sector size {info.SectorSize}";
}
