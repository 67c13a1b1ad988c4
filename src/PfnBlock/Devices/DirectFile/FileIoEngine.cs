using System.Runtime.InteropServices;
using PfnBlock.Block;
using PfnBlock.Interop;
using PfnBlock.Memory;

namespace PfnBlock.Devices.DirectFile;

/// <summary>The kernel call a request issues next; a request walks preflush → main step → postflush.</summary>
internal enum FileStep : byte
{
    /// <summary>fdatasync before the data (PREFLUSH, and the whole of a FLUSH bio).</summary>
    Preflush,
    /// <summary>Scatter read into the bio's frames.</summary>
    Read,
    /// <summary>Gather write from the bio's frames (RWF_DSYNC when FUA).</summary>
    Write,
    /// <summary>fallocate(ZERO_RANGE|KEEP_SIZE).</summary>
    ZeroRange,
    /// <summary>fallocate(PUNCH_HOLE|KEEP_SIZE).</summary>
    PunchHole,
    /// <summary>Writes from a shared zero buffer, when the filesystem has neither fallocate mode.</summary>
    WriteZeros,
    /// <summary>fdatasync after the data (FUA on ops that cannot carry RWF_DSYNC).</summary>
    Postflush,
    /// <summary>No step left: <see cref="FileRequest.Status"/> is final and the bio completes.</summary>
    Done,
}

/// <summary>
/// One queue slot of a file engine: the bio it carries, the iovec array built from its frames
/// (allocated once, natively, when the engine is created) and its progress. Slot number =
/// io_uring SQE number = user_data, so no lookup structure is needed on completion.
/// </summary>
internal sealed unsafe class FileRequest(int index, FileIoEngine engine)
{
    public readonly int Index = index;
    public readonly FileIoEngine Engine = engine;
    public iovec* Iov;
    public int IovIndex;
    public int IovCount;
    public Bio? Bio;
    public BioOp Op;
    public FileStep Step;
    public FileStep MainStep;
    public bool Postflush;
    public bool Dsync;
    public bool NoUnmap;
    public BlockStatus Status;
    /// <summary>File offset of the next byte of the current step.</summary>
    public long Offset;
    /// <summary>Bytes the current step still has to move.</summary>
    public long Remaining;
    /// <summary>The submitting thread's poll queue when the bio is polled there; null on the engine's own completion context.</summary>
    public FilePollQueue? Queue;
}

/// <summary>
/// A file engine's queue of one thread's polled requests (<see cref="BlockPoll"/>): the engine
/// counts them here, so the thread knows whether polling has anything to reap.
/// </summary>
internal abstract class FilePollQueue : PollQueue
{
    /// <summary>Requests on this queue not yet finished; touched by the owning thread only.</summary>
    public int InFlightCount;
    /// <inheritdoc/>
    public override int InFlight => InFlightCount;
}

/// <summary>
/// What the two file engines (io_uring, thread-pool pread/pwrite) share: the fixed set of request
/// slots with back-pressure, building iovecs by kmapping each segment, the step machine (preflush,
/// data with resubmission of short transfers, fallocate fallbacks, postflush), completing bios
/// outside any lock, and an orderly shutdown that completes every accepted bio exactly once.
/// </summary>
internal abstract unsafe class FileIoEngine : IDisposable
{
    /// <summary>iovecs per slot: one per segment, and a bio has at most <see cref="Bio.MaxVecs"/> vectors.</summary>
    public const int MaxIov = Bio.MaxVecs;
    /// <summary>Size of the shared zero buffer used when fallocate cannot zero.</summary>
    private const int ZeroChunk = 256 << 10;

    // Depth of bio completions running on this thread; a submit from inside one never blocks.
    [ThreadStatic] private static int t_completionDepth;

    private readonly PhysicalAddressSpace _space;
    private readonly Lock _resourceLock = new();
    private readonly object _slotLock = new();
    private readonly int[] _free;
    private int _freeCount;
    private int _waiters;
    private int _inFlight;
    private bool _closing;
    private bool _released;
    private byte* _zeros;
    private int _noZeroRange;
    private int _noPunch;
    // Owned; closed in ReleaseResources once no request is in flight. The I/O path uses the raw
    // _fd taken here, so it pays no SafeHandle reference counting per call.
    private readonly SafeFdHandle _fdHandle;
    private readonly int _fd;

    protected FileIoEngine(SafeFdHandle fd, int slots, PhysicalAddressSpace space)
    {
        _fdHandle = fd;
        _fd = fd.Fd;
        _space = space;
        Requests = new FileRequest[slots];
        _free = new int[slots];
        try
        {
            for (int i = 0; i < slots; i++)
            {
                Requests[i] = new FileRequest(i, this)
                {
                    Iov = (iovec*)NativeMemory.AlignedAlloc((nuint)(MaxIov * sizeof(iovec)), 64),
                };
                _free[slots - 1 - i] = i;
            }
            _freeCount = slots;
            _zeros = (byte*)NativeMemory.AlignedAlloc(ZeroChunk, Pfn.PageSize);
            NativeMemory.Clear(_zeros, ZeroChunk);
        }
        catch
        {
            FreeNative();
            throw;
        }
    }

    /// <summary>The slots; index = slot number.</summary>
    protected FileRequest[] Requests { get; }
    /// <summary>The file descriptor the engine does I/O on (owned: closed with the engine).</summary>
    internal int Fd => _fd;
    /// <summary>Number of slots (the queue depth).</summary>
    public int Slots => Requests.Length;
    /// <summary>One line saying how I/O is done.</summary>
    public abstract string Description { get; }

    /// <summary>Test hook: treat every transfer as moving at most this many bytes (simulates short I/O); 0 = off.</summary>
    internal int DebugMaxTransfer;
    /// <summary>Test hook: the next this-many kernel results of any request are replaced by -<see cref="DebugInjectErrno"/>.</summary>
    internal int DebugInjectCount;
    /// <summary>The errno <see cref="DebugInjectCount"/> injects (EAGAIN and EINTR are retried, others fail the bio).</summary>
    internal int DebugInjectErrno;
    /// <summary>The last errno a request failed with (diagnostics).</summary>
    internal int LastErrno;
    /// <summary>Exceptions thrown by completion callbacks, swallowed so the completion context survives.</summary>
    internal long CallbackFaults;
    /// <summary>The last such exception.</summary>
    internal Exception? LastCallbackFault;
    /// <summary>Bios that took a slot (reached the engine's kernel path or its preparation).</summary>
    internal long Accepted;

    /// <summary>True while the calling thread runs a bio completion of some file engine.</summary>
    protected static bool InCompletion => t_completionDepth > 0;
    /// <summary>Set once shutdown began.</summary>
    protected bool Closing => Volatile.Read(ref _closing);
    /// <summary>Slots taken and not yet released.</summary>
    protected int InFlight => Volatile.Read(ref _inFlight);
    /// <summary>Slots taken and not yet released (diagnostics).</summary>
    internal int InFlightCount => InFlight;

    /// <summary>True when the engine can leave polled bios to their submitter's <see cref="BlockPoll.Poll"/>.</summary>
    public virtual bool SupportsPolling => false;

    /// <summary>Carries out a validated bio; it completes exactly once, here, on the completion context, or in the submitter's poll.</summary>
    public void Submit(Bio bio)
    {
        FilePollQueue? queue = (bio.Flags & BioFlags.Polled) != 0 ? PollQueueFor() : null;
        FileRequest? r = Acquire(queue, out BlockStatus refusal);
        if (r is null) { bio.Complete(refusal); return; }
        Interlocked.Increment(ref Accepted);
        if (queue is not null)
        {
            r.Queue = queue;
            queue.InFlightCount++;
        }
        if (!Prepare(r, bio))
        {
            // A pfn the CPU cannot reach never gets near the kernel.
            r.Bio = null;
            Release(r);
            bio.Complete(BlockStatus.Invalid);
            return;
        }
        Issue(r);
    }

    /// <summary>Starts (or restarts) the kernel call for <paramref name="r"/>'s current step.</summary>
    protected abstract void Issue(FileRequest r);

    /// <summary>
    /// The calling thread's poll queue for a polled bio, opened on first use; null when the thread
    /// is not polling (outside <see cref="BlockPoll.Begin"/>) or the engine cannot poll for it,
    /// and the bio then completes on the engine's own context.
    /// </summary>
    protected virtual FilePollQueue? PollQueueFor() => null;

    /// <summary>Called once the engine is closing and its last request finished (the io_uring engine wakes its thread).</summary>
    protected virtual void OnDrained() { }

    /// <summary>
    /// Registers [<paramref name="start"/>, +<paramref name="length"/>) as a fixed buffer, so a
    /// single-iovec read or write inside it skips the kernel's per-I/O page pinning; returns the
    /// registration's number for <see cref="UnregisterRange"/>, or -errno (this engine has no fixed
    /// buffers: EOPNOTSUPP). The caller keeps the memory alive and owned until it unregisters.
    /// </summary>
    public virtual int RegisterRange(byte* start, nuint length) => -Libc.EOPNOTSUPP;

    /// <summary>Drops registration <paramref name="id"/> (the kernel unpins its pages); a no-op once the engine has closed.</summary>
    public virtual void UnregisterRange(int id) { }

    /// <summary>
    /// Applies the result of <paramref name="r"/>'s current step (bytes or fallocate/fsync 0, or
    /// -errno). True when the request is finished (<see cref="FileRequest.Status"/> set); false when
    /// the engine must <see cref="Issue"/> it again for the next step or the rest of a short transfer.
    /// </summary>
    protected bool OnResult(FileRequest r, long res)
    {
        if (Volatile.Read(ref DebugInjectCount) > 0 && Interlocked.Decrement(ref DebugInjectCount) >= 0) res = -DebugInjectErrno;
        if (res == -Libc.EINTR || res == -Libc.EAGAIN) return false;
        switch (r.Step)
        {
            case FileStep.Read:
            case FileStep.Write:
            case FileStep.WriteZeros:
            {
                // 0 bytes is EOF (the file shrank under us) or no progress: never report success.
                if (res <= 0) return Fail(r, res);
                long n = res;
                int clamp = DebugMaxTransfer;
                if (clamp > 0 && n > clamp) n = clamp;
                if (n > r.Remaining) n = r.Remaining;
                r.Remaining -= n;
                r.Offset += n;
                if (r.Step != FileStep.WriteZeros) ConsumeIov(r, n);
                if (r.Remaining > 0) return false; // short transfer: go again for the rest
                break;
            }
            case FileStep.ZeroRange:
                if (res == -Libc.EOPNOTSUPP)
                {
                    Volatile.Write(ref _noZeroRange, 1);
                    r.Step = r.NoUnmap || Volatile.Read(ref _noPunch) != 0 ? FileStep.WriteZeros : FileStep.PunchHole;
                    return false;
                }
                if (res < 0) return Fail(r, res);
                break;
            case FileStep.PunchHole:
                if (res == -Libc.EOPNOTSUPP)
                {
                    Volatile.Write(ref _noPunch, 1);
                    r.Step = FileStep.WriteZeros;
                    return false;
                }
                if (res < 0) return Fail(r, res);
                break;
            default: // Preflush, Postflush
                if (res < 0) return Fail(r, res);
                break;
        }
        r.Step = r.Step switch
        {
            FileStep.Preflush => r.Op == BioOp.Flush ? FileStep.Done : r.MainStep,
            FileStep.Postflush => FileStep.Done,
            _ => r.Postflush ? FileStep.Postflush : FileStep.Done,
        };
        if (r.Step != FileStep.Done) return false;
        r.Status = BlockStatus.Ok;
        return true;
    }

    /// <summary>Points iovec 0 at the zero buffer for the next chunk of a <see cref="FileStep.WriteZeros"/> step.</summary>
    protected void PrepareZeroIov(FileRequest r)
    {
        r.Iov[0].iov_base = _zeros;
        r.Iov[0].iov_len = (nuint)Math.Min(r.Remaining, ZeroChunk);
        r.IovIndex = 0;
        r.IovCount = 1;
    }

    /// <summary>fallocate mode of a fallocate step.</summary>
    protected static int FallocateMode(FileStep step) =>
        step == FileStep.ZeroRange ? Libc.FALLOC_FL_ZERO_RANGE | Libc.FALLOC_FL_KEEP_SIZE : Libc.FALLOC_FL_PUNCH_HOLE | Libc.FALLOC_FL_KEEP_SIZE;

    /// <summary>Releases the slot, then completes the bio; exceptions from the callback are contained.</summary>
    protected void Finish(FileRequest r)
    {
        Bio bio = r.Bio!;
        BlockStatus status = r.Status;
        r.Bio = null;
        Release(r);
        t_completionDepth++;
        try { bio.Complete(status); }
        catch (Exception e)
        {
            // The bio itself is complete (EndIo runs last); only the submitter's callback failed.
            Interlocked.Increment(ref CallbackFaults);
            LastCallbackFault = e;
        }
        finally { t_completionDepth--; }
    }

    /// <summary>Ends a request whose step machine itself failed unexpectedly (a bug): IoError, exactly once.</summary>
    protected void FinishFaulted(FileRequest r, Exception e)
    {
        LastCallbackFault = e;
        Interlocked.Increment(ref CallbackFaults);
        if (r.Bio is null) return;
        r.Status = BlockStatus.IoError;
        Finish(r);
    }

    /// <summary>
    /// Stops taking bios (later ones complete with IoError, blocked submitters wake up and fail theirs),
    /// waits until every accepted bio completed, then releases the engine. Called once.
    /// </summary>
    public void Dispose()
    {
        lock (_slotLock)
        {
            if (_closing) return;
            _closing = true;
            Monitor.PulseAll(_slotLock);
        }
        if (CanWaitForDrain) WaitForDrain();
        Shutdown();
    }

    /// <summary>
    /// Blocks until no slot is in use (after shutdown began, none is taken any more). Requests the
    /// calling thread polls for can only finish in its own poll, so it polls them meanwhile.
    /// </summary>
    protected void WaitForDrain()
    {
        while (true)
        {
            if (BlockThread.Current.FindPollQueue(this) is PollQueue { InFlight: > 0 } own)
            {
                own.Poll(wait: true);
                continue;
            }
            lock (_slotLock)
            {
                if (_inFlight == 0) return;
                Monitor.Wait(_slotLock);
            }
        }
    }

    /// <summary>False when the caller is the completion context that must run to drain (io_uring's own thread).</summary>
    protected virtual bool CanWaitForDrain => true;

    /// <summary>Engine-specific teardown after <see cref="Dispose"/> (the io_uring engine stops its thread here).</summary>
    protected virtual void Shutdown() => ReleaseResources();

    /// <summary>Frees the slots' memory and closes the fd; idempotent. No request may be in flight.</summary>
    protected virtual void ReleaseResources()
    {
        lock (_resourceLock)
        {
            if (_released) return;
            _released = true;
            FreeNative();
            _fdHandle.Dispose();
        }
    }

    private void FreeNative()
    {
        foreach (FileRequest? r in Requests)
        {
            if (r is null || r.Iov == null) continue;
            NativeMemory.AlignedFree(r.Iov);
            r.Iov = null;
        }
        if (_zeros != null) { NativeMemory.AlignedFree(_zeros); _zeros = null; }
    }

    private bool Fail(FileRequest r, long res)
    {
        LastErrno = res < 0 ? (int)-res : 0;
        r.Status = BlockStatus.IoError;
        return true;
    }

    private static void ConsumeIov(FileRequest r, long n)
    {
        iovec* iov = r.Iov;
        int i = r.IovIndex;
        while (n > 0)
        {
            ulong len = iov[i].iov_len;
            if ((ulong)n < len)
            {
                iov[i].iov_base = (byte*)iov[i].iov_base + n;
                iov[i].iov_len = (nuint)(len - (ulong)n);
                break;
            }
            n -= (long)len;
            i++;
        }
        r.IovIndex = i;
    }

    private bool Prepare(FileRequest r, Bio bio)
    {
        r.Bio = bio;
        r.Op = bio.Op;
        r.Offset = bio.Sector << Bio.SectorShift;
        r.Remaining = bio.Size;
        r.Postflush = false;
        r.Dsync = false;
        r.NoUnmap = (bio.Flags & BioFlags.NoUnmap) != 0;
        r.Status = BlockStatus.Ok;
        bool fua = (bio.Flags & BioFlags.Fua) != 0;
        switch (bio.Op)
        {
            case BioOp.Flush:
                r.Step = FileStep.Preflush;
                return true;
            case BioOp.Read:
                r.MainStep = FileStep.Read;
                if (!BuildIov(r, bio)) return false;
                break;
            case BioOp.Write:
                r.MainStep = FileStep.Write;
                r.Dsync = fua; // FUA rides on the write itself as RWF_DSYNC
                if (!BuildIov(r, bio)) return false;
                break;
            case BioOp.Discard:
                r.MainStep = Volatile.Read(ref _noPunch) != 0 ? FileStep.WriteZeros : FileStep.PunchHole;
                r.Postflush = fua;
                break;
            case BioOp.WriteZeroes:
                r.MainStep = Volatile.Read(ref _noZeroRange) == 0 ? FileStep.ZeroRange
                    : !r.NoUnmap && Volatile.Read(ref _noPunch) == 0 ? FileStep.PunchHole
                    : FileStep.WriteZeros;
                r.Postflush = fua;
                break;
        }
        r.Step = (bio.Flags & BioFlags.Preflush) != 0 ? FileStep.Preflush : r.MainStep;
        return true;
    }

    private bool BuildIov(FileRequest r, Bio bio)
    {
        r.IovIndex = 0;
        r.IovCount = BioIovecs.Fill(_space, bio, r.Iov, MaxIov);
        return r.IovCount > 0;
    }

    private FileRequest? Acquire(FilePollQueue? queue, out BlockStatus refusal)
    {
        while (true)
        {
            lock (_slotLock)
            {
                if (_closing) { refusal = BlockStatus.IoError; return null; }
                if (_freeCount > 0)
                {
                    _inFlight++;
                    refusal = BlockStatus.Ok;
                    return Requests[_free[--_freeCount]];
                }
                // Blocking inside a completion could wait for the very thread that frees slots.
                if (InCompletion) { refusal = BlockStatus.Busy; return null; }
                // The slots may all be this thread's own polled requests, which nobody else
                // finishes: reap them (below, outside the lock) instead of waiting.
                if (queue is not { InFlightCount: > 0 })
                {
                    _waiters++;
                    Monitor.Wait(_slotLock);
                    _waiters--;
                    continue;
                }
            }
            queue.Poll(wait: true);
        }
    }

    private void Release(FileRequest r)
    {
        if (r.Queue is { } queue)
        {
            // Polled requests finish on their owning thread, the only one that counts them.
            queue.InFlightCount--;
            r.Queue = null;
        }
        bool drained;
        lock (_slotLock)
        {
            _free[_freeCount++] = r.Index;
            _inFlight--;
            drained = _closing && _inFlight == 0;
            if (_closing) Monitor.PulseAll(_slotLock);
            else if (_waiters > 0) Monitor.Pulse(_slotLock);
        }
        if (drained) OnDrained();
    }
}
