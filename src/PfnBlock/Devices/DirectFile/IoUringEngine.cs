using PfnBlock.Interop;
using PfnBlock.Memory;

namespace PfnBlock.Devices.DirectFile;

/// <summary>
/// The file engine on io_uring: each slot owns the SQE of the same number, submitters publish it
/// under a short lock and enter the kernel themselves, and one dedicated completion thread waits
/// on the CQ, runs the step machine (resubmitting short transfers and follow-up steps) and
/// completes the bios.
/// </summary>
internal sealed unsafe class IoUringEngine : FileIoEngine
{
    private static readonly byte[] RequiredOps =
        [IoUring.IORING_OP_NOP, IoUring.IORING_OP_READV, IoUring.IORING_OP_WRITEV, IoUring.IORING_OP_FSYNC, IoUring.IORING_OP_FALLOCATE];

    private readonly IoUringRing _ring;
    private readonly Lock _sqLock = new();
    private readonly Thread _thread;
    private readonly uint _wakeIndex;
    private bool _selfTeardown;

    private IoUringEngine(int fd, int slots, PhysicalAddressSpace space, IoUringRing ring, string name) : base(fd, slots, space)
    {
        _ring = ring;
        // One SQE beyond the slots is kept for the NOP that wakes the completion thread at shutdown.
        _wakeIndex = (uint)slots;
        _thread = new Thread(CompletionLoop) { IsBackground = true, Name = $"iou-cq {name}" };
        _thread.UnsafeStart();
    }

    /// <summary>Sets up a ring for <paramref name="slots"/> requests on <paramref name="fd"/>.</summary>
    /// <exception cref="IoUringUnavailableException">io_uring cannot be used; the message says why.</exception>
    public static IoUringEngine Create(int fd, int slots, PhysicalAddressSpace space, string name)
    {
        IoUringRing ring = IoUringRing.Create((uint)slots + 1, RequiredOps);
        try
        {
            // Each slot has at most one SQE in the SQ and one CQE in the CQ, so neither can overflow.
            if (ring.SqEntries < (uint)slots + 1 || ring.CqEntries < (uint)slots + 1)
                throw new IoUringUnavailableException($"io_uring granted only {ring.SqEntries} SQ / {ring.CqEntries} CQ entries for {slots} slots", Libc.EINVAL);
            return new IoUringEngine(fd, slots, space, ring, name);
        }
        catch
        {
            ring.Dispose();
            throw;
        }
    }

    /// <inheritdoc/>
    public override string Description =>
        $"io_uring: {Slots} slots (SQ {_ring.SqEntries}, CQ {_ring.CqEntries}), READV/WRITEV/FSYNC/FALLOCATE, completions on thread '{_thread.Name}'";

    /// <inheritdoc/>
    protected override void Issue(FileRequest r)
    {
        io_uring_sqe* sqe = _ring.Sqe((uint)r.Index);
        sqe->fd = Fd;
        sqe->user_data = (ulong)r.Index;
        switch (r.Step)
        {
            case FileStep.Preflush:
            case FileStep.Postflush:
                sqe->opcode = IoUring.IORING_OP_FSYNC;
                sqe->rw_flags = IoUring.IORING_FSYNC_DATASYNC;
                break;
            case FileStep.Read:
                sqe->opcode = IoUring.IORING_OP_READV;
                sqe->addr = (ulong)(r.Iov + r.IovIndex);
                sqe->len = (uint)(r.IovCount - r.IovIndex);
                sqe->off = (ulong)r.Offset;
                break;
            case FileStep.Write:
            case FileStep.WriteZeros:
                if (r.Step == FileStep.WriteZeros) PrepareZeroIov(r);
                sqe->opcode = IoUring.IORING_OP_WRITEV;
                sqe->addr = (ulong)(r.Iov + r.IovIndex);
                sqe->len = (uint)(r.IovCount - r.IovIndex);
                sqe->off = (ulong)r.Offset;
                sqe->rw_flags = r.Dsync ? IoUring.RWF_DSYNC : 0;
                break;
            case FileStep.ZeroRange:
            case FileStep.PunchHole:
                // IORING_OP_FALLOCATE: off = offset, addr = length, len = mode.
                sqe->opcode = IoUring.IORING_OP_FALLOCATE;
                sqe->off = (ulong)r.Offset;
                sqe->addr = (ulong)r.Remaining;
                sqe->len = (uint)FallocateMode(r.Step);
                break;
        }
        Push((uint)r.Index);
    }

    private void Push(uint sqeIndex)
    {
        lock (_sqLock) _ring.Publish(sqeIndex);
        // Entering outside the lock is safe: every publish is followed by one enter(1), each enter
        // consumes at most one published SQE, and a 0 return means another enter already took ours.
        while (true)
        {
            int r = _ring.Enter(1, 0, 0);
            if (r >= 0) return;
            if (r == -Libc.EAGAIN || r == -Libc.EBUSY) { Thread.Yield(); continue; }
            // Unreachable with a healthy ring (EBADF/EFAULT would be bugs); the SQE stays queued
            // and goes with the next successful enter.
            LastErrno = -r;
            return;
        }
    }

    private void CompletionLoop()
    {
        while (true)
        {
            io_uring_cqe* cqe;
            while ((cqe = _ring.PeekCqe()) != null)
            {
                ulong tag = cqe->user_data;
                int res = cqe->res;
                _ring.Advance();
                if (tag >= (ulong)Slots) continue; // the shutdown NOP
                FileRequest r = Requests[(int)tag];
                try
                {
                    if (OnResult(r, res)) Finish(r);
                    else Issue(r);
                }
                catch (Exception e)
                {
                    FinishFaulted(r, e);
                }
            }
            if (Closing && InFlight == 0) break;
            int w = _ring.Enter(0, 1, IoUring.IORING_ENTER_GETEVENTS);
            if (w < 0 && w != -Libc.EAGAIN && w != -Libc.EBUSY)
            {
                LastErrno = -w;
                Thread.Sleep(1);
            }
        }
        if (_selfTeardown) ReleaseResources();
    }

    /// <inheritdoc/>
    protected override bool CanWaitForDrain => Thread.CurrentThread != _thread;

    /// <inheritdoc/>
    protected override void Shutdown()
    {
        if (Thread.CurrentThread == _thread)
        {
            // Disposed from a completion callback: the loop drains and tears down after it returns.
            _selfTeardown = true;
            return;
        }
        // Wake the thread (it may sleep in GETEVENTS with nothing in flight) and wait for it.
        io_uring_sqe* sqe = _ring.Sqe(_wakeIndex);
        sqe->opcode = IoUring.IORING_OP_NOP;
        sqe->user_data = _wakeIndex;
        Push(_wakeIndex);
        if (_thread.Join(TimeSpan.FromSeconds(30))) ReleaseResources();
        // else: leak the ring rather than unmap it under a live thread.
    }

    /// <inheritdoc/>
    protected override void ReleaseResources()
    {
        _ring.Dispose();
        base.ReleaseResources();
    }
}
