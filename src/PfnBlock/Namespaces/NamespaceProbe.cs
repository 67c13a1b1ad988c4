using PfnBlock.Interop;
using PfnBlock.Namespaces.Btt;

namespace PfnBlock.Namespaces;

/// <summary>What a path holds, as far as PfnBlock is concerned (<see cref="NamespaceProbe"/>).</summary>
public enum NamespaceKind
{
    /// <summary>Nothing exists at the path.</summary>
    Missing,
    /// <summary>A directory.</summary>
    Directory,
    /// <summary>A character device (other than device-DAX), FIFO or socket: no namespace can live there.</summary>
    NotFileOrDevice,
    /// <summary>A device-DAX node (<c>/dev/daxN.M</c>); recognised, but opening one is not supported yet.</summary>
    DeviceDax,
    /// <summary>A file or block device too small for a namespace's two info blocks and a data page, with no PMDK signature.</summary>
    TooSmall,
    /// <summary>A file or block device with neither a PfnBlock info block (primary or backup) nor a PMDK signature.</summary>
    Unknown,
    /// <summary>A PfnBlock namespace in raw mode (byte-addressable, <see cref="NamespaceProbeResult.Info"/> set).</summary>
    RawNamespace,
    /// <summary>A PfnBlock namespace in sector mode: a BTT in its data area (<see cref="NamespaceProbeResult.Info"/> set).</summary>
    SectorNamespace,
    /// <summary>A PfnBlock info block signature is present, but neither copy is valid.</summary>
    CorruptNamespace,
    /// <summary>A PMDK libpmemblk pool (signature <c>PMEMBLK</c>; its header is validated when it is opened).</summary>
    PmemblkPool,
    /// <summary>A PMDK pool of another type (<see cref="NamespaceProbeResult.PmdkPoolType"/>: pmemobj, pmemlog, poolset).</summary>
    OtherPmdkPool,
}

/// <summary>The answer of <see cref="NamespaceProbe.Probe(string)"/>.</summary>
public sealed record NamespaceProbeResult
{
    /// <summary>The path probed, as given.</summary>
    public required string Path { get; init; }
    /// <summary>What the path holds.</summary>
    public required NamespaceKind Kind { get; init; }
    /// <summary>
    /// One line saying what the path is, naming it, e.g. "'/dev/shm/x' is a PMDK pmemobj pool, not a
    /// pmemblk pool or PfnBlock namespace". Fit to show to a user as an error as it stands.
    /// </summary>
    public required string Message { get; init; }
    /// <summary>Bytes in the file or device (lseek to the end; sysfs for device-DAX); 0 when nothing was opened.</summary>
    public long Size { get; init; }
    /// <summary>The valid info block of a <see cref="NamespaceKind.RawNamespace"/> or <see cref="NamespaceKind.SectorNamespace"/>, else null.</summary>
    public NamespaceInfoBlock? Info { get; init; }
    /// <summary>True when <see cref="Info"/> came from the backup copy because the primary is invalid (opening repairs it).</summary>
    public bool InfoFromBackup { get; init; }
    /// <summary>"pmemblk", "pmemobj", "pmemlog" or "poolset" for PMDK pools, else null.</summary>
    public string? PmdkPoolType { get; init; }

    /// <summary>True for a raw or sector PfnBlock namespace with a valid info block.</summary>
    public bool IsNamespace => Kind is NamespaceKind.RawNamespace or NamespaceKind.SectorNamespace;

    /// <summary>
    /// The exception a caller that needed <paramref name="expected"/> (e.g. "a PfnBlock namespace")
    /// throws for this result: <see cref="FileNotFoundException"/> for a missing path,
    /// <see cref="NotSupportedException"/> for device-DAX, else <see cref="InvalidNamespaceException"/>.
    /// </summary>
    public Exception ToException(string expected) => Kind switch
    {
        NamespaceKind.Missing => new FileNotFoundException(Message, Path),
        NamespaceKind.DeviceDax => new NotSupportedException(Message),
        // These messages only say what the path is; add what was wanted instead.
        NamespaceKind.RawNamespace or NamespaceKind.SectorNamespace or NamespaceKind.PmemblkPool =>
            new InvalidNamespaceException($"{Message}, not {expected}"),
        _ => new InvalidNamespaceException(Message),
    };

    /// <summary>The valid info block; throws <see cref="ToException"/> unless the path is a PfnBlock namespace.</summary>
    public NamespaceInfoBlock RequireNamespace(out bool fromBackup)
    {
        if (!IsNamespace) throw ToException("a PfnBlock namespace");
        fromBackup = InfoFromBackup;
        return Info!;
    }
}

/// <summary>
/// The one place that decides what a path is — PfnBlock raw or sector namespace, PMDK pmemblk pool,
/// another PMDK pool, or something PfnBlock cannot open, and why — as the kernel decides once in
/// its namespace probe (<c>nd_pfn_probe</c>, <c>nd_btt_probe</c>) and the rest follows. Opening a
/// namespace or pool, <c>pfnblock check</c> and <c>namespace info</c> all ask it.
/// </summary>
/// <remarks>
/// Reads the first info block (and the backup, only when the primary is not valid) with plain
/// <c>pread</c>s, without a claim, so it works while another process has the namespace open. A
/// probe is a snapshot: openers probe again through their claimed descriptor, which is the answer
/// they act on.
/// </remarks>
public static unsafe class NamespaceProbe
{
    /// <summary>Says what <paramref name="path"/> holds. Throws only when the path cannot be examined at all (e.g. EACCES).</summary>
    /// <exception cref="IOException">stat or open failed for a reason other than the path not existing.</exception>
    public static NamespaceProbeResult Probe(string path)
    {
        // Type first, by path: opening a FIFO would block, and a directory opens read-only fine.
        statx_t st;
        if (Libc.statx(Libc.AT_FDCWD, path, 0, Libc.STATX_TYPE, &st) < 0)
        {
            int errno = Libc.Errno;
            if (errno == Libc.ENOENT) return Result(path, NamespaceKind.Missing, $"no such file: '{path}'");
            throw Libc.ErrnoException(errno, "statx", path);
        }
        if (ByType(path, st.stx_mode) is { } notAFile) return notAFile;
        using NamespaceFile file = NamespaceFile.OpenUnclaimed(path);
        return Classify(file);
    }

    /// <summary>Says what an already open (and possibly claimed) file holds; used by openers on their own descriptor.</summary>
    internal static NamespaceProbeResult Probe(NamespaceFile file)
    {
        statx_t st;
        if (Libc.statx(file.Fd, "", Libc.AT_EMPTY_PATH, Libc.STATX_TYPE, &st) < 0) Libc.ThrowErrno("statx", file.Path);
        return ByType(file.Path, st.stx_mode) ?? Classify(file);
    }

    /// <summary>A result for anything that is not a regular file or block device; null for those.</summary>
    private static NamespaceProbeResult? ByType(string path, ushort mode)
    {
        int type = mode & Libc.S_IFMT;
        if (type is Libc.S_IFREG or Libc.S_IFBLK) return null;
        if (type == Libc.S_IFDIR)
            return Result(path, NamespaceKind.Directory, $"'{path}' is a directory, not a PfnBlock namespace or PMDK pmemblk pool");
        if (type == Libc.S_IFCHR && path.StartsWith("/dev/dax", StringComparison.Ordinal))
            return Result(path, NamespaceKind.DeviceDax, $"'{path}' is a device-DAX node; opening device-DAX namespaces is not supported yet");
        string what = type switch
        {
            Libc.S_IFCHR => "a character device",
            Libc.S_IFIFO => "a FIFO",
            Libc.S_IFSOCK => "a socket",
            _ => $"a file of type 0{type >> 12:o}",
        };
        return Result(path, NamespaceKind.NotFileOrDevice, $"'{path}' is {what}, not a regular file or block device that could hold a PfnBlock namespace or PMDK pool");
    }

    private static NamespaceProbeResult Classify(NamespaceFile file)
    {
        string path = file.Path;
        long size = file.Size;
        if (file.IsDeviceDax)
            return Result(path, NamespaceKind.DeviceDax, $"'{path}' is a device-DAX node; opening device-DAX namespaces is not supported yet", size);
        byte[] block = new byte[NamespaceInfoBlock.Size];
        int n = size > 0 ? file.ReadAt(block, 0) : 0;
        ReadOnlySpan<byte> head = block.AsSpan(0, n);

        if (PmemblkPoolHeader.HasSignature(head))
            return Result(path, NamespaceKind.PmemblkPool, $"'{path}' is a PMDK pmemblk pool", size) with { PmdkPoolType = "pmemblk" };
        if (PmemblkPoolHeader.ForeignPmdkType(head) is string other)
            return Result(path, NamespaceKind.OtherPmdkPool, $"'{path}' is a PMDK {other} pool, not a pmemblk pool or PfnBlock namespace", size) with { PmdkPoolType = other };
        if (size < 3 * NamespaceInfoBlock.Size)
            return Result(path, NamespaceKind.TooSmall, $"'{path}' is too small to be a namespace or pool ({size} bytes)", size);

        // The primary if valid, else the backup (whose recorded size must match the device).
        NamespaceInfoBlock? info;
        bool fromBackup = false;
        if (!NamespaceInfoBlock.TryParse(block, size, out info, out string? primaryError))
        {
            bool primarySigned = NamespaceInfoBlock.HasSignature(block);
            _ = file.ReadAt(block, NamespaceInfoBlock.BackupOffset(size));
            if (NamespaceInfoBlock.TryParse(block, size, out info, out string? backupError) && info!.NamespaceSize == size) fromBackup = true;
            else if (!primarySigned && !NamespaceInfoBlock.HasSignature(block))
                return Result(path, NamespaceKind.Unknown, $"'{path}' is not a PfnBlock namespace (no info block signature) nor a PMDK pool", size);
            else
            {
                // A block a newer build wrote is not damaged: say so, so nobody "repairs" it.
                string what = primaryError!.Contains(NamespaceInfoBlock.NewerFormat, StringComparison.Ordinal) ? "namespace info block of a newer format" : "corrupt namespace info block";
                return Result(path, NamespaceKind.CorruptNamespace, $"'{path}': {what} (primary: {primaryError}; backup: {backupError})", size);
            }
        }
        bool sector = info!.Mode == NamespaceMode.Sector;
        return Result(path, sector ? NamespaceKind.SectorNamespace : NamespaceKind.RawNamespace,
            $"'{path}' is a {(sector ? "sector" : "raw")} PfnBlock namespace", size) with { Info = info, InfoFromBackup = fromBackup };
    }

    private static NamespaceProbeResult Result(string path, NamespaceKind kind, string message, long size = 0) =>
        new() { Path = path, Kind = kind, Message = message, Size = size };
}
