using System.Buffers.Binary;
using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Runtime.CompilerServices;
using System.Security.Authentication;
using PfnBlock.Block;
using PfnBlock.Interop;
using PfnBlock.Memory;

namespace PfnBlock.Exports.Nbd;

/// <summary>
/// One client connection: the handshake, then the transmission loop on a dedicated thread.
/// </summary>
/// <remarks>
/// <para>The loop receives as much as the socket holds into the receive buffer, then parses and
/// starts every complete request in it (a batch) and ends the batch with one send of all
/// replies ready by then. Write payloads are submitted in place from the receive buffer when the
/// device completes synchronously (otherwise copied into chunks first); reads come straight from
/// the device's memory when it offers direct access, else a bio reads them into chunks.</para>
/// <para>Back-pressure: a connection has a fixed number of request slots and chunks; when they
/// run out the reader sends queued replies or waits for completions instead of reading on.
/// On disconnect the loop stops reading and waits for every request in flight before it gives
/// its buffers back, so an acknowledged write is never lost and nothing leaks.</para>
/// </remarks>
internal sealed unsafe partial class NbdConnection
{
    private static readonly Action<Bio> s_bioDone = OnBioDone;

    private readonly NbdServer _server;
    private readonly Socket _socket;
    private readonly object _sync = new();
    private readonly Action<NbdRequest> _recycle;
    private NbdExport? _export;
    private NbdNegotiation? _negotiation;
    private NbdConnectionBuffers? _buffers;
    private NbdReplyWriter? _writer;
    // The request slots: a bounded pool of bios whose per-I/O context is the request (front_pad).
    private BioPool? _requests;
    private volatile bool _stopping;
    private int _phase; // PhaseHandshake, PhaseTransmission or PhaseEvicted

    private const int PhaseHandshake = 0, PhaseTransmission = 1, PhaseEvicted = 2;

    public NbdConnection(NbdServer server, Socket socket)
    {
        _server = server;
        _socket = socket;
        _recycle = Recycle;
        AcceptedTicks = Stopwatch.GetTimestamp();
        Source = (socket.RemoteEndPoint as IPEndPoint)?.Address;
    }

    /// <summary>When the connection was accepted (a <see cref="Stopwatch"/> timestamp).</summary>
    public long AcceptedTicks { get; }
    /// <summary>The client's IP address, or null for a Unix socket.</summary>
    public IPAddress? Source { get; }
    /// <summary>Still negotiating: it may be evicted to make room.</summary>
    public bool InHandshake => Volatile.Read(ref _phase) == PhaseHandshake;
    /// <summary>Evicted during its handshake; it no longer counts against the limits.</summary>
    public bool Evicted => Volatile.Read(ref _phase) == PhaseEvicted;

    /// <summary>Drops the connection if it is still in its handshake (never one in transmission).</summary>
    public bool TryEvict()
    {
        if (Interlocked.CompareExchange(ref _phase, PhaseEvicted, PhaseHandshake) != PhaseHandshake) return false;
        // Shutdown, not Dispose: the handshake thread is blocked reading this socket and closes it.
        try { _socket.Shutdown(SocketShutdown.Both); }
        catch (Exception e) when (e is SocketException or ObjectDisposedException) { }
        return true;
    }

    /// <summary>Stops reading new requests; the loop then drains and closes.</summary>
    public void RequestStop()
    {
        _stopping = true;
        try { _socket.Shutdown(SocketShutdown.Receive); }
        catch (Exception e) when (e is SocketException or ObjectDisposedException) { }
    }

    /// <summary>Serves the connection until the client leaves, breaks the protocol, or the server stops.</summary>
    public void Run()
    {
        NbdServerOptions options = _server.Options;
        try
        {
            if (_socket.ProtocolType == ProtocolType.Tcp) _socket.NoDelay = true;
            _socket.ReceiveTimeout = (int)options.HandshakeTimeout.TotalMilliseconds;
            _socket.SendTimeout = (int)options.SendTimeout.TotalMilliseconds;
            using var stream = new NetworkStream(_socket, ownsSocket: false);
            using (new Timer(static c => ((NbdConnection)c!)._server.HandshakeExpired((NbdConnection)c), this, options.HandshakeTimeout, Timeout.InfiniteTimeSpan))
            {
                try
                {
                    _negotiation = new NbdHandshake(stream, _server.Exports, () => _stopping || _server.Stopping,
                        options.TlsCertificate, options.TlsRequired,
                        () => Interlocked.CompareExchange(ref _phase, PhaseTransmission, PhaseHandshake) == PhaseHandshake).Run();
                }
                catch when (Evicted)
                {
                    return; // the server shut the socket: already logged
                }
            }
            using Stream? tls = _negotiation?.Tls;
            if (_negotiation is null || _stopping) return;
            _socket.ReceiveTimeout = 0;
            // Large socket buffers let a big read reply (and a big write payload over TCP) move in
            // one go instead of many wake-ups; the kernel caps them at net.core.[rw]mem_max.
            _socket.SendBufferSize = options.SocketBufferBytes;
            _socket.ReceiveBufferSize = options.SocketBufferBytes;
            _export = _negotiation.Export;
            _export.Stats.ConnectionOpened();
            try { Transmit(); }
            finally { _export.Stats.ConnectionClosed(); }
        }
        catch (Exception e) when (e is EndOfStreamException or ObjectDisposedException
                                   || e is IOException { InnerException: SocketException } || e is SocketException)
        {
            // The client went away (closed, reset, timed out): routine, not worth a log line.
        }
        catch (Exception e) when (e is NbdProtocolException or IOException or AuthenticationException)
        {
            options.Log?.Invoke($"nbd: connection dropped: {e.Message}");
        }
        catch (Exception e)
        {
            // A bug must not take the server down; the connection goes, the others carry on.
            options.Log?.Invoke($"nbd: connection failed: {e}");
        }
        finally
        {
            _socket.Dispose();
        }
    }

    private void Transmit()
    {
        NbdServerOptions options = _server.Options;
        NbdExport export = _export!;
        _buffers = _server.RentBuffers(export.Device.AddressSpace);
        int slots = _buffers.Slots;
        int made = 0;
        _requests = new BioPool(new BioPoolOptions
        {
            Name = "nbd-requests",
            Capacity = slots,
            Context = bio => new NbdRequest(this, bio, made, _buffers.Header(made++)),
        });
        int fd = (int)_socket.SafeHandle.DangerousGetHandle();
        // Spliced replies need a send queue that empties only when the peer has read (NbdReplyWriter.Splice.cs).
        int splice = _socket.AddressFamily == AddressFamily.Unix ? options.SpliceReadBytes : 0;
        _writer = new NbdReplyWriter(_sync, fd, _negotiation!.Tls, (int)options.SendTimeout.TotalMilliseconds, _buffers, slots, _recycle, splice);
        export.WriteGate.Register(_writes);
        try
        {
            ReceiveLoop(fd);
        }
        finally
        {
            Drain();
            export.WriteGate.Unregister(_writes);
            _writer.Dispose();
            _server.ReturnBuffers(_buffers);
        }
    }

    private void ReceiveLoop(int fd)
    {
        byte* buf = _buffers!.Receive;
        int head = 0, tail = 0;
        while (true)
        {
            int need = NbdProtocol.RequestHeaderSize;
            while (tail - head >= NbdProtocol.RequestHeaderSize)
            {
                byte* p = buf + head;
                if (BinaryPrimitives.ReadUInt32BigEndian(new ReadOnlySpan<byte>(p, 4)) != NbdProtocol.RequestMagic)
                    throw new NbdProtocolException("bad request magic");
                var flags = (NbdCommandFlags)BinaryPrimitives.ReadUInt16BigEndian(new ReadOnlySpan<byte>(p + 4, 2));
                var command = (NbdCommand)BinaryPrimitives.ReadUInt16BigEndian(new ReadOnlySpan<byte>(p + 6, 2));
                ulong cookie = Unsafe.ReadUnaligned<ulong>(p + 8);
                ulong offset = BinaryPrimitives.ReadUInt64BigEndian(new ReadOnlySpan<byte>(p + 16, 8));
                uint length = BinaryPrimitives.ReadUInt32BigEndian(new ReadOnlySpan<byte>(p + 24, 4));
                int payload = 0;
                if (command == NbdCommand.Write)
                {
                    // A payload this large cannot be buffered or skipped cheaply: the spec allows a disconnect.
                    if (length > NbdProtocol.MaxPayload) throw new NbdProtocolException($"write of {length} bytes exceeds the 32 MiB limit");
                    payload = (int)length;
                }
                if (tail - head < NbdProtocol.RequestHeaderSize + payload)
                {
                    need = NbdProtocol.RequestHeaderSize + payload;
                    break;
                }
                head += NbdProtocol.RequestHeaderSize + payload;
                if (command == NbdCommand.Disc) return;
                Start(cookie, command, flags, offset, length, p + NbdProtocol.RequestHeaderSize);
            }

            lock (_sync) _writer!.EndBatch();
            if (_stopping || _writer.Broken) return;
            if (_writer.HasHeld) WaitUntilTaken(fd);
            nint n;
            do
            {
                // NbdConnectionMemory.cs: how much of the receive buffer the memory budget lets this connection fill.
                int end = PrepareReceive(buf, ref head, ref tail, need);
                if (end < 0) return;
                n = _negotiation!.Tls is { } tls ? tls.Read(new Span<byte>(buf + tail, end - tail)) : ReceiveOrIdle(fd, buf, ref head, ref tail, end);
            }
            while (n == IdleTrimmed);
            if (n <= 0) return;
            tail += (int)n;
            lock (_sync) _writer.BeginBatch();
        }
    }

    /// <summary>Validates and starts one request; its reply is queued when it completes.</summary>
    private void Start(ulong cookie, NbdCommand command, NbdCommandFlags flags, ulong offset, uint length, byte* payload)
    {
        NbdRequest r = AcquireSlot();
        r.Reset(cookie, command, flags, offset, length, Stopwatch.GetTimestamp());
        NbdExport export = _export!;
        NbdError error = NbdRequestValidator.Validate(export, _negotiation!, command, flags, offset, length);
        if (error != NbdError.None) { Complete(r, error); return; }
        if (command is NbdCommand.Read or NbdCommand.Write or NbdCommand.Trim or NbdCommand.WriteZeroes && !export.IsAligned(offset, length))
        {
            StartUnaligned(r, payload); // NbdReadModifyWrite.cs: only clients that did not ask for block sizes get here
            return;
        }

        IBlockDevice device = export.Device;
        long sector = (long)(offset >> Bio.SectorShift);
        BioFlags bioFlags = (flags & NbdCommandFlags.Fua) != 0 ? BioFlags.Fua : BioFlags.None;
        Bio bio = r.Bio;
        switch (command)
        {
            case NbdCommand.Read:
                if (export.Dax is IDaxDevice dax && TryDirectRead(dax, r))
                {
                    PlanDirectRead(r); // NbdConnection.Sparse.cs: holes and zeros go as hole chunks
                    Complete(r, NbdError.None);
                    return;
                }
                AcquireChunks(r);
                bio.Init(BioOp.Read, sector);
                AddChunkVecs(bio, r);
                break;
            case NbdCommand.Write:
                bio.Init(BioOp.Write, sector, bioFlags);
                if (export.Synchronous)
                {
                    // The device is done with the vectors before Submit returns: use the receive buffer in place.
                    bio.AddVec(_buffers!.ReceivePfn, (uint)(payload - _buffers.Receive), length);
                }
                else
                {
                    AcquireChunks(r);
                    CopyIntoChunks(r, payload);
                    AddChunkVecs(bio, r);
                }
                break;
            case NbdCommand.Flush:
                bio.Init(BioOp.Flush, 0);
                break;
            case NbdCommand.Trim:
            case NbdCommand.WriteZeroes:
                // Memory devices zero at memory bandwidth, so FAST_ZERO never needs to fail here.
                if (command == NbdCommand.WriteZeroes && (flags & NbdCommandFlags.NoHole) != 0) bioFlags |= BioFlags.NoUnmap;
                bio.Init(command == NbdCommand.Trim ? BioOp.Discard : BioOp.WriteZeroes, sector, bioFlags);
                bio.Iter.Size = length;
                break;
            default:
                // CACHE (a hint: the data already lives in memory) and BLOCK_STATUS (the device's allocation map) need no I/O.
                if (command == NbdCommand.BlockStatus) PlanBlockStatus(r);
                Complete(r, NbdError.None);
                return;
        }
        bio.EndIo = s_bioDone;
        if (command != NbdCommand.Flush && bio.Op != BioOp.Read)
        {
            export.WriteGate.Enter(_writes); // waits while a read-modify-write runs on the export
            r.WriteGateHeld = true;
        }
        device.Submit(bio);
    }

    /// <summary>Points the reply at the device's own frames, pinned until the reply has left (<see cref="Recycle"/> unpins).</summary>
    private static bool TryDirectRead(IDaxDevice dax, NbdRequest r)
    {
        long firstPage = (long)(r.Offset >> Pfn.PageShift);
        long pages = (long)((r.Offset + r.Length - 1) >> Pfn.PageShift) - firstPage + 1;
        long got = dax.DirectAccess(firstPage, pages, out DaxRange range);
        if (got < pages)
        {
            // Past a target boundary, or a discard of the range is pending: read through a bio instead.
            if (got > 0) range.Unpin();
            return false;
        }
        r.Pin = range;
        r.DirectData = range.Address + (long)(r.Offset & (Pfn.PageSize - 1));
        return true;
    }

    private void AddChunkVecs(Bio bio, NbdRequest r)
    {
        uint left = r.Length;
        for (int i = 0; i < r.ChunkCount; i++)
        {
            uint n = Math.Min(left, (uint)NbdConnectionBuffers.ChunkBytes);
            bio.AddVec(_buffers!.ChunkPfn(r.Chunks[i]), 0, n);
            left -= n;
        }
    }

    private void CopyIntoChunks(NbdRequest r, byte* payload)
    {
        uint left = r.Length;
        for (int i = 0; i < r.ChunkCount; i++)
        {
            uint n = Math.Min(left, (uint)NbdConnectionBuffers.ChunkBytes);
            Buffer.MemoryCopy(payload, _buffers!.ChunkAddress(r.Chunks[i]), n, n);
            payload += n;
            left -= n;
        }
    }

    private static void OnBioDone(Bio bio)
    {
        NbdRequest r = bio.ContextAs<NbdRequest>();
        if (r.Command == NbdCommand.Read && bio.Status == BlockStatus.Ok) r.Connection.PlanChunkRead(r);
        r.Connection.Complete(r, NbdRequestValidator.FromBlockStatus(bio.Status, r.Command));
    }

    /// <summary>Encodes, counts and queues the reply of <paramref name="r"/>.</summary>
    private void Complete(NbdRequest r, NbdError error)
    {
        if (r.WriteGateHeld)
        {
            r.WriteGateHeld = false;
            NbdWriteGate.Exit(_writes);
        }
        r.Error = error;
        r.EncodeReply(_negotiation!.StructuredReplies);
        _export!.Stats.Record(r.Command, error, r.Length, Stopwatch.GetTimestamp() - r.StartTicks);
        lock (_sync) _writer!.Enqueue(r);
    }

    private NbdRequest AcquireSlot()
    {
        lock (_sync)
        {
            Bio? bio;
            while (!_requests!.TryRent(out bio)) WaitForProgress();
            return bio.ContextAs<NbdRequest>();
        }
    }

    private void AcquireChunks(NbdRequest r)
    {
        int count = (int)((r.Length + NbdConnectionBuffers.ChunkBytes - 1) / NbdConnectionBuffers.ChunkBytes);
        lock (_sync)
        {
            while (!_buffers!.TryRent(count, r.Chunks)) WaitForChunks();
            r.ChunkCount = count;
        }
    }

    /// <summary>Sends queued replies (which frees their slots and chunks) or waits for a completion or for the client to read spliced replies. Caller holds the lock.</summary>
    private void WaitForProgress()
    {
        if (_writer!.HasQueued) _writer.Flush();
        else if (_writer.HasHeld) WaitHeld();
        else Monitor.Wait(_sync);
    }

    /// <summary>Releases spliced replies the client has read, else waits a little (nothing signals their reading). Caller holds the lock.</summary>
    private void WaitHeld()
    {
        if (!_writer!.ReleaseTaken()) Monitor.Wait(_sync, 1);
    }

    /// <summary>
    /// Before waiting for requests: releases the spliced replies (their pins, their slots) once the
    /// client has read them, polling the send queue with a backing-off interval, or returns as soon
    /// as the client sends something.
    /// </summary>
    private void WaitUntilTaken(int fd)
    {
        int ms = 1;
        while (true)
        {
            lock (_sync) if (_writer!.ReleaseTaken()) return;
            Libc.PollFd p = new() { Fd = fd, Events = Libc.POLLIN };
            if (Libc.poll(&p, 1, ms) != 0) return; // data, end of stream or an error: the receive sees it
            ms = Math.Min(ms * 2, 50);
        }
    }

    /// <summary>Called by the writer under the lock once a reply went out.</summary>
    private void Recycle(NbdRequest r)
    {
        if (r.ChunkCount > 0) _buffers!.Return(r.Chunks.AsSpan(0, r.ChunkCount));
        r.ChunkCount = 0;
        if (r.DirectData != null)
        {
            r.Pin.Unpin();
            r.Pin = default;
            r.DirectData = null;
        }
        r.Bio.Release();
    }

    /// <summary>Waits until every request in flight has completed and its reply was sent (or dropped).</summary>
    private void Drain()
    {
        lock (_sync)
        {
            _writer!.EndBatch();
            // The connection ends: nothing would ever release replies held for a client that stopped reading.
            _writer.ReleaseHeld();
            while (_requests is not null && _requests.Outstanding > 0) WaitForProgress();
        }
    }
}
