using System.Runtime.InteropServices;
using PfnBlock.Interop;

namespace PfnBlock.Exports.Nbd;

/// <summary>
/// Gathers replies (header plus data taken in place: device memory or chunk frames) into one
/// iovec list and sends it with a single <c>sendmsg</c>. While the reader is working through a
/// batch of received requests, replies only queue; the batch ends with one send. Replies that
/// complete outside a batch (asynchronous devices) are sent at once. After a send, each
/// request goes back through the recycle callback. Every method runs under the connection's lock.
/// </summary>
/// <remarks>
/// Large pieces of read data in the device's own memory are not copied into the socket: they
/// are spliced (NbdReplyWriter.Splice.cs), and the <c>sendmsg</c> calls send what lies between them.
/// </remarks>
internal sealed unsafe partial class NbdReplyWriter : IDisposable
{
    private readonly object _sync;
    private readonly int _fd;
    private readonly Stream? _tls;
    private readonly int _sendTimeoutMs;
    private readonly NbdConnectionBuffers _buffers;
    private readonly Action<NbdRequest> _recycle;
    private readonly Libc.IoVec* _iov;
    private int _iovCount;
    // _spliced[i]: iovec i is device memory to splice rather than copy (only ever set when splicing is on).
    private readonly bool[] _spliced = new bool[Libc.IOV_MAX];
    private int _splicedCount;
    private readonly NbdRequest[] _queued;
    private int _queuedCount;
    private bool _batching;

    /// <param name="sync">The connection's lock.</param>
    /// <param name="fd">The socket, written with <c>sendmsg</c> in plaintext.</param>
    /// <param name="tls">The TLS stream to write instead, or null.</param>
    /// <param name="sendTimeoutMs">How long to wait for a client that does not read.</param>
    /// <param name="buffers">The connection's buffers (chunk addresses).</param>
    /// <param name="slots">Request slots of the connection.</param>
    /// <param name="recycle">Called for each request once its reply is sent.</param>
    /// <param name="spliceBytes">Pieces of direct-access read data this large or larger are spliced; 0: never (always so over TLS).</param>
    public NbdReplyWriter(object sync, int fd, Stream? tls, int sendTimeoutMs, NbdConnectionBuffers buffers, int slots, Action<NbdRequest> recycle, int spliceBytes)
    {
        _sync = sync;
        _fd = fd;
        _tls = tls;
        _sendTimeoutMs = sendTimeoutMs;
        _buffers = buffers;
        _recycle = recycle;
        _iov = (Libc.IoVec*)NativeMemory.Alloc((nuint)Libc.IOV_MAX, (nuint)sizeof(Libc.IoVec));
        _queued = new NbdRequest[slots];
        _spliceBytes = tls is null && spliceBytes > 0 ? (uint)spliceBytes : uint.MaxValue;
        _held = new NbdRequest[slots];
    }

    /// <summary>The peer stopped taking data; later replies are dropped (their requests still complete).</summary>
    public bool Broken { get; private set; }

    /// <summary>Replies are queued and not yet sent.</summary>
    public bool HasQueued => _queuedCount > 0;

    /// <summary>Holds replies back until <see cref="EndBatch"/>. Caller holds the lock.</summary>
    public void BeginBatch() => _batching = true;

    /// <summary>Sends everything queued. Caller holds the lock.</summary>
    public void EndBatch()
    {
        _batching = false;
        Flush();
    }

    /// <summary>Queues the reply of <paramref name="request"/>, whose header is encoded. Caller holds the lock.</summary>
    public void Enqueue(NbdRequest request)
    {
        if (request.SegmentCount > 0 && request.HasReplyData) AddSegments(request); // NbdReplyWriter.Segments.cs
        else AddReply(request);
        _queued[_queuedCount++] = request;
        if (!_batching) Flush();
        else Monitor.PulseAll(_sync); // a reader waiting for a free slot can now flush
    }

    /// <summary>The iovecs of a reply in one piece: its header, then its data if any.</summary>
    private void AddReply(NbdRequest request)
    {
        int data = !request.HasReplyData ? 0 : request.DirectData != null ? 1 : request.ChunkCount;
        if (_iovCount + 1 + data > Libc.IOV_MAX) Flush();
        Libc.IoVec* v = _iov + _iovCount;
        v->Base = request.Header;
        v->Length = (nuint)request.HeaderLength;
        v++;
        if (data > 0)
        {
            if (request.DirectData != null)
            {
                v->Base = request.DirectData;
                v->Length = request.Length;
                MarkSplice(v, request);
            }
            else
            {
                uint left = request.Length;
                for (int i = 0; i < request.ChunkCount; i++, v++)
                {
                    uint n = Math.Min(left, (uint)NbdConnectionBuffers.ChunkBytes);
                    v->Base = _buffers.ChunkAddress(request.Chunks[i]);
                    v->Length = n;
                    left -= n;
                }
            }
        }
        _iovCount += 1 + data;
    }

    /// <summary>Sends what is queued and recycles the requests. Caller holds the lock.</summary>
    public void Flush()
    {
        if (_queuedCount == 0) return;
        if (_heldCount > 0) ReleaseTaken(); // NbdReplyWriter.Splice.cs
        if (!Broken && !SendAll()) Broken = true;
        _iovCount = 0;
        if (_splicedCount > 0) Array.Clear(_spliced);
        _splicedCount = 0;
        for (int i = 0; i < _queuedCount; i++)
        {
            if (_queued[i].Spliced && !Broken) Hold(_queued[i]);
            else _recycle(_queued[i]);
            _queued[i] = null!;
        }
        if (Broken && _heldCount > 0) ReleaseHeld();
        _queuedCount = 0;
        Monitor.PulseAll(_sync);
    }

    private bool SendAll()
    {
        if (_tls is not null) return WriteAllTls();
        Libc.IoVec* v = _iov;
        Libc.IoVec* end = _iov + _iovCount;
        if (_splicedCount == 0) return SendVectors(v, end);
        while (v < end)
        {
            // Copy what comes before the next spliced piece, then splice that piece: the byte stream keeps its order.
            Libc.IoVec* stop = v;
            while (stop < end && !_spliced[stop - _iov]) stop++;
            if (!SendVectors(v, stop)) return false;
            if (stop == end) break;
            if (!SpliceOut(stop)) return false;
            v = stop + 1;
        }
        return true;
    }

    /// <summary>Sends the iovecs [<paramref name="v"/>, <paramref name="end"/>) with <c>sendmsg</c>, resuming partial sends.</summary>
    private bool SendVectors(Libc.IoVec* v, Libc.IoVec* end)
    {
        while (v < end)
        {
            Libc.MsgHdr msg = default;
            msg.Iov = v;
            msg.IovLen = (nuint)(end - v);
            nint sent = Libc.sendmsg(_fd, &msg, Libc.MSG_NOSIGNAL);
            if (sent < 0)
            {
                int errno = Libc.Errno;
                if (errno == Libc.EINTR) continue;
                if (errno == Libc.EAGAIN && WaitWritable()) continue;
                return false;
            }
            // Skip what went out; a partly sent vector keeps its tail.
            nuint left = (nuint)sent;
            while (v < end && left >= v->Length) { left -= v->Length; v++; }
            if (left > 0) { v->Base = (byte*)v->Base + left; v->Length -= left; }
        }
        return true;
    }

    private bool WriteAllTls()
    {
        // TLS encrypts in user space anyway, so the vectors are simply written in turn.
        try
        {
            for (int i = 0; i < _iovCount; i++) _tls!.Write(new ReadOnlySpan<byte>(_iov[i].Base, (int)_iov[i].Length));
            _tls!.Flush();
            return true;
        }
        catch (Exception e) when (e is IOException or ObjectDisposedException or InvalidOperationException)
        {
            return false;
        }
    }

    private bool WaitWritable()
    {
        Libc.PollFd p = new() { Fd = _fd, Events = Libc.POLLOUT };
        int r;
        do r = Libc.poll(&p, 1, _sendTimeoutMs);
        while (r < 0 && Libc.Errno == Libc.EINTR);
        return r > 0;
    }

    public void Dispose()
    {
        ClosePipe();
        NativeMemory.Free(_iov);
    }
}
