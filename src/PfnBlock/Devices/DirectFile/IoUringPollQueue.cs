using PfnBlock.Block;
using PfnBlock.Interop;

namespace PfnBlock.Devices.DirectFile;

/// <summary>
/// One polling thread's own io_uring for an <see cref="IoUringEngine"/>: the thread's polled
/// requests are queued here and its <see cref="BlockPoll.Poll"/> submits them and reaps their
/// completions in one <c>io_uring_enter(to_submit, min_complete, GETEVENTS)</c>, so no other thread
/// is woken per I/O.
/// </summary>
/// <remarks>
/// <para>The ring is <c>SINGLE_ISSUER | DEFER_TASKRUN</c>, created on the owning thread (which the
/// kernel then binds as its only issuer): the kernel runs completion work only while that thread
/// waits in the ring, which is exactly when it polls. A new request is submitted at once, in the
/// owner's Submit; its completion waits for the owner's poll. SQE number = slot number, as on the
/// engine's shared ring, and the ring has an SQE per slot, so any slot can land here. The file is
/// registered on this ring too; the engine's fixed buffers are registered here lazily, the first
/// time a request of this queue uses one (the owning thread is the only one allowed to register).</para>
/// <para>Teardown: the engine closes the queue once no request is in flight (under
/// <see cref="_lock"/>, which <see cref="Poll"/> holds while it touches the ring). A close from a
/// completion running inside this thread's own poll leaves the unmapping to that poll's exit.</para>
/// </remarks>
internal sealed unsafe class IoUringPollQueue : FilePollQueue
{
    private readonly IoUringEngine _engine;
    private readonly Lock _lock = new();
    // Fixed buffers: entry i of the engine's table is registered here when _registered[i]; entries
    // [0, _buffersSeen) were looked at. _releasedSeen: the engine's release count last synced.
    private readonly bool[] _registered = new bool[IoUringEngine.MaxBuffers];
    private int _buffersSeen;
    private int _releasedSeen;
    private int _pollDepth;
    private bool _closed;
    private bool _unmapOnExit;

    private IoUringPollQueue(IoUringEngine engine, IoUringRing ring, bool fixedFile, bool fixedBuffers)
    {
        _engine = engine;
        Ring = ring;
        FixedFile = fixedFile;
        FixedBuffers = fixedBuffers;
    }

    /// <summary>The ring; only the owning thread submits to it.</summary>
    public IoUringRing Ring { get; }
    /// <summary>True when the file is registered on this ring as fixed file 0.</summary>
    public bool FixedFile { get; }
    /// <summary>True when this ring has a fixed-buffer table to mirror the engine's into.</summary>
    public bool FixedBuffers { get; }
    /// <summary>True while the owning thread reaps this ring's CQ (steps issued meanwhile wait for the poll's next enter).</summary>
    public bool Reaping;
    /// <inheritdoc/>
    public override object Owner => _engine;
    /// <inheritdoc/>
    public override bool IsClosed => Volatile.Read(ref _closed);

    /// <summary>Sets up the calling thread's ring for <paramref name="engine"/> (<paramref name="entries"/> SQEs: one per slot).</summary>
    /// <exception cref="IoUringUnavailableException">The kernel refused the ring.</exception>
    public static IoUringPollQueue Create(IoUringEngine engine, int fd, uint entries, bool wantBuffers)
    {
        IoUringRing ring = IoUringRing.Create(entries, [],
            IoUring.IORING_SETUP_SINGLE_ISSUER | IoUring.IORING_SETUP_DEFER_TASKRUN | IoUring.IORING_SETUP_SUBMIT_ALL);
        if (ring.SqEntries < entries || ring.CqEntries < entries)
        {
            ring.Dispose();
            throw new IoUringUnavailableException($"io_uring granted only {ring.SqEntries} SQ / {ring.CqEntries} CQ entries for a poll queue of {entries}", Libc.EINVAL);
        }
        bool fixedFile = ring.RegisterFile(fd) == 0;
        bool fixedBuffers = wantBuffers && ring.RegisterSparseBuffers(IoUringEngine.MaxBuffers) == 0;
        return new IoUringPollQueue(engine, ring, fixedFile, fixedBuffers);
    }

    /// <summary>
    /// Owning thread: true when engine buffer <paramref name="index"/> is registered on this ring,
    /// registering it (and any earlier ones not yet looked at) now if needed.
    /// </summary>
    public bool HasBuffer(int index)
    {
        if (!FixedBuffers) return false;
        while (_buffersSeen <= index)
        {
            int i = _buffersSeen++;
            _registered[i] = _engine.RegisterBufferOn(Ring, i);
        }
        return _registered[index];
    }

    /// <inheritdoc/>
    public override int Poll(bool wait)
    {
        lock (_lock)
        {
            if (_closed || InFlightCount == 0) return 0;
            _pollDepth++;
            try
            {
                if (_releasedSeen != Volatile.Read(ref _engine.ReleasedBuffers)) DropReleasedBuffers();
                int n = Ring.Enter(Ring.SqPending, wait ? 1u : 0u, IoUring.IORING_ENTER_GETEVENTS);
                // EAGAIN/EBUSY: short of resources; what completed is reaped below and the
                // caller polls again. The CQ has room for every slot, so it cannot overflow.
                if (n < 0 && n != -Libc.EAGAIN && n != -Libc.EBUSY) _engine.LastErrno = -n;
                return _engine.Reap(this);
            }
            finally
            {
                if (--_pollDepth == 0 && _unmapOnExit) Ring.Dispose();
            }
        }
    }

    /// <summary>Engine, once no request is in flight: stops the queue and unmaps its ring (now, or when this thread's poll returns).</summary>
    public void Close()
    {
        lock (_lock)
        {
            if (_closed) return;
            Volatile.Write(ref _closed, true);
            if (_pollDepth > 0) _unmapOnExit = true;
            else Ring.Dispose();
        }
    }

    // Arenas that left the address space: drop this ring's pins too, as the engine did on its ring.
    private void DropReleasedBuffers()
    {
        _releasedSeen = Volatile.Read(ref _engine.ReleasedBuffers);
        for (int i = 0; i < _buffersSeen; i++)
        {
            if (!_registered[i] || _engine.IsBufferLive(i)) continue;
            _ = Ring.UpdateBuffer((uint)i, null, 0);
            _registered[i] = false;
            Interlocked.Increment(ref _engine.PollQueueBuffersDropped);
        }
    }
}
