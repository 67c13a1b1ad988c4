using PfnBlock.Interop;

namespace PfnBlock.Namespaces;

/// <summary>Thrown when a namespace is already claimed by another opener.</summary>
public sealed class NamespaceInUseException(string message) : IOException(message);

/// <summary>Thrown when a file is not a valid namespace (missing, foreign or corrupt info block).</summary>
public sealed class InvalidNamespaceException(string message) : IOException(message);

/// <summary>
/// An open file or device descriptor with an exclusive claim: <c>flock(LOCK_EX|LOCK_NB)</c>, the
/// user-space form of the seed's <c>blkdev_get(FMODE_EXCL)</c>. The claim ends with the
/// descriptor, so a killed process never leaves a namespace locked.
/// </summary>
internal sealed class NamespaceFile : IDisposable
{
    // Closing the descriptor is what releases the claim, so the handle lives exactly as long as
    // this object; callers use the raw Fd only while they hold the NamespaceFile.
    private readonly SafeFdHandle _fd;

    private NamespaceFile(string path, SafeFdHandle fd, long size)
    {
        Path = path;
        _fd = fd;
        Size = size;
    }

    public string Path { get; }
    public int Fd => _fd.Fd;
    public long Size { get; }
    public bool IsDeviceDax => Path.StartsWith("/dev/dax", StringComparison.Ordinal);

    /// <summary>Opens and claims <paramref name="path"/>; creates it when <paramref name="create"/>.</summary>
    public static NamespaceFile OpenClaimed(string path, bool create, bool writable = true) => Open(path, create, writable, claim: true);

    /// <summary>Opens <paramref name="path"/> read-only without a claim, to describe a namespace that may be in use.</summary>
    public static NamespaceFile OpenUnclaimed(string path) => Open(path, create: false, writable: false, claim: false);

    /// <summary>
    /// Opens <paramref name="path"/> read-write with a shared claim (<c>LOCK_SH</c>): devdax mappers
    /// share the namespace with each other, and every exclusive opener is refused meanwhile.
    /// </summary>
    public static NamespaceFile OpenShared(string path) => Open(path, create: false, writable: true, claim: true, exclusive: false);

    private static NamespaceFile Open(string path, bool create, bool writable, bool claim, bool? exclusive = null)
    {
        bool exclusiveClaim = exclusive ?? writable;
        int flags = (writable ? Libc.O_RDWR : Libc.O_RDONLY) | Libc.O_CLOEXEC | (create ? Libc.O_CREAT : 0);
        SafeFdHandle fd = SafeFdHandle.Open(path, flags, 0x1B0 /* 0660 */);
        if (fd.IsInvalid)
        {
            int errno = Libc.Errno;
            if (errno == Libc.ENOENT) throw Missing(path, create);
            if (errno == Libc.EISDIR) throw IsDirectory(path);
            throw Libc.ErrnoException(errno, "open", path);
        }
        try
        {
            if (FileType(fd.Fd, path) == Libc.S_IFDIR) throw IsDirectory(path);
            if (claim && !Claim(fd.Fd, exclusiveClaim))
            {
                int errno = Libc.Errno;
                if (errno == Libc.EWOULDBLOCK)
                    throw new NamespaceInUseException(exclusiveClaim
                        ? $"'{path}' is in use by another process (exclusive claim held)"
                        : writable ? $"'{path}' is open as a block device by another process (exclusive claim held); a devdax mapping shares only with other mappers"
                        : $"'{path}' is in use for writing by another process (exclusive claim held)");
                throw Libc.ErrnoException(errno, "flock", path);
            }
            return new NamespaceFile(path, fd, DeviceSize(path, fd.Fd));
        }
        catch
        {
            fd.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Takes the claim, retrying for a short while: a process that forks while it has a namespace
    /// open (any .NET process starting a child) shares the claim with the child until the child
    /// execs, so a claim released a moment ago can still look held for a few milliseconds — or,
    /// on a loaded machine, for a few hundred (seen with a test process starting children while
    /// the crash explorer reopened a namespace thousands of times): up to a second.
    /// </summary>
    private static bool Claim(int fd, bool exclusive)
    {
        int op = (exclusive ? Libc.LOCK_EX : Libc.LOCK_SH) | Libc.LOCK_NB;
        long deadline = Environment.TickCount64 + 1000;
        while (true)
        {
            if (Libc.flock(fd, op) == 0) return true;
            if (Libc.Errno != Libc.EWOULDBLOCK || Environment.TickCount64 >= deadline) return false;
            Thread.Sleep(5);
        }
    }

    /// <summary>ENOENT names what is missing: the file, or (when creating) its directory.</summary>
    private static IOException Missing(string path, bool create)
    {
        string? dir = System.IO.Path.GetDirectoryName(System.IO.Path.GetFullPath(path));
        if (dir is not null && !Directory.Exists(dir))
            return new DirectoryNotFoundException(create
                ? $"cannot create '{path}': directory '{dir}' does not exist"
                : $"no such file: '{path}' (directory '{dir}' does not exist)");
        return new FileNotFoundException($"no such file: '{path}'", path);
    }

    private static IOException IsDirectory(string path) =>
        new InvalidNamespaceException($"'{path}' is a directory; a namespace is a file or a device");

    private static unsafe int FileType(int fd, string path)
    {
        statx_t st;
        if (Libc.statx(fd, "", Libc.AT_EMPTY_PATH, Libc.STATX_TYPE, &st) < 0) Libc.ThrowErrno("statx", path);
        return st.stx_mode & Libc.S_IFMT;
    }

    private static long DeviceSize(string path, int fd)
    {
        if (path.StartsWith("/dev/dax", StringComparison.Ordinal))
        {
            // Device-DAX is a character device: its size comes from sysfs, not lseek.
            string sys = $"/sys/bus/dax/devices/{System.IO.Path.GetFileName(path)}/size";
            if (File.Exists(sys) && long.TryParse(File.ReadAllText(sys).Trim(), out long daxSize)) return daxSize;
            throw new IOException($"cannot read the size of device-DAX '{path}' from {sys}");
        }
        long end = Libc.lseek(fd, 0, Libc.SEEK_END);
        if (end < 0) Libc.ThrowErrno("lseek", path);
        return end;
    }

    /// <summary>True when the descriptor names a regular file (not a block or character device).</summary>
    public bool IsRegularFile => FileType(Fd, Path) == Libc.S_IFREG;

    /// <summary>Sets the file's size and reserves its blocks (regular files only).</summary>
    public void Resize(long size)
    {
        if (Libc.ftruncate(Fd, size) != 0) Libc.ThrowErrno("ftruncate", Path);
        // Reserve the space now so a full filesystem fails here and not on a store through the mapping (SIGBUS).
        if (Libc.fallocate(Fd, 0, 0, size) != 0 && Libc.Errno != Libc.EOPNOTSUPP) Libc.ThrowErrno("fallocate", Path);
    }

    public unsafe int ReadAt(Span<byte> buffer, long offset)
    {
        fixed (byte* p = buffer)
        {
            nint n = Libc.pread(Fd, p, (nuint)buffer.Length, offset);
            if (n < 0) Libc.ThrowErrno("pread", Path);
            return (int)n;
        }
    }

    public void Dispose() => _fd.Dispose();
}
