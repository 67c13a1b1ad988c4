using System.Runtime.InteropServices;

namespace PfnBlock.Interop;

/// <summary>The socket and pipe calls the NBD transmission loop makes on a connected socket's descriptor.</summary>
internal static unsafe partial class Libc
{
    // <sys/socket.h>, <poll.h>, <errno.h>
    public const int MSG_NOSIGNAL = 0x4000;
    public const short POLLIN = 0x1;
    public const short POLLOUT = 0x4;
    public const int IOV_MAX = 1024;

    // <fcntl.h>: pipes and splice
    public const int O_NONBLOCK = 0x800;
    public const int F_SETPIPE_SZ = 1031;
    public const int F_GETPIPE_SZ = 1032;
    public const uint SPLICE_F_MOVE = 1;
    public const uint SPLICE_F_NONBLOCK = 2;
    public const uint SPLICE_F_MORE = 4;

    /// <summary><c>struct iovec</c>.</summary>
    [StructLayout(LayoutKind.Sequential)]
    public struct IoVec
    {
        public void* Base;
        public nuint Length;
    }

    /// <summary><c>struct msghdr</c> (x86_64 layout).</summary>
    [StructLayout(LayoutKind.Sequential)]
    public struct MsgHdr
    {
        public void* Name;
        public uint NameLen;
        public IoVec* Iov;
        public nuint IovLen;
        public void* Control;
        public nuint ControlLen;
        public int Flags;
    }

    /// <summary><c>struct pollfd</c>.</summary>
    [StructLayout(LayoutKind.Sequential)]
    public struct PollFd
    {
        public int Fd;
        public short Events;
        public short Revents;
    }

    [LibraryImport(LibName, EntryPoint = "recv", SetLastError = true)]
    public static partial nint recv(int fd, void* buf, nuint count, int flags);

    [LibraryImport(LibName, EntryPoint = "sendmsg", SetLastError = true)]
    public static partial nint sendmsg(int fd, MsgHdr* msg, int flags);

    [LibraryImport(LibName, EntryPoint = "pipe2", SetLastError = true)]
    public static partial int pipe2(int* fds, int flags);

    [LibraryImport(LibName, EntryPoint = "fcntl", SetLastError = true)]
    public static partial int fcntl(int fd, int cmd, int arg);

    /// <summary>Maps user pages into a pipe by reference (no copy): they must not change until the pipe's reader consumed them.</summary>
    [LibraryImport(LibName, EntryPoint = "vmsplice", SetLastError = true)]
    public static partial nint vmsplice(int fd, IoVec* iov, nuint count, uint flags);

    [LibraryImport(LibName, EntryPoint = "splice", SetLastError = true)]
    public static partial nint splice(int fdIn, long* offIn, int fdOut, long* offOut, nuint length, uint flags);

    [LibraryImport(LibName, EntryPoint = "poll", SetLastError = true)]
    public static partial int poll(PollFd* fds, nuint count, int timeoutMs);
}
