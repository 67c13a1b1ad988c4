using PfnBlock.Interop;
using PfnBlock.Memory;

namespace PfnBlock.Devices.DirectFile;

/// <summary>
/// The fallback file engine for when io_uring cannot be set up (io_uring_disabled, seccomp, old
/// kernels) or is not wanted: a small pool of dedicated worker threads takes slot numbers from a
/// fixed ring under a lock, runs each request's steps with blocking preadv2/pwritev2/fdatasync/
/// fallocate and completes the bio on that worker.
/// </summary>
/// <remarks>
/// Dedicated threads rather than the .NET thread pool: the work is blocking system calls, which
/// would starve the shared pool and trigger its thread injection, and the shared pool's global
/// queue allocates as items flow through it (measured: about 7 bytes per I/O), while this queue
/// is a preallocated array of slot numbers.
/// </remarks>
internal sealed unsafe class ThreadPoolEngine : FileIoEngine
{
    /// <summary>Most worker threads, whatever the queue depth: effective parallelism is min(queue depth, this).</summary>
    public const int MaxWorkers = 16;

    private readonly object _queueLock = new();
    private readonly int[] _queue;
    private readonly Thread[] _workers;
    private readonly string _reason;
    private int _head;
    private int _count;
    private int _idle;
    private bool _stop;

    public ThreadPoolEngine(SafeFdHandle fd, int slots, PhysicalAddressSpace space, string name, string reason) : base(fd, slots, space)
    {
        _reason = reason;
        _queue = new int[slots];
        _workers = new Thread[Math.Min(slots, MaxWorkers)];
        for (int i = 0; i < _workers.Length; i++)
        {
            _workers[i] = new Thread(WorkerLoop) { IsBackground = true, Name = $"filedev-io{i} {name}" };
            _workers[i].UnsafeStart();
        }
    }

    /// <inheritdoc/>
    public override string Description =>
        $"thread-pool preadv2/pwritev2: {Slots} slots, {_workers.Length} dedicated worker threads '{_workers[0].Name}'.. ({_reason})";

    /// <inheritdoc/>
    protected override void Issue(FileRequest r)
    {
        lock (_queueLock)
        {
            // Each slot is queued at most once, so the ring of slot numbers cannot overflow.
            _queue[(_head + _count) % _queue.Length] = r.Index;
            _count++;
            if (_idle > 0) Monitor.Pulse(_queueLock);
        }
    }

    private void WorkerLoop()
    {
        while (true)
        {
            int index;
            lock (_queueLock)
            {
                while (_count == 0 && !_stop)
                {
                    _idle++;
                    Monitor.Wait(_queueLock);
                    _idle--;
                }
                if (_count == 0) return; // stopping, and nothing left
                index = _queue[_head];
                _head = (_head + 1) % _queue.Length;
                _count--;
            }
            Run(Requests[index]);
        }
    }

    /// <summary>Runs every step of <paramref name="r"/> on the current worker, then completes it.</summary>
    private void Run(FileRequest r)
    {
        try
        {
            while (!OnResult(r, Execute(r))) { }
            Finish(r);
        }
        catch (Exception e)
        {
            FinishFaulted(r, e);
        }
    }

    private long Execute(FileRequest r)
    {
        long res;
        switch (r.Step)
        {
            case FileStep.Preflush:
            case FileStep.Postflush:
                res = Libc.fdatasync(Fd);
                break;
            case FileStep.Read:
                res = Libc.preadv2(Fd, r.Iov + r.IovIndex, r.IovCount - r.IovIndex, r.Offset, 0);
                break;
            case FileStep.Write:
            case FileStep.WriteZeros:
                if (r.Step == FileStep.WriteZeros) PrepareZeroIov(r);
                res = Libc.pwritev2(Fd, r.Iov + r.IovIndex, r.IovCount - r.IovIndex, r.Offset, r.Dsync ? (int)IoUring.RWF_DSYNC : 0);
                break;
            default: // ZeroRange, PunchHole
                res = Libc.fallocate(Fd, FallocateMode(r.Step), r.Offset, r.Remaining);
                break;
        }
        return res < 0 ? -Libc.Errno : res;
    }

    private bool OnWorker => Array.IndexOf(_workers, Thread.CurrentThread) >= 0;

    /// <inheritdoc/>
    protected override bool CanWaitForDrain => !OnWorker;

    /// <inheritdoc/>
    protected override void Shutdown()
    {
        if (OnWorker)
        {
            // Disposed from a completion callback: this worker must keep running to drain, so a
            // helper thread waits for the drain and tears down.
            new Thread(() => { WaitForDrain(); StopWorkers(); }) { IsBackground = true, Name = "filedev-close" }.UnsafeStart();
            return;
        }
        StopWorkers();
    }

    private void StopWorkers()
    {
        lock (_queueLock)
        {
            _stop = true;
            Monitor.PulseAll(_queueLock);
        }
        bool joined = true;
        foreach (Thread w in _workers) joined &= w.Join(TimeSpan.FromSeconds(30));
        if (joined) ReleaseResources();
    }
}
