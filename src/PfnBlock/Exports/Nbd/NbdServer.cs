using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography.X509Certificates;
using PfnBlock.Block;
using PfnBlock.Memory;

namespace PfnBlock.Exports.Nbd;

/// <summary>Limits and timeouts of an NBD server.</summary>
public sealed record NbdServerOptions
{
    /// <summary>
    /// Connections served at once. When all are taken, a new connection evicts the oldest one still
    /// in its handshake (so idle or slow handshakes cannot lock real clients out); when every
    /// connection is past its handshake, the new one is closed.
    /// </summary>
    public int MaxConnections { get; init; } = 64;
    /// <summary>Connections from one IP address at once, counted like <see cref="MaxConnections"/>; 0: no limit. Unix-socket clients are not counted.</summary>
    public int MaxConnectionsPerSource { get; init; }
    /// <summary>Requests a connection may have in flight before the server stops reading from it.</summary>
    public int MaxRequestsInFlight { get; init; } = 128;
    /// <summary>Bytes of data buffers per connection for reads of devices without direct access and writes to asynchronous devices (at least 32 MiB); the receive buffer adds 33 MiB. Address space only: what is used is bounded by <see cref="MemoryBudget"/>.</summary>
    public long BufferBytesPerConnection { get; init; } = 64L << 20;
    /// <summary>
    /// Memory of all connections' buffers together (receive buffers and data chunks). Each
    /// connection in transmission has 1 MiB of it reserved; the rest is taken as requests need it.
    /// Must hold <see cref="MaxConnections"/> MiB plus 64 MiB (the most one request needs).
    /// </summary>
    public long MemoryBudget { get; init; } = 256L << 20;
    /// <summary>How long a connection may receive nothing before it gives its buffers' memory back.</summary>
    public TimeSpan IdleTrimDelay { get; init; } = TimeSpan.FromSeconds(1);
    /// <summary>Socket send and receive buffer size asked for in transmission (capped by the kernel).</summary>
    public int SocketBufferBytes { get; init; } = 4 << 20;
    /// <summary>
    /// Read data from a device's own memory (direct access) of at least this many bytes in one
    /// reply piece is handed to the socket by reference (<c>vmsplice</c> into a pipe, <c>splice</c>
    /// to the socket) instead of copied into it; 0 (the default here) turns this off. Plaintext
    /// connections only. The CLI's <c>serve</c> sets 64 KiB: on the quiet machine splicing read
    /// 1 MiB at 1.16–1.21× the IOPS of copying for 0.30–0.38× of the server's CPU per read
    /// (docs/BENCHMARKS.md §3); under other load it has lost IOPS at QD8.
    /// </summary>
    public int SpliceReadBytes { get; init; }
    /// <summary>
    /// How long a connection's thread keeps polling its socket (non-blocking receives) after it ran
    /// out of requests, before it sleeps in a blocking receive; zero (the default here) sleeps at
    /// once. A queue-depth-1 client sends its next request a few microseconds after the reply: a
    /// thread that went to sleep in between is woken through the scheduler, and on a VM whose idle
    /// vCPUs halt at once (this one: cpuidle-haltpoll with <c>guest_halt_poll_ns=0</c>) waking a
    /// halted vCPU costs tens of microseconds. Polling costs the CPU time it spins, at most this long
    /// per idle gap; at higher queue depths the socket is rarely empty and nothing spins. It polls
    /// only between requests, never while the rest of a request's payload is on its way.
    /// Plaintext connections only.
    /// </summary>
    public TimeSpan BusyPoll { get; init; }
    /// <summary>How long a client may take from connecting to the end of option haggling (TLS included); then it is dropped.</summary>
    public TimeSpan HandshakeTimeout { get; init; } = TimeSpan.FromSeconds(5);
    /// <summary>How long a reply may wait for a client that does not read before the connection is dropped.</summary>
    public TimeSpan SendTimeout { get; init; } = TimeSpan.FromSeconds(60);
    /// <summary>The certificate (with its private key) STARTTLS offers; null: TLS is not configured and STARTTLS gets ERR_POLICY.</summary>
    public X509Certificate2? TlsCertificate { get; init; }
    /// <summary>Refuse every option but STARTTLS and ABORT until TLS is up (needs <see cref="TlsCertificate"/>).</summary>
    public bool TlsRequired { get; init; }
    /// <summary>Where connection-level events are reported, or null.</summary>
    public Action<string>? Log { get; init; }
}

/// <summary>
/// An NBD server: accepts connections on any number of TCP and Unix sockets and serves each on
/// its own thread. <see cref="Stop"/> stops accepting, lets every connection finish the requests
/// it has read, closes them, and flushes every export.
/// </summary>
public sealed partial class NbdServer : IDisposable
{
    private readonly List<Socket> _listeners = [];
    private readonly List<Thread> _acceptThreads = [];
    private readonly Dictionary<NbdConnection, Thread> _connections = [];
    private readonly List<NbdConnectionBuffers> _spareBuffers = [];
    private readonly List<UnixSocketFile> _socketFiles = [];
    private readonly Lock _lock = new();
    private volatile bool _stopping;
    private bool _stopped;

    /// <summary>Creates a server of <paramref name="exports"/>.</summary>
    public NbdServer(NbdExportRegistry exports, NbdServerOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(exports);
        if (exports.All.Count == 0) throw new ArgumentException("an NBD server needs at least one export", nameof(exports));
        Exports = exports;
        Options = options ?? new NbdServerOptions();
        if (Options.BufferBytesPerConnection < NbdProtocol.MaxPayload)
            throw new ArgumentOutOfRangeException(nameof(options), "BufferBytesPerConnection must be at least 32 MiB");
        if (Options.MaxRequestsInFlight < 1 || Options.MaxConnections < 1 || Options.MaxConnectionsPerSource < 0)
            throw new ArgumentOutOfRangeException(nameof(options), "limits must be positive");
        if (Options.HandshakeTimeout <= TimeSpan.Zero) throw new ArgumentOutOfRangeException(nameof(options), "the handshake timeout must be positive");
        if (Options.IdleTrimDelay <= TimeSpan.Zero) throw new ArgumentOutOfRangeException(nameof(options), "the idle trim delay must be positive");
        if (Options.BusyPoll < TimeSpan.Zero || Options.BusyPoll >= Options.IdleTrimDelay)
            throw new ArgumentOutOfRangeException(nameof(options), "the busy-poll time must be zero or positive and shorter than the idle trim delay");
        long reserved = (long)Options.MaxConnections * NbdConnectionBuffers.ReceiveFloor;
        if (Options.MemoryBudget < reserved + NbdConnectionBuffers.MaxRequestMemory)
            throw new ArgumentException(
                $"a memory budget of {Common.SizeParser.Format(Options.MemoryBudget)} is too small for {Options.MaxConnections} connections: " +
                $"it must be at least {(reserved + NbdConnectionBuffers.MaxRequestMemory) >> 20}M (1M per connection plus 64M for the largest request)");
        Budget = new NbdMemoryBudget(Options.MemoryBudget - reserved);
        if (Options.TlsRequired && Options.TlsCertificate is null)
            throw new ArgumentException("requiring TLS needs a certificate", nameof(options));
    }

    /// <summary>The exports served.</summary>
    public NbdExportRegistry Exports { get; }
    /// <summary>Limits and timeouts.</summary>
    public NbdServerOptions Options { get; }
    /// <summary>The memory connections take beyond their reserved floors.</summary>
    internal NbdMemoryBudget Budget { get; }
    /// <summary>True once <see cref="Stop"/> began.</summary>
    public bool Stopping => _stopping;

    /// <summary>Connections being served now.</summary>
    public int ActiveConnections
    {
        get { lock (_lock) return _connections.Count; }
    }

    /// <summary>Binds every address and starts accepting.</summary>
    /// <returns>The bound endpoints (with the real port where port 0 was asked for).</returns>
    /// <exception cref="IOException">An address is in use by another server or cannot be bound; the message names it and why.</exception>
    public IReadOnlyList<EndPoint> Start(IEnumerable<NbdListenAddress> addresses)
    {
        var bound = new List<EndPoint>();
        foreach (NbdListenAddress address in addresses)
        {
            Socket listener = NbdListener.Listen(address, out UnixSocketFile? socketFile);
            bound.Add(listener.LocalEndPoint!);
            var thread = new Thread(() => AcceptLoop(listener)) { IsBackground = true, Name = "nbd-accept" };
            lock (_lock)
            {
                if (socketFile is not null) _socketFiles.Add(socketFile);
                _listeners.Add(listener);
                _acceptThreads.Add(thread);
            }
            thread.Start();
        }
        return bound;
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
                Options.Log?.Invoke($"nbd: accept failed: {e.Message}");
                Thread.Sleep(10);
                continue;
            }
            lock (_lock)
            {
                if (_stopping || !TryAdmit(client))
                {
                    client.Dispose();
                    continue;
                }
                var connection = new NbdConnection(this, client);
                var thread = new Thread(() => Serve(connection)) { IsBackground = true, Name = "nbd-conn" };
                _connections.Add(connection, thread);
                thread.Start();
            }
        }
    }

    private void Serve(NbdConnection connection)
    {
        try { connection.Run(); }
        finally
        {
            lock (_lock) _connections.Remove(connection);
        }
    }

    internal NbdConnectionBuffers RentBuffers(PhysicalAddressSpace space)
    {
        lock (_lock)
        {
            // Buffers are registered in one address space; reuse only those the device can reach.
            int i = _spareBuffers.FindLastIndex(b => b.AddressSpace == space);
            if (i >= 0)
            {
                NbdConnectionBuffers b = _spareBuffers[i];
                _spareBuffers.RemoveAt(i);
                return b;
            }
        }
        int chunks = (int)(Options.BufferBytesPerConnection / NbdConnectionBuffers.ChunkBytes);
        return new NbdConnectionBuffers(space, chunks, Options.MaxRequestsInFlight, Budget);
    }

    internal void ReturnBuffers(NbdConnectionBuffers buffers)
    {
        // Kept for the next connection as address space only: no resident pages, nothing of the budget.
        buffers.TrimAll();
        lock (_lock)
        {
            if (!_stopped && _spareBuffers.Count < Options.MaxConnections) { _spareBuffers.Add(buffers); return; }
        }
        buffers.Dispose();
    }

    /// <summary>
    /// Stops accepting, asks every connection to stop reading, waits up to <paramref name="drainTimeout"/>
    /// for them to finish what is in flight and close, then flushes every export.
    /// </summary>
    /// <returns>False if some connection did not finish in time.</returns>
    public bool Stop(TimeSpan? drainTimeout = null)
    {
        Thread[] threads;
        lock (_lock)
        {
            if (_stopped) return true;
            _stopping = true;
            foreach (Socket l in _listeners) l.Dispose();
            foreach (NbdConnection c in _connections.Keys) c.RequestStop();
            threads = [.. _connections.Values, .. _acceptThreads];
        }
        DateTime deadline = DateTime.UtcNow + (drainTimeout ?? TimeSpan.FromSeconds(30));
        bool drained = true;
        foreach (Thread t in threads)
        {
            TimeSpan left = deadline - DateTime.UtcNow;
            drained &= t.Join(left > TimeSpan.Zero ? left : TimeSpan.Zero);
        }
        foreach (NbdExport e in Exports.All) FlushExport(e);
        lock (_lock)
        {
            _stopped = true;
            foreach (UnixSocketFile f in _socketFiles) f.RemoveIfOurs();
            if (drained) foreach (NbdConnectionBuffers b in _spareBuffers) b.Dispose();
            _spareBuffers.Clear();
        }
        return drained;
    }

    private void FlushExport(NbdExport export)
    {
        if (export.ReadOnly || (export.Device.Features & DeviceFeatures.WriteCache) == 0) return;
        Bio bio = BioPool.Shared.Rent(BioOp.Flush, 0);
        BlockStatus status = export.Device.SubmitAndWait(bio);
        bio.Release();
        if (status != BlockStatus.Ok) Options.Log?.Invoke($"nbd: flushing export {export.Name} failed: {status}");
    }

    /// <summary>Stops the server (see <see cref="Stop"/>).</summary>
    public void Dispose() => Stop();
}
