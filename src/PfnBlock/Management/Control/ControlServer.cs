using System.Net.Sockets;
using System.Text.Json.Nodes;
using PfnBlock.Exports.Nbd;
using PfnBlock.Interop;

namespace PfnBlock.Management.Control;

/// <summary>
/// A running server's control socket (the role of <c>dmsetup status/message</c>,
/// <c>/proc/mdstat</c>, SPDK's RPC socket): a Unix socket answering newline-delimited JSON
/// requests (<see cref="ControlProtocol"/>) with the commands of a <see cref="ControlCommandRegistry"/>.
/// A bad request (malformed JSON, an unknown command, an oversized line, a failing handler) gets
/// an error reply and the connection carries on. The socket path follows the NBD listener's
/// rules: a live socket there is "in use", only a stale one is replaced, and at exit the path is
/// removed only if it is still ours. Servers starting at once are serialised by a lock file next
/// to the socket (<see cref="LockSuffix"/>), held while the server runs, so that two of them
/// cannot both find the same stale socket and one unlink the other's fresh one.
/// </summary>
public sealed unsafe class ControlServer : IDisposable
{
    /// <summary>
    /// Appended to the socket path to name its lock file: an empty file (mode 0600) that the server
    /// holds an exclusive <c>flock</c> on from before it looks at the socket path until after it
    /// removed its socket. The kernel drops the lock when its holder dies, so a lock that can be
    /// taken means any socket there is stale; a held one means a live server, never replaced.
    /// </summary>
    public const string LockSuffix = ".lock";

    /// <summary>Connections served at once; one more is told so and closed.</summary>
    public const int MaxConnections = 16;

    // Owner only: the socket shows every device and export and will take commands that change the
    // server (failing a RAID member), so it is as private as the data directory's namespaces;
    // Unix sockets check write permission on connect.
    private const UnixFileMode SocketMode = UnixFileMode.UserRead | UnixFileMode.UserWrite;

    private readonly ServerContext _server;
    private readonly ControlCommandRegistry _commands;
    private readonly Action<string>? _log;
    private readonly Lock _lock = new();
    private readonly Dictionary<Socket, Thread> _connections = [];
    private Socket? _listener;
    private UnixSocketFile? _socketFile;
    private int _lockFd = -1;
    private string? _lockPath;
    private Thread? _acceptThread;
    private volatile bool _stopping;

    /// <summary>Creates a control server for <paramref name="server"/>; <see cref="Start"/> binds it.</summary>
    /// <param name="server">What commands act on.</param>
    /// <param name="commands">The commands answered (default: <see cref="ControlCommandRegistry.CreateDefault"/>).</param>
    /// <param name="log">Where handler failures that are bugs are reported, or null.</param>
    public ControlServer(ServerContext server, ControlCommandRegistry? commands = null, Action<string>? log = null)
    {
        ArgumentNullException.ThrowIfNull(server);
        _server = server;
        _commands = commands ?? ControlCommandRegistry.CreateDefault();
        _log = log;
    }

    /// <summary>The socket path, once started.</summary>
    public string? Path { get; private set; }

    /// <summary>Takes the lock file of <paramref name="path"/>, then binds the Unix socket there (mode 0600) and starts answering.</summary>
    /// <exception cref="IOException">Another server holds the lock or its socket is live there, the path is not a socket, or it cannot be bound.</exception>
    public void Start(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        NbdListenAddress address = NbdListenAddress.Parse("unix:" + path);
        lock (_lock)
        {
            if (_listener is not null || _lockFd >= 0) throw new InvalidOperationException("the control server is started already");
            _lockPath = path + LockSuffix;
            _lockFd = TakeLock(address, _lockPath);
            try { _listener = NbdListener.Listen(address, out _socketFile, SocketMode); }
            catch
            {
                ReleaseLock();
                throw;
            }
            Path = path;
            Socket listener = _listener;
            _acceptThread = new Thread(() => AcceptLoop(listener)) { IsBackground = true, Name = "control-accept" };
            _acceptThread.Start();
        }
    }

    /// <summary>
    /// Opens (creating) <paramref name="lockPath"/> and takes an exclusive flock on it without
    /// waiting; returns the descriptor. A lock taken on a file that its previous holder unlinked
    /// meanwhile (at its exit) is not the path's lock: then it starts over. Because a holder unlinks
    /// the file before it lets go, a descriptor that a forked child shares until it execs (any .NET
    /// process starting a child) keeps only the old, unlinked file locked, never the path's.
    /// </summary>
    private static int TakeLock(NbdListenAddress address, string lockPath)
    {
        while (true)
        {
            int fd = Libc.open(lockPath, Libc.O_RDWR | Libc.O_CREAT | Libc.O_CLOEXEC, 0x180); // 0600
            if (fd < 0) throw new IOException($"cannot listen on {address}: cannot open its lock file '{lockPath}': {Libc.StrError(Libc.Errno)}");
            if (Libc.flock(fd, Libc.LOCK_EX | Libc.LOCK_NB) != 0)
            {
                int errno = Libc.Errno;
                _ = Libc.close(fd);
                throw new IOException(errno == Libc.EWOULDBLOCK
                    ? $"cannot listen on {address}: in use by another server (it holds '{lockPath}')"
                    : $"cannot listen on {address}: cannot lock '{lockPath}': {Libc.StrError(errno)}");
            }
            if (SameFile(fd, lockPath)) return fd;
            _ = Libc.close(fd);
        }
    }

    /// <summary>True when <paramref name="path"/> still names the file open as <paramref name="fd"/>.</summary>
    private static bool SameFile(int fd, string path)
    {
        statx_t open, named;
        if (Libc.statx(fd, "", Libc.AT_EMPTY_PATH, Libc.STATX_INO, &open) != 0) return false;
        if (Libc.statx(Libc.AT_FDCWD, path, Libc.AT_SYMLINK_NOFOLLOW, Libc.STATX_INO, &named) != 0) return false;
        return open.stx_ino == named.stx_ino && open.stx_dev_major == named.stx_dev_major && open.stx_dev_minor == named.stx_dev_minor;
    }

    /// <summary>Unlinks the lock file (still ours: only its holder unlinks it), then lets go of it.</summary>
    private void ReleaseLock()
    {
        if (_lockFd < 0) return;
        try
        {
            if (SameFile(_lockFd, _lockPath!)) File.Delete(_lockPath!);
        }
        finally
        {
            _ = Libc.close(_lockFd);
            _lockFd = -1;
        }
    }

    private void AcceptLoop(Socket listener)
    {
        while (!_stopping)
        {
            Socket client;
            try { client = listener.Accept(); }
            catch (Exception e) when (e is SocketException or ObjectDisposedException)
            {
                if (_stopping) return;
                Thread.Sleep(10);
                continue;
            }
            lock (_lock)
            {
                if (_stopping || _connections.Count >= MaxConnections)
                {
                    TrySend(client, ControlProtocol.Failure($"too many control connections (at most {MaxConnections})", null));
                    client.Dispose();
                    continue;
                }
                var thread = new Thread(() => Serve(client)) { IsBackground = true, Name = "control-conn" };
                _connections.Add(client, thread);
                thread.Start();
            }
        }
    }

    private void Serve(Socket client)
    {
        try
        {
            var reader = new ControlLineReader(client, ControlProtocol.MaxLineBytes);
            while (!_stopping)
            {
                ControlLineReader.Result r = reader.Next(out ReadOnlySpan<byte> line);
                if (r == ControlLineReader.Result.End) return;
                if (r == ControlLineReader.Result.TooLong)
                {
                    client.Send(ControlProtocol.Failure($"request line longer than {ControlProtocol.MaxLineBytes} bytes", null));
                    continue;
                }
                if (line.Trim(" \t\r"u8).IsEmpty) continue;
                client.Send(Answer(line));
            }
        }
        catch (Exception e) when (e is SocketException or IOException or ObjectDisposedException)
        {
            // The client went away: routine.
        }
        finally
        {
            client.Dispose();
            lock (_lock) _connections.Remove(client);
        }
    }

    /// <summary>The reply line to one request line.</summary>
    public byte[] Answer(ReadOnlySpan<byte> line)
    {
        if (!ControlProtocol.TryParseRequest(line, out ControlProtocol.Request? request, out JsonNode? id, out string? error))
            return ControlProtocol.Failure(error, id);
        ControlCommand? command = _commands.Find(request.Command);
        if (command is null)
            return ControlProtocol.Failure($"unknown command '{request.Command}' (known: {string.Join(", ", _commands.All.Select(c => c.Name))})", id);
        try
        {
            return ControlProtocol.Success(command.Run(new ControlRequest(request.Args, _server, _commands)), id);
        }
        catch (ControlException e)
        {
            return ControlProtocol.Failure($"{command.Name}: {e.Message}", id);
        }
        catch (Exception e)
        {
            // A bug in one handler must not take the control socket (or the server) down.
            _log?.Invoke($"control: {command.Name} failed: {e}");
            return ControlProtocol.Failure($"{command.Name}: internal error: {e.Message}", id);
        }
    }

    private static void TrySend(Socket client, byte[] data)
    {
        try { client.Send(data); }
        catch (Exception e) when (e is SocketException or ObjectDisposedException) { }
    }

    /// <summary>Stops accepting, closes every connection, and removes the socket file if it is still ours.</summary>
    public void Dispose()
    {
        Thread[] threads;
        lock (_lock)
        {
            if (_stopping) return;
            _stopping = true;
            _listener?.Dispose();
            foreach (Socket c in _connections.Keys)
            {
                try { c.Shutdown(SocketShutdown.Both); }
                catch (Exception e) when (e is SocketException or ObjectDisposedException) { }
            }
            threads = [.. _connections.Values, .. _acceptThread is null ? [] : new[] { _acceptThread }];
        }
        foreach (Thread t in threads) t.Join(TimeSpan.FromSeconds(5));
        _socketFile?.RemoveIfOurs();
        // Only now: until the socket is gone, a server starting at this path is refused.
        lock (_lock) ReleaseLock();
    }
}
