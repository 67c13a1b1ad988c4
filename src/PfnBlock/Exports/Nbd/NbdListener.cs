using System.Net;
using System.Net.Sockets;
using PfnBlock.Interop;

namespace PfnBlock.Exports.Nbd;

/// <summary>
/// Opens listening sockets so that two servers can never share an address: TCP sockets get
/// SO_REUSEADDR (a restart need not wait for TIME_WAIT) but never SO_REUSEPORT, which would let
/// a second server bind the same port and receive half of the connections; a Unix socket path is
/// taken over only when nothing answers a connect to it, and removed at exit only if it is still
/// the socket this server created.
/// </summary>
internal static unsafe class NbdListener
{
    private const int SolSocket = 1;
    private const int SoReuseAddr = 2;
    private const int Backlog = 128;

    /// <summary>Binds and listens on <paramref name="address"/>; <paramref name="socketFile"/> is the Unix socket file made, else null.</summary>
    /// <param name="address">Where to listen.</param>
    /// <param name="socketFile">The Unix socket file made, else null.</param>
    /// <param name="unixMode">Permissions for a Unix socket file, set before it accepts anyone (null: as the umask makes them).</param>
    /// <exception cref="IOException">The address is in use or cannot be bound; the message says which and why.</exception>
    public static Socket Listen(NbdListenAddress address, out UnixSocketFile? socketFile, UnixFileMode? unixMode = null)
    {
        socketFile = null;
        EndPoint ep = address.EndPoint;
        if (ep is UnixDomainSocketEndPoint)
        {
            string path = ep.ToString()!;
            PrepareUnixPath(address, path);
            Socket unix = ListenUnix(address, path, unixMode);
            socketFile = UnixSocketFile.Identify(path);
            return unix;
        }
        var listener = new Socket(ep.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
        try
        {
            // Not SocketOptionName.ReuseAddress: on Linux .NET sets SO_REUSEPORT with it.
            listener.SetRawSocketOption(SolSocket, SoReuseAddr, BitConverter.GetBytes(1));
            try { listener.Bind(ep); }
            catch (SocketException e) when (e.SocketErrorCode == SocketError.AddressAlreadyInUse)
            {
                throw new IOException($"cannot listen on {address}: address in use (another server is listening there)", e);
            }
            catch (SocketException e)
            {
                throw new IOException($"cannot listen on {address}: {e.Message}", e);
            }
            listener.Listen(Backlog);
            return listener;
        }
        catch
        {
            listener.Dispose();
            throw;
        }
    }

    /// <summary>
    /// socket, bind and listen through libc, then wrapped: a .NET socket bound with
    /// <see cref="Socket.Bind"/> unlinks its path when disposed, whoever owns the file by then.
    /// </summary>
    private static Socket ListenUnix(NbdListenAddress address, string path, UnixFileMode? mode)
    {
        int fd = Libc.socket(Libc.AF_UNIX, Libc.SOCK_STREAM | Libc.SOCK_CLOEXEC, 0);
        if (fd < 0) throw new IOException($"cannot listen on {address}: socket: {Libc.StrError(Libc.Errno)}");
        // struct sockaddr_un: sa_family_t, then a NUL-terminated path of at most 107 bytes (checked by the endpoint's parser).
        byte* sun = stackalloc byte[110];
        new Span<byte>(sun, 110).Clear();
        *(ushort*)sun = Libc.AF_UNIX;
        int n = System.Text.Encoding.UTF8.GetBytes(path, new Span<byte>(sun + 2, 107));
        if (Libc.bind(fd, sun, (uint)(2 + n + 1)) != 0)
        {
            int errno = Libc.Errno;
            _ = Libc.close(fd);
            throw new IOException(errno == Libc.EADDRINUSE
                ? $"cannot listen on {address}: in use (another socket was bound there just now)"
                : $"cannot listen on {address}: {Libc.StrError(errno)}");
        }
        try
        {
            // Between bind and listen a connect is refused, so nobody gets in before the mode is set.
            if (mode is { } m) File.SetUnixFileMode(path, m);
            if (Libc.listen(fd, Backlog) != 0) throw new IOException($"cannot listen on {address}: {Libc.StrError(Libc.Errno)}");
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            _ = Libc.close(fd);
            File.Delete(path); // ours: bound a moment ago
            throw new IOException(e.Message.StartsWith("cannot listen", StringComparison.Ordinal) ? e.Message : $"cannot listen on {address}: {e.Message}", e);
        }
        // Wrapped only now: a .NET socket learns whether it listens when it is made.
        return new Socket(new SafeSocketHandle(fd, ownsHandle: true));
    }

    /// <summary>Refuses a live socket or a non-socket at <paramref name="path"/>; unlinks a stale socket.</summary>
    private static void PrepareUnixPath(NbdListenAddress address, string path)
    {
        string dir = Path.GetDirectoryName(Path.GetFullPath(path))!;
        if (!Directory.Exists(dir)) throw new IOException($"cannot listen on {address}: directory '{dir}' does not exist");
        statx_t st;
        if (Libc.statx(Libc.AT_FDCWD, path, Libc.AT_SYMLINK_NOFOLLOW, Libc.STATX_TYPE, &st) != 0)
        {
            int errno = Libc.Errno;
            if (errno == Libc.ENOENT) return;
            throw new IOException($"cannot listen on {address}: {Libc.StrError(errno)}");
        }
        if ((st.stx_mode & Libc.S_IFMT) != Libc.S_IFSOCK)
            throw new IOException($"cannot listen on {address}: '{path}' exists and is not a socket");
        using var probe = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        try
        {
            probe.Connect(new UnixDomainSocketEndPoint(path));
        }
        catch (SocketException e) when (e.SocketErrorCode == SocketError.ConnectionRefused)
        {
            // Nobody accepts on it: a socket left by a server that died.
            File.Delete(path);
            return;
        }
        catch (SocketException e)
        {
            throw new IOException($"cannot listen on {address}: cannot tell whether '{path}' is in use: {e.Message}", e);
        }
        throw new IOException($"cannot listen on {address}: in use by another server (it accepted a connection)");
    }
}

/// <summary>A Unix socket file this server created, identified by device and inode so that it is never confused with a later one at the same path.</summary>
/// <param name="Path">The path bound.</param>
/// <param name="Device">The device number of the file system (major &lt;&lt; 32 | minor).</param>
/// <param name="Inode">The inode number.</param>
internal sealed unsafe record UnixSocketFile(string Path, ulong Device, ulong Inode)
{
    /// <summary>The identity of the socket file at <paramref name="path"/>, or null when there is none.</summary>
    public static UnixSocketFile? Identify(string path)
    {
        statx_t st;
        if (Libc.statx(Libc.AT_FDCWD, path, Libc.AT_SYMLINK_NOFOLLOW, Libc.STATX_TYPE | Libc.STATX_INO, &st) != 0) return null;
        if ((st.stx_mode & Libc.S_IFMT) != Libc.S_IFSOCK) return null;
        return new UnixSocketFile(path, (ulong)st.stx_dev_major << 32 | st.stx_dev_minor, st.stx_ino);
    }

    /// <summary>Unlinks the path if it still names this socket (another server may have replaced it since).</summary>
    public void RemoveIfOurs()
    {
        if (Identify(Path) == this) File.Delete(Path);
    }
}
