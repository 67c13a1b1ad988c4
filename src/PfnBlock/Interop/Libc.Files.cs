using System.Runtime.InteropServices;

namespace PfnBlock.Interop;

// File-type and identity constants for telling sockets, directories and our own files apart, and
// the calls that make a Unix listening socket without .NET's Socket.Bind (whose Dispose unlinks
// the path, even when it names another server's socket by then).
internal static unsafe partial class Libc
{
    // <linux/stat.h>, <fcntl.h>
    public const uint STATX_INO = 0x100;
    public const int AT_SYMLINK_NOFOLLOW = 0x100;

    // <sys/socket.h>
    public const int AF_UNIX = 1;
    public const int SOCK_STREAM = 1;
    public const int SOCK_CLOEXEC = 0x80000;

    // <sys/mman.h>, <sys/socket.h>
    public const int MADV_DONTNEED = 4;
    public const int MSG_DONTWAIT = 0x40;

    // <errno.h>
    public const int EISDIR = 21;
    public const int EADDRINUSE = 98;

    [LibraryImport(LibName, EntryPoint = "socket", SetLastError = true)]
    public static partial int socket(int domain, int type, int protocol);

    [LibraryImport(LibName, EntryPoint = "bind", SetLastError = true)]
    public static partial int bind(int fd, void* addr, uint addrlen);

    [LibraryImport(LibName, EntryPoint = "listen", SetLastError = true)]
    public static partial int listen(int fd, int backlog);
}
