using System.Runtime.InteropServices;

namespace PfnBlock.Interop;

/// <summary>
/// The few libc entry points PfnBlock needs, declared as close to the C headers as possible
/// (names and constants keep their C spelling so they can be checked against the man pages).
/// Every call returns -1 and sets errno on failure; callers turn that into exceptions with
/// <see cref="ThrowErrno(string, string?)"/>.
/// </summary>
internal static unsafe partial class Libc
{
    private const string LibName = "libc";

    // <fcntl.h> (x86_64 values)
    public const int O_RDONLY = 0x0;
    public const int O_RDWR = 0x2;
    public const int O_CREAT = 0x40;
    public const int O_EXCL = 0x80;
    public const int O_TRUNC = 0x200;
    public const int O_DIRECT = 0x4000;
    public const int O_CLOEXEC = 0x80000;

    // <sys/mman.h>
    public const int PROT_NONE = 0x0;
    public const int PROT_READ = 0x1;
    public const int PROT_WRITE = 0x2;
    public const int MAP_SHARED = 0x01;
    public const int MAP_PRIVATE = 0x02;
    public const int MAP_SHARED_VALIDATE = 0x03;
    public const int MAP_ANONYMOUS = 0x20;
    public const int MAP_NORESERVE = 0x4000;
    public const int MAP_POPULATE = 0x8000;
    public const int MAP_SYNC = 0x80000;
    public const int MS_SYNC = 4;
    public const int MADV_HUGEPAGE = 14;
    public static readonly nint MAP_FAILED = -1;

    // <sys/file.h>
    public const int LOCK_SH = 1;
    public const int LOCK_EX = 2;
    public const int LOCK_NB = 4;
    public const int LOCK_UN = 8;

    // <linux/falloc.h>
    public const int FALLOC_FL_KEEP_SIZE = 0x01;
    public const int FALLOC_FL_PUNCH_HOLE = 0x02;

    // <errno.h>
    public const int EINTR = 4;
    public const int EIO = 5;
    public const int EAGAIN = 11;
    public const int EWOULDBLOCK = 11;
    public const int EINVAL = 22;
    public const int EOPNOTSUPP = 95;
    public const int ESHUTDOWN = 108;

    [LibraryImport(LibName, EntryPoint = "open", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
    public static partial int open(string path, int flags, int mode);

    [LibraryImport(LibName, EntryPoint = "close", SetLastError = true)]
    public static partial int close(int fd);

    [LibraryImport(LibName, EntryPoint = "pread64", SetLastError = true)]
    public static partial nint pread(int fd, void* buf, nuint count, long offset);

    [LibraryImport(LibName, EntryPoint = "pwrite64", SetLastError = true)]
    public static partial nint pwrite(int fd, void* buf, nuint count, long offset);

    public const int SEEK_END = 2;
    public const int ENOENT = 2;
    public const int EACCES = 13;

    [LibraryImport(LibName, EntryPoint = "lseek64", SetLastError = true)]
    public static partial long lseek(int fd, long offset, int whence);

    [LibraryImport(LibName, EntryPoint = "fsync", SetLastError = true)]
    public static partial int fsync(int fd);

    [LibraryImport(LibName, EntryPoint = "fdatasync", SetLastError = true)]
    public static partial int fdatasync(int fd);

    [LibraryImport(LibName, EntryPoint = "ftruncate64", SetLastError = true)]
    public static partial int ftruncate(int fd, long length);

    [LibraryImport(LibName, EntryPoint = "fallocate64", SetLastError = true)]
    public static partial int fallocate(int fd, int mode, long offset, long len);

    [LibraryImport(LibName, EntryPoint = "flock", SetLastError = true)]
    public static partial int flock(int fd, int operation);

    [LibraryImport(LibName, EntryPoint = "mmap64", SetLastError = true)]
    public static partial nint mmap(nint addr, nuint length, int prot, int flags, int fd, long offset);

    [LibraryImport(LibName, EntryPoint = "munmap", SetLastError = true)]
    public static partial int munmap(nint addr, nuint length);

    [LibraryImport(LibName, EntryPoint = "msync", SetLastError = true)]
    public static partial int msync(nint addr, nuint length, int flags);

    public const int PROT_EXEC = 0x4;

    [LibraryImport(LibName, EntryPoint = "mprotect", SetLastError = true)]
    public static partial int mprotect(nint addr, nuint length, int prot);

    [LibraryImport(LibName, EntryPoint = "madvise", SetLastError = true)]
    public static partial int madvise(nint addr, nuint length, int advice);

    /// <summary>The errno of the last failed call on this thread.</summary>
    public static int Errno => Marshal.GetLastPInvokeError();

    /// <summary>The C library's text for an errno value.</summary>
    public static string StrError(int errno) => Marshal.GetPInvokeErrorMessage(errno);

    /// <summary>Throws an <see cref="IOException"/> for the last errno, naming the call and the path.</summary>
    public static void ThrowErrno(string call, string? path = null) => throw ErrnoException(Errno, call, path);

    /// <summary>An <see cref="IOException"/> whose message names the call, the path and the errno text.</summary>
    public static IOException ErrnoException(int errno, string call, string? path = null)
    {
        string where = path is null ? call : $"{call} '{path}'";
        return new IOException($"{where}: {StrError(errno)} (errno {errno})", errno);
    }
}
