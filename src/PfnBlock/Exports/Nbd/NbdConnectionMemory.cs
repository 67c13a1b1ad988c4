using System.Diagnostics;
using PfnBlock.Interop;

namespace PfnBlock.Exports.Nbd;

// How a connection lives within the server's memory budget (NbdMemoryBudget): it fills no more of
// its receive buffer than the budget granted, asks for more only when a request needs it, gives
// back what it does not need while others wait, and gives everything back when it goes idle.
internal sealed unsafe partial class NbdConnection
{
    /// <summary>What a receive returns when the connection went idle and gave its receive buffer back.</summary>
    private const nint IdleTrimmed = -2;
    private const int SolSocket = 1, SoRcvTimeo = 20;

    private int _receiveEnd;
    private bool _idleArmed;
    private bool _idleByTimeout;
    private bool _idleTrimmed;
    private long _busyPollTicks; // NbdServerOptions.BusyPoll in Stopwatch ticks, set when the idle timer is armed

    /// <summary>
    /// Readies the receive buffer for the next receive and returns how far it may be filled:
    /// <paramref name="need"/> bytes from <paramref name="head"/> (the incomplete request), at least
    /// the floor. Small requests are kept within the floor (a partial one moved to the front), so
    /// a larger window only ever holds a large write on its way in; it is kept for the next one
    /// unless others wait for memory. Memory a request needs and the connection lacks is taken from
    /// the budget, waiting for it if need be. -1: the connection stopped while waiting.
    /// </summary>
    private int PrepareReceive(byte* buf, ref int head, ref int tail, int need)
    {
        NbdConnectionBuffers b = _buffers!;
        const int Floor = NbdConnectionBuffers.ReceiveFloor;
        if (head == tail) head = tail = 0;
        int want = Math.Max(need, Floor);
        if (head > 0 && head + want > (want > Floor ? b.ReceiveCharged : Floor))
        {
            Buffer.MemoryCopy(buf + head, buf, b.ReceiveCapacity, tail - head);
            tail -= head;
            head = 0;
        }
        if (want == Floor && b.Budget.UnderPressure) b.ShrinkReceive(Floor);
        // A large write to an asynchronous device is copied into chunks (one more for a read-modify-write's
        // bounce): they come in the same grant as its receive window, so it never waits holding half.
        int payload = need - NbdProtocol.RequestHeaderSize;
        int chunks = want > Floor && !_export!.Synchronous ? (payload + NbdConnectionBuffers.ChunkBytes - 1) / NbdConnectionBuffers.ChunkBytes + 1 : 0;
        if ((head + want > b.ReceiveCharged || chunks > b.ChargedFreeChunks) && !TakeForRequest(head + want, chunks, tail)) return -1;
        _receiveEnd = head + want;
        return _receiveEnd;
    }

    /// <summary>Takes a receive window of <paramref name="receive"/> bytes and <paramref name="chunks"/> accounted chunks in one grant, queueing for the memory if others hold it.</summary>
    private bool TakeForRequest(int receive, int chunks, int tail)
    {
        NbdConnectionBuffers b = _buffers!;
        int to = Math.Max(b.ReceiveCharged, NbdConnectionBuffers.RoundUp(receive));
        while (true)
        {
            lock (_sync)
            {
                int moreChunks = Math.Max(0, chunks - b.ChargedFreeChunks);
                if (b.TryTake(to - b.ReceiveCharged + (long)moreChunks * NbdConnectionBuffers.ChunkBytes))
                {
                    b.AdoptReceive(to);
                    b.Budget.Release(b.AdoptCharged(moreChunks));
                    return true;
                }
                // Wait holding only the floor and the request's bytes already here.
                b.ShrinkReceive(tail);
                b.QueueForMemory();
                to = Math.Max(b.ReceiveCharged, NbdConnectionBuffers.RoundUp(receive));
            }
            if (_stopping || _server.Stopping)
            {
                lock (_sync) b.Unqueue();
                return false;
            }
            Thread.Sleep(5);
        }
    }

    /// <summary>Waits until chunks can be rented: our own requests in flight bring some back; with none, other connections hold the memory. Caller holds the lock.</summary>
    private void WaitForChunks()
    {
        if (_writer!.HasQueued) _writer.Flush();
        else if (_writer.HasHeld) WaitHeld();
        else if (_requests!.Outstanding > 1) Monitor.Wait(_sync); // the caller's request holds one slot
        else
        {
            // Only the bytes of this batch stay; a window kept from an earlier large write goes back.
            _buffers!.ShrinkReceive(_receiveEnd);
            _buffers.QueueForMemory();
            Monitor.Wait(_sync, 5);
        }
    }

    /// <summary>
    /// Receives into [tail, end) of the buffer. After <see cref="NbdServerOptions.IdleTrimDelay"/>
    /// without data, gives the connection's memory back once; returns <see cref="IdleTrimmed"/> if
    /// that emptied the receive buffer (the caller prepares it again), else keeps waiting.
    /// </summary>
    private nint ReceiveOrIdle(int fd, byte* buf, ref int head, ref int tail, int end)
    {
        nint n;
        int idleMs = (int)_server.Options.IdleTrimDelay.TotalMilliseconds;
        if (!_idleArmed)
        {
            // A blocking socket times its receives out after the idle delay; a non-blocking one polls with it.
            _idleArmed = true;
            _busyPollTicks = _server.Options.BusyPoll.Ticks * Stopwatch.Frequency / TimeSpan.TicksPerSecond;
            _idleByTimeout = _socket.Blocking;
            if (_idleByTimeout)
            {
                Span<long> timeval = [idleMs / 1000, idleMs % 1000 * 1000];
                _socket.SetRawSocketOption(SolSocket, SoRcvTimeo, System.Runtime.InteropServices.MemoryMarshal.AsBytes(timeval));
            }
        }
        // Poll only between requests (nothing of one buffered): in the middle of a large payload the
        // client is still sending, and polling there spent 40 % more CPU per 1 MiB write for nothing.
        if (_busyPollTicks > 0 && !_idleTrimmed && head == tail && (n = PollReceive(fd, buf + tail, end - tail)) != 0) return n;
        while (true)
        {
            n = Libc.recv(fd, buf + tail, (nuint)(end - tail), 0);
            if (n >= 0)
            {
                _idleTrimmed = false;
                return n;
            }
            int errno = Libc.Errno;
            if (errno == Libc.EINTR) continue;
            if (errno != Libc.EAGAIN) return -1;
            bool idle = _idleByTimeout && !_idleTrimmed;
            if (!idle)
            {
                Libc.PollFd p = new() { Fd = fd, Events = Libc.POLLIN };
                idle = Libc.poll(&p, 1, _idleTrimmed ? -1 : idleMs) == 0;
            }
            if (idle && !_idleTrimmed)
            {
                _idleTrimmed = true;
                if (TrimIdle(ref head, ref tail)) return IdleTrimmed;
            }
        }
    }

    /// <summary>
    /// Polls the socket with non-blocking receives for up to <see cref="NbdServerOptions.BusyPoll"/>,
    /// yielding the CPU between them:
    /// the bytes received, -1 on a socket error, or 0 when nothing came (the caller then sleeps in a
    /// blocking receive, which also sees the end of the stream).
    /// </summary>
    private nint PollReceive(int fd, byte* to, int length)
    {
        long until = Stopwatch.GetTimestamp() + _busyPollTicks;
        do
        {
            nint n = Libc.recv(fd, to, (nuint)length, Libc.MSG_DONTWAIT);
            if (n > 0)
            {
                _idleTrimmed = false;
                _export!.Stats.PolledReceive();
                return n;
            }
            if (n == 0) return 0;
            int errno = Libc.Errno;
            if (errno != Libc.EAGAIN && errno != Libc.EINTR) return -1;
            // sched_yield: a client on this CPU (a pinned benchmark, a busy machine) must get to
            // send its request; spinning through its time slice would delay the very request awaited.
            Thread.Yield();
        }
        while (Stopwatch.GetTimestamp() < until);
        return 0;
    }

    /// <summary>Gives back the free chunks and, if nothing is buffered, the whole receive buffer; true in that case.</summary>
    private bool TrimIdle(ref int head, ref int tail)
    {
        lock (_sync) _buffers!.TrimFreeChunks();
        if (head != tail) return false; // half a request is here; the client will send the rest
        head = tail = 0;
        _buffers!.TrimIdleReceive();
        return true;
    }
}
