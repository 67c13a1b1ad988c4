using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Threading.Tasks.Sources;
using PfnBlock.Memory;

namespace PfnBlock.Block;

/// <summary>
/// A block I/O request: an operation on a sector range whose data lives in frames named by pfn
/// (the kernel's <c>struct bio</c>). Bios are pooled; a bio is owned by its submitter until it
/// is submitted, then by the device until it completes, then by the completion callback.
/// </summary>
/// <remarks>
/// <para>Vectors are immutable once submitted; <see cref="Iter"/> is the cursor. Clones and splits
/// share the vector array of their source, so the source must outlive them (chaining ensures it).</para>
/// <para>Completion happens exactly once per submission through <see cref="Complete"/>, also on
/// failure; the callback <see cref="EndIo"/> or an awaiting <see cref="ValueTask{TResult}"/> observes
/// it. A callback should be a cached delegate so that completing costs no allocation.</para>
/// <para>Stacking: every device a bio passes through pushes a completion frame that saves the
/// bio's cursor and flags as that device saw them. <see cref="Complete"/> unwinds the frames in a
/// loop (the kernel's <c>bio_endio</c>): each device accounts the I/O in its own statistics and
/// sees its own view of the bio again, end_io hooks of stacked targets run, and a
/// <see cref="BlockStatus.Busy"/> completion is requeued by the device that returned it instead of
/// reaching the submitter. Chained parents are completed in the same loop, never recursively.</para>
/// </remarks>
public sealed class Bio : IValueTaskSource<BlockStatus>
{
    /// <summary>log2 of the sector size the bio addresses in (always 512 bytes, as in Linux).</summary>
    public const int SectorShift = 9;
    /// <summary>The sector size in bytes.</summary>
    public const int SectorSize = 1 << SectorShift;
    /// <summary>Most vectors one bio holds (BIO_MAX_VECS).</summary>
    public const int MaxVecs = 256;
    /// <summary>Completion frames a bio has room for before its frame array grows (once; pooled bios keep it).</summary>
    private const int InitialFrames = 4;

    private readonly BioVec[] _ownVecs;
    private BioVec[] _vecs;
    private int _vecCount;
    private Bio? _parent;
    private int _remaining;
    private int _status;
    private BioPool? _pool;
    private ManualResetValueTaskSourceCore<BlockStatus> _waiter;
    private bool _awaited;
    private BioFrame[] _frames = new BioFrame[InitialFrames];
    private int _depth;
    private object? _context;

    /// <summary>
    /// A driver's note on a bio it answered Busy, kept until the bio comes back to the same driver
    /// from the requeue list (a discard keeping its pin fence up); 0 when none. Cleared by <see cref="Init"/>.
    /// </summary>
    internal long DriverCookie;

    /// <summary>Link in a per-thread dispatch queue or a device's requeue list (never both).</summary>
    internal Bio? NextQueued;
    /// <summary>The device a queued bio is to be dispatched to.</summary>
    internal BlockDevice? QueuedFor;

    /// <summary>Creates an unpooled bio with room for <paramref name="maxVecs"/> vectors.</summary>
    public Bio(int maxVecs = MaxVecs)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(maxVecs);
        _ownVecs = new BioVec[maxVecs];
        _vecs = _ownVecs;
        _remaining = 1;
    }

    /// <summary>What the bio asks the device to do; set by <see cref="Init"/>.</summary>
    public BioOp Op { get; set; }
    /// <summary>Modifiers (FUA, PREFLUSH, NO_UNMAP). A device may strip the ones it has no use for; each stacked device sees its own value again at completion.</summary>
    public BioFlags Flags { get; set; }
    /// <summary>The cursor: start sector, bytes left, position in the vectors. Stacked targets remap it in place.</summary>
    public BvecIter Iter;
    /// <summary>Called once when the bio completes (unless it is being awaited or is chained to a parent).</summary>
    public Action<Bio>? EndIo { get; set; }
    /// <summary>Submitter-private state for <see cref="EndIo"/>; cleared by <see cref="Init"/>.</summary>
    public object? Private { get; set; }
    /// <summary>Submitter-private number for <see cref="EndIo"/> (e.g. a slot index); cleared by <see cref="Init"/>.</summary>
    public long Tag { get; set; }
    /// <summary>
    /// Which of a target's flush bios this is (the kernel's <c>dm_bio_get_target_bio_nr</c>): a flush
    /// sent to a table goes to every target once per lower device the target declares; 0 otherwise.
    /// </summary>
    public int TargetBioNumber { get; internal set; }

    /// <summary>
    /// The owner's per-I/O state (the kernel's bioset front_pad, SPDK's driver_ctx): made once by
    /// the <see cref="BioPool"/> the bio came from and kept for the bio's whole life, so per-I/O
    /// state costs no allocation and no side array. Null for bios not made by such a pool.
    /// </summary>
    public object? Context => _context;

    /// <summary>The pool-made context as <typeparamref name="T"/> (no type check in release builds: the pool decides the type).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public T ContextAs<T>() where T : class
    {
        Debug.Assert(_context is T, $"bio context is {_context?.GetType().Name ?? "null"}, not {typeof(T).Name}");
        return Unsafe.As<T>(_context!);
    }

    /// <summary>The completion status; the first error reported wins.</summary>
    public BlockStatus Status => (BlockStatus)Volatile.Read(ref _status);

    /// <summary>First sector (512-byte units) as the current device sees it.</summary>
    public long Sector => Iter.Sector;
    /// <summary>Bytes the bio still covers (the data length for reads and writes, the range length for discard and write-zeroes).</summary>
    public uint Size => Iter.Size;
    /// <summary>Number of vectors, including ones the cursor has passed.</summary>
    public int VecCount => _vecCount;
    /// <summary>The vectors (all of them, including ones the cursor has passed).</summary>
    public ReadOnlySpan<BioVec> Vecs => new(_vecs, 0, _vecCount);
    /// <summary>How many vectors <see cref="AddVec"/> can still reach (0 extra for clones and splits, which share vectors).</summary>
    public int MaxVecCount => _vecs == _ownVecs ? _ownVecs.Length : _vecCount;
    /// <summary>How many devices and end_io hooks the bio is passing through now (completion frames pushed).</summary>
    public int Depth => _depth;

    /// <summary>Prepares the bio for a new request.</summary>
    public Bio Init(BioOp op, long sector, BioFlags flags = BioFlags.None)
    {
        Debug.Assert(_parent is null && _depth == 0, "re-initialising a bio in flight");
        Op = op;
        Flags = flags;
        Iter = new BvecIter { Sector = sector };
        _vecs = _ownVecs;
        _vecCount = 0;
        _status = 0;
        _remaining = 1;
        EndIo = null;
        Private = null;
        Tag = 0;
        TargetBioNumber = 0;
        DriverCookie = 0;
        _startHint = 0;
        CompletionTime = 0;
        return this;
    }

    /// <summary>Appends a vector and grows the bio by its length (<c>bio_add_page</c>).</summary>
    /// <exception cref="InvalidOperationException">The bio is full or shares another bio's vectors.</exception>
    public Bio AddVec(Pfn pfn, uint offset, uint length)
    {
        if (_vecs != _ownVecs) throw new InvalidOperationException("cannot add vectors to a clone or split");
        if (_vecCount == _ownVecs.Length) throw new InvalidOperationException($"bio is full ({_ownVecs.Length} vectors)");
        if (length == 0) throw new ArgumentOutOfRangeException(nameof(length), "empty vector");
        if ((ulong)Iter.Size + length > uint.MaxValue) throw new ArgumentOutOfRangeException(nameof(length), "bio larger than 4 GiB");
        _vecs[_vecCount++] = new BioVec(pfn, offset, length);
        Iter.Size += length;
        return this;
    }

    /// <summary>Enumerates the segments from the cursor on, without moving it.</summary>
    public SegmentEnumerator Segments => new(new ReadOnlySpan<BioVec>(_vecs, 0, _vecCount), Iter);

    /// <summary>Moves the cursor forward (partial completion, or after a split).</summary>
    public void Advance(uint bytes) => Iter.Advance(new ReadOnlySpan<BioVec>(_vecs, 0, _vecCount), bytes);

    /// <summary>
    /// A bio that shares this bio's vectors and copies its cursor, op and flags (<c>bio_alloc_clone</c>).
    /// The clone comes from <paramref name="pool"/> (with that pool's <see cref="Context"/>) and returns
    /// there when it completes chained, or on <see cref="Release"/>. The clone's time starts when
    /// this bio reached the level that clones it, not at the clone's own first device: a fan-out
    /// (a mirror's legs) then reads the clock once per request, not once per leg.
    /// </summary>
    public Bio Clone(BioPool? pool = null)
    {
        // Init resets the completion state (remaining count, status, callback) a pooled bio keeps from its last use.
        // DeferFence binds the one who set it to fence: a clone's completion goes to someone else.
        Bio c = (pool ?? BioPool.Shared).Rent(Op, Iter.Sector, Flags & ~BioFlags.DeferFence);
        c._vecs = _vecs;
        c._vecCount = _vecCount;
        c.Iter = Iter;
        c._startHint = LevelStart;
        return c;
    }

    /// <summary>
    /// A bio from <paramref name="pool"/> with this bio's op and flags, at <paramref name="sector"/>,
    /// with no vectors yet: its own, to be filled with <see cref="AddVec"/> from parts of this bio's
    /// (a striped target gathers the chunks one stripe holds into one bio). Like a clone, its time
    /// starts when this bio reached the level that derives it, and it does not inherit
    /// <see cref="BioFlags.DeferFence"/>.
    /// </summary>
    public Bio Derive(long sector, BioPool? pool = null)
    {
        Bio d = (pool ?? BioPool.Shared).Rent(Op, sector, Flags & ~BioFlags.DeferFence);
        d._startHint = LevelStart;
        return d;
    }

    /// <summary>
    /// Splits off the first <paramref name="sectors"/> sectors into a new bio sharing the vectors
    /// (<c>bio_split</c>); this bio then covers the rest. Only the split keeps PREFLUSH (it must
    /// precede all the data); both keep FUA, so each part is durable when it completes.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">The split point is not strictly inside the bio.</exception>
    public Bio Split(int sectors, BioPool? pool = null)
    {
        // In 64 bits: 2^23 sectors or more would wrap a 32-bit byte count to a small, "valid" split point.
        if (sectors <= 0 || (ulong)sectors << SectorShift >= Iter.Size)
            throw new ArgumentOutOfRangeException(nameof(sectors), sectors, $"split point must lie inside the bio ({Iter.Size >> SectorShift} sectors)");
        uint bytes = (uint)sectors << SectorShift;
        Bio split = Clone(pool);
        split.Iter.Size = bytes;
        // Discard and write-zeroes carry no vectors: only the range moves.
        if (_vecCount > 0) Advance(bytes);
        else { Iter.Size -= bytes; Iter.Sector += sectors; }
        // A preflush must happen before any of the data, so only the first part carries it.
        Flags &= ~BioFlags.Preflush;
        return split;
    }

    /// <summary>
    /// Makes <paramref name="parent"/> wait for this bio (<c>bio_chain</c>): the parent completes
    /// only after this bio and its own submission completed; the first error wins. A chained bio
    /// that came from a pool goes back to it once it has signalled its parent. A chained bio has
    /// no <see cref="EndIo"/>; a stacked target that needs to see its completion pushes an
    /// end_io hook (<see cref="PushEndIo"/>) instead.
    /// </summary>
    public void Chain(Bio parent)
    {
        if (_parent is not null) throw new InvalidOperationException("bio is already chained");
        if (EndIo is not null) throw new InvalidOperationException("a chained bio completes into its parent; it cannot also have EndIo");
        Interlocked.Increment(ref parent._remaining);
        _parent = parent;
    }

    /// <summary>
    /// Asks for <paramref name="hook"/> to see this bio's completion before whoever submitted it
    /// to the hook's owner does: the stacked target's end_io (mirror read retry, RAID
    /// reconstruction, cache fill). The hook sees the cursor and flags as they are now.
    /// </summary>
    public void PushEndIo(IBioEndIo hook)
    {
        ArgumentNullException.ThrowIfNull(hook);
        Push(hook, LevelStart, isDevice: false);
    }

    /// <summary>When the bio reached the level it is at now (0 before its first device): what bios cloned or derived from it there start from.</summary>
    private long LevelStart => _depth > 0 ? _frames[_depth - 1].Start : 0;

    /// <summary>The start time a clone takes from its parent's level when it was cloned, or its submitter gave (0: read the clock at its first device).</summary>
    private long _startHint;

    /// <summary>
    /// Gives the bio the <see cref="Stopwatch"/> timestamp its submitter took just before submitting
    /// it, so that the first device starts its accounting there instead of reading the clock again
    /// (as the kernel caches the time in a plug, <c>blk_time_get_ns</c>). Set after
    /// <see cref="Init"/>, which clears it.
    /// </summary>
    public void SetStartTime(long timestamp) => _startHint = timestamp;

    /// <summary>
    /// When the bio's last device accounted its completion (a <see cref="Stopwatch"/> timestamp),
    /// readable from <see cref="EndIo"/>: a submitter that times its requests can use it instead of
    /// reading the clock again. 0 when no device accounted it (the submitter then reads the clock).
    /// </summary>
    public long CompletionTime { get; private set; }

    /// <summary>Pushes the completion frame of <paramref name="device"/>, which starts accounting the bio now.</summary>
    /// <returns>The bio's start time at this level (Stopwatch ticks).</returns>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal long PushDevice(BlockDevice device)
    {
        // One clock read per bio, not per level: the levels of a stack start within nanoseconds of each other.
        long start = _depth > 0 ? _frames[_depth - 1].Start : _startHint;
        if (start == 0) start = Stopwatch.GetTimestamp();
        Push(device, start, isDevice: true);
        return start;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void Push(object owner, long start, bool isDevice)
    {
        if (_depth == _frames.Length) Array.Resize(ref _frames, _depth * 2);
        ref BioFrame f = ref _frames[_depth++];
        f.Owner = owner;
        f.IsDevice = isDevice;
        f.Iter = Iter;
        f.Flags = Flags;
        f.Start = start;
    }

    /// <summary>Removes the top frame without completing anything (the device requeues the bio from its submit path).</summary>
    internal void PopFrame(out long start)
    {
        ref BioFrame f = ref _frames[--_depth];
        Iter = f.Iter;
        Flags = f.Flags;
        start = f.Start;
    }

    /// <summary>Readies a bio that completed (or was requeued) for another submission: a fresh reference and status.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal void PrepareSubmit()
    {
        if (_remaining == 0)
        {
            _remaining = 1;
            _status = 0;
        }
    }

    /// <summary>
    /// Ends the bio with <paramref name="status"/> (<c>bio_endio</c>). Called by the device exactly once
    /// per submission. Unwinds the completion frames of every stacked device and hook, then completes
    /// a chained parent in the same loop, and finally tells the submitter.
    /// </summary>
    public void Complete(BlockStatus status) => CompleteAt(status, 0);

    /// <summary>
    /// <see cref="Complete"/> with the completion time already read (<paramref name="now"/>,
    /// Stopwatch ticks; 0: read it here): a device completing a batch reads the clock once for all of
    /// it, as the kernel's plug caches the time.
    /// </summary>
    internal void CompleteAt(BlockStatus status, long now)
    {
        Bio bio = this;
        BlockThread? thread = null;
        while (true)
        {
            if (status != BlockStatus.Ok) Interlocked.CompareExchange(ref bio._status, (int)status, 0);
            if (!bio.DropReference()) return;

            while (bio._depth > 0)
            {
                ref BioFrame f = ref bio._frames[--bio._depth];
                // The owner stays in the unwound frame (overwritten by the next push): clearing it
                // would cost a GC write barrier per level, and a stale reference only keeps a device
                // object (not its memory, released on dispose) reachable a little longer.
                object owner = f.Owner!;
                // Most levels leave the cursor and flags as they found them: compare (loads) rather
                // than copy back (stores), which after a pmem write's store fence are the costlier.
                if (bio.Iter.Sector != f.Iter.Sector || bio.Iter.Size != f.Iter.Size || bio.Iter.Index != f.Iter.Index || bio.Iter.BvecDone != f.Iter.BvecDone)
                    bio.Iter = f.Iter;
                if (bio.Flags != f.Flags) bio.Flags = f.Flags;
                if (f.IsDevice)
                {
                    BlockDevice device = Unsafe.As<BlockDevice>(owner);
                    if (bio._status == (int)BlockStatus.Busy) { device.Requeue(bio); return; }
                    if (now == 0) now = Stopwatch.GetTimestamp();
                    thread ??= BlockThread.Current;
                    device.EndAccounting(bio, now, f.Start, thread);
                }
                else
                {
                    var st = (BlockStatus)bio._status;
                    if (Unsafe.As<IBioEndIo>(owner).EndIo(bio, ref st) == EndIoResult.Incomplete) return;
                    bio._status = (int)st;
                }
            }

            Bio? parent = bio._parent;
            if (parent is not null)
            {
                // Walk up the chain here instead of recursing (bio_endio's "goto again").
                bio._parent = null;
                status = bio.Status;
                bio.ReturnToPool();
                bio = parent;
                continue;
            }
            if (bio._awaited)
            {
                bio._awaited = false;
                // Inline, inside SubmitAndWait on this thread: noted; the waiter reads the status itself.
                if (t_waitingInline == bio) { bio._doneInline = true; return; }
                bio._waiter.SetResult(bio.Status);
                return;
            }
            bio.CompletionTime = now;
            bio.EndIo?.Invoke(bio);
            return;
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private bool DropReference()
    {
        // Unchained bios (the common case) see 1 here and need no locked instruction: whoever
        // else held a count has already dropped it.
        if (Volatile.Read(ref _remaining) == 1) { _remaining = 0; return true; }
        int left = Interlocked.Decrement(ref _remaining);
        if (left > 0) return false;
        if (left < 0) throw new InvalidOperationException("bio completed more than once");
        return true;
    }

    /// <summary>Returns a pooled bio to its pool; does nothing for an unpooled one.</summary>
    public void Release() => ReturnToPool();

    /// <summary>The bio <see cref="SubmitWaitingInline"/> is submitting on this thread.</summary>
    [ThreadStatic] private static Bio? t_waitingInline;
    private bool _doneInline;

    /// <summary>
    /// Submits this bio, armed with <see cref="PrepareAwait"/>, and dispatches it before returning
    /// (nested in a running dispatch, as <see cref="BlockDevice.SubmitNested(Bio)"/>). A completion on
    /// this thread before the submission returns (a memory device's, in its submit) is only noted,
    /// and the method returns true: the awaiter is never signalled, because its signal is a locked
    /// instruction (<c>ManualResetValueTaskSourceCore</c>'s compare-exchange), which would wait for
    /// the non-temporal stores of a pmem write to drain — twice per RAID5 member write pair, on
    /// every synchronous member I/O. False: the bio completes elsewhere; await the task.
    /// </summary>
    internal bool SubmitWaitingInline(IBlockDevice device)
    {
        Bio? outer = t_waitingInline;
        t_waitingInline = this;
        _doneInline = false;
        try
        {
            if (device is BlockDevice bd) bd.SubmitNested(this);
            else device.Submit(this);
        }
        finally { t_waitingInline = outer; }
        return _doneInline;
    }

    /// <summary>Arms the bio so that its completion can be awaited through the returned task.</summary>
    internal ValueTask<BlockStatus> PrepareAwait()
    {
        if (EndIo is not null) throw new InvalidOperationException("an awaited bio cannot also have EndIo");
        _waiter.Reset();
        _awaited = true;
        return new ValueTask<BlockStatus>(this, _waiter.Version);
    }

    internal void SetPool(BioPool pool, object? context)
    {
        _pool = pool;
        _context = context;
    }

    internal BioPool? Pool => _pool;

    private void ReturnToPool()
    {
        if (_pool is null) return;
        Debug.Assert(_depth == 0, "returning a bio that is still inside a device");
        _vecs = _ownVecs;
        _vecCount = 0;
        EndIo = null;
        Private = null;
        _pool.Return(this);
    }

    BlockStatus IValueTaskSource<BlockStatus>.GetResult(short token) => _waiter.GetResult(token);
    ValueTaskSourceStatus IValueTaskSource<BlockStatus>.GetStatus(short token) => _waiter.GetStatus(token);
    void IValueTaskSource<BlockStatus>.OnCompleted(Action<object?> continuation, object? state, short token, ValueTaskSourceOnCompletedFlags flags)
        => _waiter.OnCompleted(continuation, state, token, flags);

    /// <summary>Enumerates segments without moving the bio's cursor (<c>bio_for_each_segment</c>).</summary>
    public ref struct SegmentEnumerator
    {
        private readonly ReadOnlySpan<BioVec> _vecs;
        private BvecIter _iter;
        private BioVec _current;
        private bool _started;

        internal SegmentEnumerator(ReadOnlySpan<BioVec> vecs, BvecIter iter)
        {
            _vecs = vecs;
            _iter = iter;
            _current = default;
            _started = false;
        }

        /// <summary>The segment the enumerator is on: a byte range within one vector, capped at the bytes the bio has left.</summary>
        public readonly BioVec Current => _current;

        /// <summary>Advances to the next segment.</summary>
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public bool MoveNext()
        {
            if (_started) _iter.Advance(_vecs, _current.Length);
            _started = true;
            if (_iter.Size == 0) return false;
            _current = _iter.Current(_vecs);
            return true;
        }

        /// <summary>Returns this enumerator (for foreach).</summary>
        public readonly SegmentEnumerator GetEnumerator() => this;
    }
}

/// <summary>
/// One level of a bio's trip down a stack: the device (or end_io hook) it passed through, the
/// cursor and flags as that level saw them, and when the bio entered the stack.
/// </summary>
internal struct BioFrame
{
    /// <summary>A <see cref="BlockDevice"/> (accounting and requeue) or an <see cref="IBioEndIo"/> hook.</summary>
    public object? Owner;
    /// <summary>The cursor when the level received the bio; restored when the level completes.</summary>
    public BvecIter Iter;
    /// <summary>The flags when the level received the bio.</summary>
    public BioFlags Flags;
    /// <summary>True when <see cref="Owner"/> is a <see cref="BlockDevice"/> (saves a type check per level).</summary>
    public bool IsDevice;
    /// <summary>Stopwatch timestamp at which the bio entered the stack (latency is counted from here).</summary>
    public long Start;
}

/// <summary>What an end_io hook did with a completing bio.</summary>
public enum EndIoResult
{
    /// <summary>Completion goes on to the level above with the (possibly changed) status. Setting the status to <see cref="BlockStatus.Busy"/> requeues the bio at the device above.</summary>
    Done,
    /// <summary>The hook kept the bio (e.g. resubmitted it to another mirror leg); it will complete it again later.</summary>
    Incomplete,
}

/// <summary>
/// A stacked target's completion hook for bios it sent down (the kernel's <c>target_type.end_io</c>):
/// pushed with <see cref="Bio.PushEndIo"/> before the bio is submitted to a lower device.
/// </summary>
public interface IBioEndIo
{
    /// <summary>
    /// Sees the completion of <paramref name="bio"/> (cursor and flags restored to what they were when
    /// the hook was pushed). May change <paramref name="status"/>, or keep the bio and return
    /// <see cref="EndIoResult.Incomplete"/> after resubmitting it (push the hook again first to see
    /// that completion too). Runs on the completing device's thread; must not block.
    /// </summary>
    EndIoResult EndIo(Bio bio, ref BlockStatus status);
}
