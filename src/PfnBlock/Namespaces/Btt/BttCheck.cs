using PfnBlock.Interop;
using PfnBlock.Memory;

namespace PfnBlock.Namespaces.Btt;

/// <summary>How serious a finding of <see cref="BttCheck"/> is.</summary>
public enum CheckSeverity
{
    /// <summary>A fact about the layout.</summary>
    Info,
    /// <summary>Not damage, but worth knowing (e.g. a write the next open will complete).</summary>
    Warning,
    /// <summary>Damage or an impossible state.</summary>
    Error,
    /// <summary>Damage that was repaired.</summary>
    Repaired,
}

/// <summary>One thing a check found.</summary>
/// <param name="Severity">How serious.</param>
/// <param name="Message">What, in one line.</param>
public sealed record CheckFinding(CheckSeverity Severity, string Message);

/// <summary>The outcome of <see cref="BttCheck.Run"/>.</summary>
public sealed class BttCheckReport
{
    /// <summary>The file checked.</summary>
    public required string Path { get; init; }
    /// <summary>What the file is ("sector namespace", "raw namespace", "pmemblk pool").</summary>
    public string Container { get; set; } = "";
    /// <summary>Arenas with a usable info block (primary or backup); 0 for a raw namespace or a pool not laid out yet.</summary>
    public int Arenas { get; set; }
    /// <summary>Sectors those arenas export together.</summary>
    public long Sectors { get; set; }
    /// <summary>Bytes per exported sector (the namespace's sector size or the pool's block size); 0 for a raw namespace.</summary>
    public uint SectorSize { get; set; }
    /// <summary>False for a raw namespace: it has no BTT, so only its info blocks were checked.</summary>
    public bool HasBtt { get; set; } = true;
    /// <summary>Everything found, in order.</summary>
    public List<CheckFinding> Findings { get; } = [];
    /// <summary>Media errors: a raw namespace's bad-block list, or the BTT sectors in the error state (512-byte blocks of the exported device). Not inconsistencies: the layout is sound, the data of those blocks is lost.</summary>
    public BadBlockList BadBlocks { get; set; } = BadBlockList.Empty;

    /// <summary>Records the media errors found and says so in one warning.</summary>
    internal void ReportBadBlocks(BadBlockList bad)
    {
        BadBlocks = bad;
        if (bad.IsEmpty) return;
        const int listed = 8;
        string runs = string.Join(' ', bad.Ranges.Take(listed)) + (bad.Ranges.Count > listed ? $" and {bad.Ranges.Count - listed} more" : "");
        Add(CheckSeverity.Warning, $"media errors: {bad.TotalBlocks} bad 512-byte block(s) in {bad.Ranges.Count} run(s) (START+COUNT): {runs}; "
            + "reads of them fail until they are rewritten or cleared (pfnblock namespace clear-errors)");
    }
    /// <summary>No unrepaired error was found.</summary>
    public bool Consistent => Unrepaired == 0;
    /// <summary>Number of repairs made.</summary>
    public int Repairs => Findings.Count(f => f.Severity == CheckSeverity.Repaired);
    /// <summary>Errors found and not repaired.</summary>
    public int Unrepaired { get; private set; }

    internal void Add(CheckSeverity severity, string message) => Findings.Add(new CheckFinding(severity, message));

    /// <summary>Records an error; <paramref name="repairedBy"/>, when given, is the repair made for it.</summary>
    internal void Error(string message, string? repairedBy = null)
    {
        Add(CheckSeverity.Error, message);
        if (repairedBy is null) Unrepaired++;
        else Add(CheckSeverity.Repaired, repairedBy);
    }
}

/// <summary>
/// <c>pfnblock check</c>: verifies a sector namespace's or pmemblk pool's info blocks, map and flog
/// (every data block owned exactly once: by one map entry or as one lane's free block). Maps the
/// file read-only unless asked to repair; repairs only an info block from its valid twin.
/// </summary>
public static unsafe class BttCheck
{
    private const int MaxListed = 8;

    /// <summary>Checks <paramref name="path"/>; with <paramref name="repair"/>, restores invalid info blocks from their valid copies.</summary>
    /// <exception cref="InvalidNamespaceException">The file is neither a namespace nor a pmemblk pool, or its container header is unusable.</exception>
    public static BttCheckReport Run(string path, bool repair)
    {
        // By path first, so a FIFO or directory is refused before it is opened; then again under the claim.
        RequireCheckable(NamespaceProbe.Probe(path));
        var report = new BttCheckReport { Path = path };
        NamespaceFile file = NamespaceFile.OpenClaimed(path, create: false, writable: repair);
        try
        {
            NamespaceProbeResult probe = RequireCheckable(NamespaceProbe.Probe(file));
            (SafeMmapHandle map, PersistenceMode mode) = PmemNamespace.Map(file, file.Size, writable: repair);
            try
            {
                byte* baseAddress = map.Address;
                BttMedia media;
                BttOptions options;
                if (probe.Kind == NamespaceKind.PmemblkPool)
                {
                    if (!PmemblkPoolHeader.TryParse(new ReadOnlySpan<byte>(baseAddress, (int)Math.Min(file.Size, PmemblkPoolHeader.DataOffset)), out PmemblkPoolHeader? hdr, out string? error))
                        throw new InvalidNamespaceException($"'{path}': {error}");
                    report.Container = "pmemblk pool";
                    report.Add(CheckSeverity.Info, $"pool header valid (pool-set uuid {PmdkUuid(hdr!.PoolSetUuid)}, block size {hdr.BlockSize})");
                    media = Media(baseAddress, PmemblkPoolHeader.DataOffset, file.Size - PmemblkPoolHeader.DataOffset, mode);
                    options = new BttOptions { LbaSize = hdr.BlockSize, ParentUuid = hdr.PoolSetUuid, Flavor = BttFlavor.Pmemblk, LayOutOnFirstWrite = true };
                }
                else
                {
                    NamespaceInfoBlock info = probe.RequireNamespace(out bool fromBackup);
                    if (fromBackup)
                    {
                        if (repair)
                        {
                            info.Store(baseAddress);
                            PmemNamespace.PersistMapped(baseAddress, NamespaceInfoBlock.Size, mode);
                        }
                        report.Error("primary namespace info block is invalid; the backup copy is valid",
                            repair ? "primary namespace info block restored from the backup" : null);
                    }
                    if (info.Mode != NamespaceMode.Sector)
                    {
                        report.Container = "raw namespace";
                        report.HasBtt = false;
                        if (!fromBackup) CheckBackupInfo(baseAddress, file.Size, repair, mode, report);
                        report.Add(CheckSeverity.Info, $"raw namespace: {info.DataSize} bytes of data at offset {info.DataOffset}, no BTT (sector mode) and no other metadata to check");
                        report.ReportBadBlocks(info.BadBlocks);
                        return report;
                    }
                    report.Container = "sector namespace";
                    media = Media(baseAddress, info.DataOffset, info.DataSize, mode);
                    options = new BttOptions { LbaSize = info.SectorSize, ParentUuid = info.Uuid, Flavor = BttFlavor.Kernel };
                }
                report.SectorSize = options.LbaSize;
                CheckBtt(media, options, repair, report);
                report.ReportBadBlocks(BttErrors.Scan(media, options));
                return report;
            }
            finally { map.Dispose(); }
        }
        finally { file.Dispose(); }
    }

    /// <summary>The primary namespace info block is valid; the backup at the end must be too (repair copies the primary over it).</summary>
    private static void CheckBackupInfo(byte* baseAddress, long size, bool repair, PersistenceMode mode, BttCheckReport report)
    {
        byte* backup = baseAddress + NamespaceInfoBlock.BackupOffset(size);
        if (NamespaceInfoBlock.TryParse(new ReadOnlySpan<byte>(backup, NamespaceInfoBlock.Size), size, out _, out string? error))
        {
            report.Add(CheckSeverity.Info, "namespace info blocks valid (primary and backup)");
            return;
        }
        if (repair)
        {
            Buffer.MemoryCopy(baseAddress, backup, NamespaceInfoBlock.Size, NamespaceInfoBlock.Size);
            PmemNamespace.PersistMapped(backup, NamespaceInfoBlock.Size, mode);
        }
        report.Error($"backup namespace info block is invalid ({error}); the primary is valid",
            repair ? "backup namespace info block restored from the primary" : null);
    }

    /// <summary>A namespace (raw ones are reported as having no BTT) or a pmemblk pool; anything else is refused with the probe's message.</summary>
    private static NamespaceProbeResult RequireCheckable(NamespaceProbeResult probe) =>
        probe.IsNamespace || probe.Kind == NamespaceKind.PmemblkPool ? probe : throw probe.ToException("a sector namespace or pmemblk pool");

    /// <summary>Checks a BTT on media already mapped (tests, the crash explorer); with <paramref name="repair"/>, as <c>--repair</c> does.</summary>
    internal static BttCheckReport CheckMedia(BttMedia media, BttOptions options, bool repair = false)
    {
        var report = new BttCheckReport { Path = "(memory)", Container = "memory", SectorSize = options.LbaSize };
        CheckBtt(media, options, repair, report);
        return report;
    }

    private static BttMedia Media(byte* baseAddress, long offset, long length, PersistenceMode mode)
    {
        byte* data = baseAddress + offset;
        return new BttMedia(data, length, mode, (o, l) => PmemNamespace.PersistMapped(data + o, l, mode), () => { });
    }

    private static void CheckBtt(BttMedia media, BttOptions options, bool repair, BttCheckReport report)
    {
        ArenaInfoRead[] reads = Btt.ReadArenaInfos(media, options);
        if (reads.Length == 0) { report.Error($"data area of {media.Length} bytes is too small for a BTT"); return; }
        if (options.LayOutOnFirstWrite && reads.All(r => r.Info is null && !r.PrimarySigned && !r.BackupSigned))
        {
            report.Add(CheckSeverity.Info, "no BTT layout yet (fresh pool: it is laid out on the first write; every block reads as zeros)");
            return;
        }
        for (int i = 0; i < reads.Length; i++)
        {
            ArenaInfoRead r = reads[i];
            if (r.Info is null)
            {
                report.Error($"arena {i}: both info blocks are invalid (primary: {r.PrimaryError}; backup: {r.BackupError}); cannot check further");
                return;
            }
            report.Arenas++;
            report.Sectors += r.Info.ExternalNlba;
            report.Add(CheckSeverity.Info, $"arena {i}: BTT {r.Info.Major}.{r.Info.Minor}, {r.Info.ExternalNlba} sectors, {r.Info.InternalNlba} blocks of {r.Info.InternalLbaSize} bytes, nfree {r.Info.Nfree}");
            if (r.PrimaryError is not null || r.BackupError is not null)
            {
                bool primaryBad = r.PrimaryError is not null;
                if (repair)
                {
                    byte* arena = media.Address + r.Offset;
                    long from = primaryBad ? r.Info.Info2Off : 0, to = primaryBad ? 0 : r.Info.Info2Off;
                    PmemStore.Copy(arena + to, new ReadOnlySpan<byte>(arena + from, BttInfoBlock.Size));
                    media.PersistRange(r.Offset + to, BttInfoBlock.Size);
                }
                report.Error(primaryBad
                    ? $"arena {i}: primary info block is invalid ({r.PrimaryError}); the backup is valid"
                    : $"arena {i}: backup info block is invalid ({r.BackupError}); the primary is valid",
                    repair ? $"arena {i}: {(primaryBad ? "primary" : "backup")} info block restored from the {(primaryBad ? "backup" : "primary")}" : null);
            }
            if (r.Info.HasErrorFlag) report.Add(CheckSeverity.Warning, $"arena {i}: the info block's error flag is set (writes are refused)");
            CheckMapAndFlog(media, i, r, report);
        }
    }

    /// <summary>Every block must be owned exactly once, by a map entry or as a lane's free block.</summary>
    private static void CheckMapAndFlog(BttMedia media, int index, ArenaInfoRead r, BttCheckReport report)
    {
        var a = new Arena(media, index, r.Offset, 0, r.Info!, 1);
        int listed = 0;
        void Fail(string message)
        {
            if (listed++ < MaxListed) report.Error($"arena {index}: {message}");
        }
        var owner = new int[a.InternalNlba]; // 0 = unowned, lba+1 for map entries, -(lane+1) for free blocks
        var pendingNew = new Dictionary<uint, uint>();
        var free = new List<(int Lane, uint Block)>();
        for (int lane = 0; lane < a.Info.Nfree; lane++)
        {
            FlogEntry e0 = a.ReadFlog(lane, 0), e1 = a.ReadFlog(lane, 1);
            int cur = LogGroup.Current(e0, e1, out string? error);
            if (cur < 0) { Fail($"flog lane {lane}: {error}"); continue; }
            FlogEntry c = cur == 0 ? e0 : e1;
            if (c.Lba >= a.ExternalNlba || c.OldBlock >= a.InternalNlba || c.NewBlock >= a.InternalNlba)
            { Fail($"flog lane {lane}: entry (lba {c.Lba}, old {c.OldBlock}, new {c.NewBlock}) points outside the arena"); continue; }
            free.Add((lane, c.OldBlock));
            if (c.OldBlock == c.NewBlock) continue;
            uint post = new MapEntry(a.Map[c.Lba]).PostMap(c.Lba);
            if (post != c.NewBlock && post == c.OldBlock)
            {
                pendingNew[c.Lba] = c.NewBlock;
                report.Add(CheckSeverity.Warning, $"arena {index}: flog lane {lane}: the write of sector {c.Lba} was interrupted before its map update; the next open completes it");
            }
        }
        long zero = 0, errors = 0;
        for (uint lba = 0; lba < a.ExternalNlba; lba++)
        {
            var e = new MapEntry(a.Map[lba]);
            if (e.IsZero) zero++;
            if (e.IsError) errors++;
            uint block = pendingNew.TryGetValue(lba, out uint n) ? n : e.PostMap(lba);
            if (block >= a.InternalNlba) { Fail($"map entry of sector {lba} (0x{e.Raw:x8}) points to block {block}, outside the arena's {a.InternalNlba} blocks"); continue; }
            if (owner[block] != 0) { Fail($"block {block} is mapped by sector {lba} and also {Owner(owner[block])}"); continue; }
            owner[block] = (int)lba + 1;
        }
        foreach ((int lane, uint block) in free)
        {
            if (owner[block] != 0) { Fail($"block {block} is flog lane {lane}'s free block and also {Owner(owner[block])}"); continue; }
            owner[block] = -(lane + 1);
        }
        long unowned = 0;
        for (int b = 0; b < owner.Length; b++) if (owner[b] == 0) { if (unowned++ < 3) Fail($"block {b} is neither mapped nor free (leaked)"); }
        if (listed > MaxListed) report.Error($"arena {index}: {listed - MaxListed} more problems not listed");
        if (zero > 0) report.Add(CheckSeverity.Info, $"arena {index}: {zero} sectors in the zero state");
        if (errors > 0) report.Add(CheckSeverity.Warning, $"arena {index}: {errors} sectors in the error state (reads fail until rewritten)");
        if (listed == 0) report.Add(CheckSeverity.Info, $"arena {index}: map and flog consistent ({a.ExternalNlba} mapped + {a.Info.Nfree} free = {a.InternalNlba} blocks)");
    }

    /// <summary>A uuid as PMDK prints it (libuuid's struct read little-endian), from raw bytes read as big-endian.</summary>
    private static string PmdkUuid(Guid raw) => new Guid(raw.ToByteArray(bigEndian: true), bigEndian: false).ToString();

    private static string Owner(int o) => o > 0 ? $"by sector {o - 1}" : $"flog lane {-o - 1}'s free block";
}
