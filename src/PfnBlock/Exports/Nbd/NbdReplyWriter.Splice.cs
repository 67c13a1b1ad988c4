using PfnBlock.Interop;

namespace PfnBlock.Exports.Nbd;

/// <summary>
/// Large read data that lives in the device's own memory goes to the socket by reference: it is
/// <c>vmsplice</c>d into a pipe (the pipe holds references to the pages, nothing is copied) and
/// <c>splice</c>d from there into the socket, whose buffers then hold the same page references
/// until the client reads them. The server copies nothing; the client's receive is the only copy.
/// </summary>
/// <remarks>
/// <para>What the client receives is the pages' content when it reads them, so a reply that has
/// left is not done with its pages until the client took it: the request keeps its direct-access
/// pin (a trim or write-zeroes of the range waits, as for a reply still being sent) and its slot
/// until the socket's send queue is empty (<c>SIOCOUTQ</c> 0: the client has consumed every byte
/// sent, and with it every page reference). Held requests are released at the next flush, while
/// the reader waits for requests (polling the queue, 1 ms at first, backing off to 50 ms) and
/// when it waits for slots. Unix sockets only: there the send queue counts bytes until the peer
/// has read them, while TCP counts them until acknowledged, which a loopback peer does before it
/// reads (the pages would still be in its receive queue).</para>
/// <para>The pipe is made at the first large read of a connection and drained after every piece,
/// so it is empty whenever a splice starts. Memory the kernel will not map into a pipe turns
/// splicing off for the connection; that piece and all later ones are copied. A connection that
/// ends releases what it holds: data still queued for a peer that has not read it may change.</para>
/// </remarks>
internal sealed unsafe partial class NbdReplyWriter
{
    /// <summary>Pipe capacity asked for: a 1 MiB read in one vmsplice (the unprivileged maximum by default).</summary>
    private const int PipeBytes = 1 << 20;

    /// <summary><c>SIOCOUTQ</c>: bytes in a socket's send queue (for a Unix socket: not yet read by the peer).</summary>
    private const ulong SiocOutq = 0x5411;

    // Pieces this large or larger are spliced (uint.MaxValue: never).
    private uint _spliceBytes;
    // Requests whose spliced replies have left but may not have been read yet (they keep their pins).
    private readonly NbdRequest[] _held;
    private int _heldCount;
    private int _pipeRead = -1, _pipeWrite = -1;
    private nuint _pipeCapacity;

    /// <summary>Replies have left whose pages the client may not have read yet.</summary>
    public bool HasHeld => _heldCount > 0;

    /// <summary>Marks iovec <paramref name="v"/> (device memory of <paramref name="request"/>) to be spliced if it is large enough.</summary>
    private void MarkSplice(Libc.IoVec* v, NbdRequest request)
    {
        if (v->Length < _spliceBytes) return;
        _spliced[v - _iov] = true;
        _splicedCount++;
        request.Spliced = true;
    }

    /// <summary>Keeps a request whose reply was spliced until the client has read it (instead of recycling it now).</summary>
    private void Hold(NbdRequest request) => _held[_heldCount++] = request;

    /// <summary>
    /// Recycles the held requests if the client has read everything sent; true when none is held
    /// any more. Caller holds the lock.
    /// </summary>
    public bool ReleaseTaken()
    {
        if (_heldCount == 0) return true;
        int queued = 0;
        // An error cannot tell: release (the socket is failing anyway).
        if (Libc.ioctl(_fd, SiocOutq, &queued) == 0 && queued > 0) return false;
        ReleaseHeld();
        return true;
    }

    /// <summary>Recycles every held request, read or not (the connection is ending or broken). Caller holds the lock.</summary>
    public void ReleaseHeld()
    {
        for (int i = 0; i < _heldCount; i++)
        {
            _recycle(_held[i]);
            _held[i] = null!;
        }
        _heldCount = 0;
        Monitor.PulseAll(_sync);
    }

    /// <summary>Sends iovec <paramref name="v"/> through the pipe, a pipe-full at a time; false if the socket failed.</summary>
    private bool SpliceOut(Libc.IoVec* v)
    {
        if (_pipeWrite < 0 && !OpenPipe()) return SendVectors(v, v + 1);
        while (v->Length > 0)
        {
            Libc.IoVec piece = new() { Base = v->Base, Length = Math.Min(v->Length, _pipeCapacity) };
            nint n = Libc.vmsplice(_pipeWrite, &piece, 1, 0);
            if (n <= 0)
            {
                if (n < 0 && Libc.Errno == Libc.EINTR) continue;
                // The pipe is empty (every piece is drained): copying the rest keeps the stream whole.
                _spliceBytes = uint.MaxValue;
                return SendVectors(v, v + 1);
            }
            if (!Drain((nuint)n)) return false;
            v->Base = (byte*)v->Base + n;
            v->Length -= (nuint)n;
        }
        return true;
    }

    /// <summary>Moves <paramref name="count"/> bytes from the pipe into the socket.</summary>
    private bool Drain(nuint count)
    {
        while (count > 0)
        {
            nint n = Libc.splice(_pipeRead, null, _fd, null, count, Libc.SPLICE_F_MOVE);
            if (n < 0)
            {
                int errno = Libc.Errno;
                if (errno == Libc.EINTR) continue;
                if (errno == Libc.EAGAIN && WaitWritable()) continue;
                return false;
            }
            if (n == 0) return false; // the pipe cannot be empty here: give up on the connection rather than spin
            count -= (nuint)n;
        }
        return true;
    }

    private bool OpenPipe()
    {
        int* fds = stackalloc int[2];
        // Non-blocking: a vmsplice never waits (the pipe is empty when it starts anyway).
        if (Libc.pipe2(fds, Libc.O_CLOEXEC | Libc.O_NONBLOCK) != 0)
        {
            _spliceBytes = uint.MaxValue;
            return false;
        }
        _pipeRead = fds[0];
        _pipeWrite = fds[1];
        // Smaller if the user's pipe memory (fs.pipe-user-pages-soft) is spent: more calls per read, same result.
        _ = Libc.fcntl(_pipeWrite, Libc.F_SETPIPE_SZ, PipeBytes);
        int size = Libc.fcntl(_pipeWrite, Libc.F_GETPIPE_SZ, 0);
        _pipeCapacity = (nuint)Math.Max(size, Environment.SystemPageSize);
        return true;
    }

    private void ClosePipe()
    {
        if (_pipeRead < 0) return;
        _ = Libc.close(_pipeRead);
        _ = Libc.close(_pipeWrite);
        _pipeRead = _pipeWrite = -1;
    }
}
