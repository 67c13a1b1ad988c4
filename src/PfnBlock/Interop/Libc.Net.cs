using System.Runtime.InteropServices;

namespace PfnBlock.Interop;

/// <summary>The socket calls the NBD transmission loop makes on a connected socket's descriptor.</summary>
internal static unsafe partial class Libc
{
    // <sys/socket.h>, <poll.h>, <errno.h>
    public const int MSG_NOSIGNAL = 0x4000;
    public const short POLLIN = 0x1;
    public const short POLLOUT = 0x4;
    public const int IOV_MAX = 1024;

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

    [LibraryImport(LibName, EntryPoint = "poll", SetLastError = true)]
    public static partial int poll(PollFd* fds, nuint count, int timeoutMs);
}
