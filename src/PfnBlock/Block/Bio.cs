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
/// <para>Completion happens exactly once through <see cref="Complete"/>, also on failure; the
/// callback <see cref="EndIo"/> or an awaiting <see cref="ValueTask{TResult}"/> observes it. A
/// callback should be a cached delegate so that completing costs no allocation.</para>
/// </remarks>
public sealed class Bio : IValueTaskSource<BlockStatus>
{
    /// <summary>log2 of the sector size the bio addresses in (always 512 bytes, as in Linux).</summary>
    public const int SectorShift = 9;
    /// <summary>The sector size in bytes.</summary>
    public const int SectorSize = 1 << SectorShift;
    /// <summary>Most vectors one bio holds (BIO_MAX_VECS).</summary>
    public const int MaxVecs = 256;

    private readonly BioVec[] _ownVecs;
    private BioVec[] _vecs;
    private int _vecCount;
    private Bio? _parent;
    private int _remaining;
    private int _status;
    private BioPool? _pool;
    private ManualResetValueTaskSourceCore<BlockStatus> _waiter;
    private bool _awaited;
    internal BlockDevice? AccountingDevice;
    internal long StartTimestamp;

    /// <summary>Creates an unpooled bio with room for <paramref name="maxVecs"/> vectors.</summary>
    public Bio(int maxVecs = MaxVecs)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(maxVecs);
        _ownVecs = new BioVec[maxVecs];
        _vecs = _ownVecs;
        _remaining = 1;
    }

    /// <summary>The operation.</summary>
    public BioOp Op { get; set; }
    /// <summary>Modifiers.</summary>
    public BioFlags Flags { get; set; }
    /// <summary>The cursor: start sector, bytes left, position in the vectors.</summary>
    public BvecIter Iter;
    /// <summary>Called once when the bio completes (unless it is being awaited).</summary>
    public Action<Bio>? EndIo { get; set; }
    /// <summary>Submitter-private state for <see cref="EndIo"/>.</summary>
    public object? Private { get; set; }
    /// <summary>Submitter-private number for <see cref="EndIo"/> (e.g. a slot index).</summary>
    public long Tag { get; set; }

    /// <summary>The completion status; the first error reported wins.</summary>
    public BlockStatus Status => (BlockStatus)Volatile.Read(ref _status);

    /// <summary>First sector (512-byte units).</summary>
    public long Sector => Iter.Sector;
    /// <summary>Bytes the bio still covers.</summary>
    public uint Size => Iter.Size;
    /// <summary>Number of vectors.</summary>
    public int VecCount => _vecCount;
    /// <summary>The vectors (all of them, including ones the cursor has passed).</summary>
    public ReadOnlySpan<BioVec> Vecs => new(_vecs, 0, _vecCount);
    /// <summary>Room for vectors.</summary>
    public int MaxVecCount => _vecs == _ownVecs ? _ownVecs.Length : _vecCount;

    /// <summary>Prepares the bio for a new request.</summary>
    public Bio Init(BioOp op, long sector, BioFlags flags = BioFlags.None)
    {
        Debug.Assert(_parent is null && AccountingDevice is null, "re-initialising a bio in flight");
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
    /// The clone comes from <paramref name="pool"/> and returns there when it completes.
    /// </summary>
    public Bio Clone(BioPool? pool = null)
    {
        // Init resets the completion state (remaining count, status, callback) a pooled bio keeps from its last use.
        Bio c = (pool ?? BioPool.Shared).Rent(Op, Iter.Sector, Flags);
        c._vecs = _vecs;
        c._vecCount = _vecCount;
        c.Iter = Iter;
        return c;
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
        Advance(bytes);
        // A preflush must happen before any of the data, so only the first part carries it.
        Flags &= ~BioFlags.Preflush;
        return split;
    }

    /// <summary>
    /// Makes <paramref name="parent"/> wait for this bio (<c>bio_chain</c>): the parent completes
    /// only after this bio and its own submission completed; the first error wins. A chained bio
    /// that came from a pool goes back to it once it has signalled its parent.
    /// </summary>
    public void Chain(Bio parent)
    {
        if (_parent is not null) throw new InvalidOperationException("bio is already chained");
        if (EndIo is not null) throw new InvalidOperationException("a chained bio completes into its parent; it cannot also have EndIo");
        Interlocked.Increment(ref parent._remaining);
        _parent = parent;
    }

    /// <summary>
    /// Ends the bio with <paramref name="status"/> (<c>bio_endio</c>). Called by the device exactly once
    /// per submission; a parent completes when its last chained child and its own submission have.
    /// </summary>
    public void Complete(BlockStatus status)
    {
        if (status != BlockStatus.Ok) Interlocked.CompareExchange(ref _status, (int)status, 0);
        // Unchained bios (the common case) see 1 here and need no locked instruction: whoever
        // else held a count has already dropped it.
        if (Volatile.Read(ref _remaining) == 1) _remaining = 0;
        else
        {
            int left = Interlocked.Decrement(ref _remaining);
            if (left > 0) return;
            if (left < 0) throw new InvalidOperationException("bio completed more than once");
        }

        AccountingDevice?.EndAccounting(this);
        Bio? parent = _parent;
        if (parent is not null)
        {
            _parent = null;
            BlockStatus mine = Status;
            ReturnToPool();
            parent.Complete(mine);
            return;
        }
        if (_awaited) { _awaited = false; _waiter.SetResult(Status); return; }
        EndIo?.Invoke(this);
    }

    /// <summary>Returns a pooled bio to its pool; does nothing for an unpooled one.</summary>
    public void Release() => ReturnToPool();

    /// <summary>Arms the bio so that its completion can be awaited through the returned task.</summary>
    internal ValueTask<BlockStatus> PrepareAwait()
    {
        if (EndIo is not null) throw new InvalidOperationException("an awaited bio cannot also have EndIo");
        _waiter.Reset();
        _awaited = true;
        return new ValueTask<BlockStatus>(this, _waiter.Version);
    }

    internal void SetPool(BioPool pool) => _pool = pool;

    private void ReturnToPool()
    {
        if (_pool is null) return;
        _vecs = _ownVecs;
        _vecCount = 0;
        EndIo = null;
        Private = null;
        AccountingDevice = null;
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

        /// <summary>The current segment.</summary>
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
