using System.Runtime.CompilerServices;
using PfnBlock.Block;
using PfnBlock.Memory;

namespace PfnBlock.Targets.Md;

/// <summary>Something waiting for its bitmap bits to be durable before it writes (an array write).</summary>
internal interface IBitmapWaiter
{
    /// <summary>Link in the bitmap's waiter lists.</summary>
    IBitmapWaiter? NextWaiter { get; set; }
    /// <summary>First region the waiter writes.</summary>
    int FirstRegion { get; }
    /// <summary>Last region the waiter writes.</summary>
    int LastRegion { get; }
    /// <summary>The bits are on media (on every working member): the write may go ahead. Runs on a completing thread; must not block.</summary>
    void BitsDurable();
}

/// <summary>What <see cref="WriteIntentBitmap.StartWrite"/> found.</summary>
internal enum WriteIntent
{
    /// <summary>The regions' bits are durable: write now.</summary>
    Ready,
    /// <summary>The bits are being made durable: the waiter is called when they are.</summary>
    Waiting,
    /// <summary>A resync or rebuild holds a barrier on a region: try again later (requeue).</summary>
    Blocked,
}

/// <summary>
/// The array's regions (md's bitmap chunks) and its write-intent bitmap: per region, a count of
/// writes in flight, whether its bit is durable on the members, and a barrier a resync or rebuild
/// raises to keep writes out while it copies the region (md's <c>raise_barrier</c>). With an internal
/// bitmap, a write's bits are set and made durable on every working member before the write goes
/// out (md's <c>bitmap_startwrite</c>), and a daemon pass clears the bits of regions that stayed idle
/// for a whole pass; after a crash, only regions whose bit is set need a resync.
/// </summary>
/// <remarks>
/// <para>One 64-bit word per region, padded to its own cache line: bits 0–30 count the writes in
/// flight on the locked way, bit 31 says the region's bit is durable, bit 32 is the barrier, bit 33
/// says the daemon is clearing the bit. A write whose regions are durable and unflagged counts
/// itself in its thread's own counters with plain stores (see <see cref="StartWrite"/>); any other
/// takes one interlocked increment to start and one decrement to end. The daemon clears a bit
/// only after flagging the region, a process-wide barrier, a zero sum of the threads' counters and
/// a compare-and-swap from "durable, clearing, nothing in flight" to 0, so a write that saw
/// "durable" can never have its bit cleared under it.</para>
/// <para>Bitmap blocks are written from a DRAM shadow of the on-media bitmap, at most one flush at a
/// time: waiters that arrive during a flush wait for the next one, which then includes their bits.
/// Flush bios carry FUA, so a completed flush is durable.</para>
/// </remarks>
internal sealed unsafe class WriteIntentBitmap : IDisposable
{
    private const long PendingMask = (1L << 31) - 1;
    private const long Durable = 1L << 31;
    private const long Barrier = 1L << 32;
    /// <summary>The daemon is deciding whether to clear the region's bit: writers take the locked way meanwhile.</summary>
    private const long Clearing = 1L << 33;
    /// <summary>Longs per region slot: one cache line, so writers of neighbouring regions do not share one.</summary>
    private const int Stride = 8;

    private readonly MdArray _array;
    private readonly long[] _state;
    private readonly byte[] _unsynced;
    private readonly Lock _lock = new();
    private readonly DramArena? _arena;
    private readonly byte* _shadow;
    private readonly Pfn _shadowPfn;
    private readonly long _bitmapByte;      // member byte offset of the bitmap superblock
    private readonly int _blockSize;        // bitmap write unit (the members' logical block size)
    private readonly bool[] _dirtyBlocks;
    private readonly BioPool _flushPool;
    private readonly Action<Bio> _flushDone;
    private IBitmapWaiter? _nextHead, _nextTail;   // waiting for the next flush
    private IBitmapWaiter? _flightWaiters;          // released when the flush in flight completes
    private bool _flushing;
    private int _flushOutstanding;
    private long _flushes;
    // Per-thread in-flight counts of the fast write path (see StartWrite), and every thread's array.
    private readonly ThreadLocal<int[]> _mine;
    private readonly Lock _countsLock = new();
    private int[][] _threadCounts = [];
    private readonly List<int> _clearing = [];

    /// <summary>Creates the regions of an array of <paramref name="memberSectors"/> sectors per member.</summary>
    /// <param name="array">The array (members, failures).</param>
    /// <param name="memberSectors">Sectors of each member the array uses.</param>
    /// <param name="regionSectors">Sectors per region: the bitmap chunk, or a fixed size without a bitmap.</param>
    /// <param name="bitmap">The bitmap superblock, or null for an array without one (every region then counts as durable).</param>
    /// <param name="bitmapByte">Member byte offset of the bitmap superblock.</param>
    /// <param name="blockSize">The members' logical block size.</param>
    /// <param name="space">The address space of the members.</param>
    public WriteIntentBitmap(MdArray array, long memberSectors, long regionSectors, MdBitmapSuperblock? bitmap, long bitmapByte, int blockSize, PhysicalAddressSpace space)
    {
        _array = array;
        RegionSectors = regionSectors;
        RegionShift = System.Numerics.BitOperations.Log2((ulong)regionSectors);
        Regions = (int)((memberSectors + regionSectors - 1) / regionSectors);
        _state = new long[Regions * Stride];
        _unsynced = new byte[Regions];
        Bitmap = bitmap;
        _bitmapByte = bitmapByte;
        _blockSize = blockSize;
        _flushPool = new BioPool(new BioPoolOptions { Name = "md-bitmap", MaxVecs = 1 });
        _flushDone = FlushDone;
        _mine = new ThreadLocal<int[]>(NewThreadCounts);
        if (bitmap is null)
        {
            for (int r = 0; r < Regions; r++) _state[r * Stride] = Durable;
            _dirtyBlocks = [];
            return;
        }
        long bytes = (MdBitmapSuperblock.Bytes + (Regions + 7) / 8 + blockSize - 1) / blockSize * blockSize;
        ShadowBytes = bytes;
        _dirtyBlocks = new bool[bytes / blockSize];
        _arena = DramArena.Create(bytes, space, "md-bitmap");
        _shadow = _arena.BaseAddress;
        _shadowPfn = _arena.PfnAt(0);
    }

    /// <summary>Sectors per region (a power of two).</summary>
    public long RegionSectors { get; }
    /// <summary>log2 of <see cref="RegionSectors"/>.</summary>
    public int RegionShift { get; }
    /// <summary>How many regions cover a member.</summary>
    public int Regions { get; }
    /// <summary>The bitmap superblock (null without a bitmap).</summary>
    public MdBitmapSuperblock? Bitmap { get; }
    /// <summary>Bytes of the shadow (superblock and bits, whole blocks).</summary>
    public long ShadowBytes { get; }
    /// <summary>Bitmap flushes written so far.</summary>
    public long Flushes => Interlocked.Read(ref _flushes);

    /// <summary>The shadow of the on-media bitmap area (superblock, then bits): loaded at assembly, written by flushes.</summary>
    public Span<byte> Shadow => _arena is null ? [] : new Span<byte>(_shadow, (int)ShadowBytes);

    /// <summary>The region holding member sector <paramref name="sector"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public int RegionOf(long sector) => (int)(sector >> RegionShift);

    // ---- the write path ------------------------------------------------------------------------------

    /// <summary>
    /// Counts a write of regions <paramref name="first"/>..<paramref name="last"/> in flight and
    /// makes sure their bits are durable; pair every result but <see cref="WriteIntent.Blocked"/> with
    /// <see cref="EndWrite"/>, passing back <paramref name="perThread"/>.
    /// </summary>
    /// <remarks>
    /// The common case — every region durable, no barrier, no daemon clearing it — counts the write
    /// in this thread's own counters with plain stores and no locked instruction: a locked
    /// instruction would wait for the non-temporal copies of the previous write to reach memory,
    /// which costs a pmem mirror a third of its write rate (docs/BENCHMARKS.md §9). The rare side
    /// (<see cref="ClearIdle"/>, <see cref="RaiseBarrier"/>) pays for the ordering instead: it flags
    /// the region, runs a process-wide memory barrier (<c>membarrier</c>), and then sums every
    /// thread's counter. A writer whose increment came before the barrier is in that sum; one whose
    /// increment came after sees the flag, takes its increment back and goes the locked way.
    /// </remarks>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public WriteIntent StartWrite(int first, int last, IBitmapWaiter waiter, out bool perThread)
    {
        int[] mine = _mine.Value!;
        for (int r = first; r <= last; r++) Volatile.Write(ref mine[r], mine[r] + 1);
        bool fast = true;
        for (int r = first; r <= last && fast; r++)
            fast = (Volatile.Read(ref _state[r * Stride]) & (Durable | Barrier | Clearing)) == Durable;
        if (fast)
        {
            for (int r = first; r <= last; r++) Touch(r);
            perThread = true;
            return WriteIntent.Ready;
        }
        for (int r = first; r <= last; r++) Volatile.Write(ref mine[r], mine[r] - 1);
        perThread = false;
        bool allDurable = true;
        for (int r = first; r <= last; r++)
        {
            ref long s = ref _state[r * Stride];
            long v = Interlocked.Increment(ref s);
            if ((v & Barrier) != 0)
            {
                for (int u = first; u <= r; u++) Interlocked.Decrement(ref _state[u * Stride]);
                return WriteIntent.Blocked;
            }
            if ((v & Durable) == 0) allDurable = false;
            Touch(r);
        }
        return allDurable ? WriteIntent.Ready : SetBits(waiter);
    }

    /// <summary>Written this pass: the daemon leaves the region's bit for one more pass (md's two-pass clearing).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void Touch(int region)
    {
        ref long hot = ref _state[region * Stride + 1];
        if (hot == 0) hot = 1;
    }

    /// <summary>Ends a write started with <see cref="StartWrite"/> (on any thread), counted as <paramref name="perThread"/> says.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void EndWrite(int first, int last, bool perThread)
    {
        if (perThread)
        {
            // This thread's counter may go negative: the write may have started on another thread; only the sum means anything.
            int[] mine = _mine.Value!;
            for (int r = first; r <= last; r++) Volatile.Write(ref mine[r], mine[r] - 1);
            return;
        }
        for (int r = first; r <= last; r++) Interlocked.Decrement(ref _state[r * Stride]);
    }

    /// <summary>Writes of <paramref name="region"/> counted in threads' own counters (exact once the region is flagged and the process-wide barrier has run).</summary>
    private int ThreadCount(int region)
    {
        int n = 0;
        foreach (int[] counts in Volatile.Read(ref _threadCounts)) n += Volatile.Read(ref counts[region]);
        return n;
    }

    /// <summary>A new thread's counters, registered so the rare side can sum them.</summary>
    private int[] NewThreadCounts()
    {
        var counts = new int[Regions];
        lock (_countsLock) _threadCounts = [.. _threadCounts, counts];
        return counts;
    }

    private WriteIntent SetBits(IBitmapWaiter waiter)
    {
        lock (_lock)
        {
            for (int r = waiter.FirstRegion; r <= waiter.LastRegion; r++)
                if ((Volatile.Read(ref _state[r * Stride]) & Durable) == 0) SetShadowBit(r, true);
            waiter.NextWaiter = null;
            if (_nextTail is null) _nextHead = waiter; else _nextTail.NextWaiter = waiter;
            _nextTail = waiter;
            if (_flushing) return WriteIntent.Waiting;
            _flushing = true;
        }
        StartFlush();
        return WriteIntent.Waiting;
    }

    private void SetShadowBit(int region, bool set)
    {
        long bit = MdBitmapSuperblock.Bytes * 8L + region;
        byte* b = _shadow + (bit >> 3);
        byte mask = (byte)(1 << (int)(bit & 7));
        if (set) *b |= mask; else *b &= (byte)~mask;
        _dirtyBlocks[(bit >> 3) / _blockSize] = true;
    }

    /// <summary>Writes the dirty shadow blocks to every working member; the caller set <see cref="_flushing"/>.</summary>
    private void StartFlush()
    {
        // Collect, under the lock, what this flush covers: the dirty blocks and the waiters so far.
        Span<int> runs = stackalloc int[64];
        int count = 0;
        lock (_lock)
        {
            _flightWaiters = _nextHead;
            _nextHead = _nextTail = null;
            for (int i = 0; i < _dirtyBlocks.Length && count < runs.Length; i++)
            {
                if (!_dirtyBlocks[i]) continue;
                _dirtyBlocks[i] = false;
                runs[count++] = i;
            }
            // Blocks beyond 64 stay dirty for the next flush, which FlushDone starts.
        }
        MdMember[] members = _array.WritableMembers();
        int bios = count * members.Length;
        if (bios == 0)
        {
            Volatile.Write(ref _flushOutstanding, 1);
            FlushDone(null);
            return;
        }
        Volatile.Write(ref _flushOutstanding, bios);
        foreach (MdMember m in members)
        {
            for (int k = 0; k < count; k++)
            {
                long offset = (long)runs[k] * _blockSize;
                Bio bio = _flushPool.Rent(BioOp.Write, (_bitmapByte + offset) >> Bio.SectorShift, BioFlags.Fua);
                bio.AddVec(_shadowPfn, (uint)offset, (uint)_blockSize);
                bio.EndIo = _flushDone;
                bio.Private = m;
                m.Device!.Submit(bio);
            }
        }
    }

    private void FlushDone(Bio? bio)
    {
        if (bio is not null)
        {
            if (bio.Status != BlockStatus.Ok && bio.Status != BlockStatus.Busy) _array.MemberFailed((MdMember)bio.Private!, bio.Status, "bitmap write");
            bio.Release();
        }
        if (Interlocked.Decrement(ref _flushOutstanding) != 0) return;
        Interlocked.Increment(ref _flushes);
        IBitmapWaiter? released;
        bool again;
        lock (_lock)
        {
            released = _flightWaiters;
            _flightWaiters = null;
            for (IBitmapWaiter? w = released; w is not null; w = w.NextWaiter)
                for (int r = w.FirstRegion; r <= w.LastRegion; r++) Interlocked.Or(ref _state[r * Stride], Durable);
            again = _nextHead is not null || Array.IndexOf(_dirtyBlocks, true) >= 0;
            _flushing = again;
        }
        if (again) StartFlush();
        while (released is not null)
        {
            IBitmapWaiter next = released.NextWaiter!;
            released.NextWaiter = null;
            released.BitsDurable();
            released = next;
        }
    }

    // ---- the daemon, resync and barriers (worker thread) ------------------------------------------

    /// <summary>
    /// One daemon pass: clears the bits of regions with nothing in flight that were not written since
    /// the last pass, and writes the changed blocks. Returns how many bits it cleared.
    /// </summary>
    public int ClearIdle()
    {
        if (Bitmap is null) return 0;
        int cleared = 0;
        lock (_lock)
        {
            _clearing.Clear();
            for (int r = 0; r < Regions; r++)
            {
                ref long hot = ref _state[r * Stride + 1];
                if (Volatile.Read(ref hot) != 0) { Volatile.Write(ref hot, 0); continue; }
                if (_unsynced[r] != 0) continue;
                // Durable, nothing in flight on the locked way, no barrier: flag it, then look at the threads' counts.
                if (Interlocked.CompareExchange(ref _state[r * Stride], Durable | Clearing, Durable) != Durable) continue;
                _clearing.Add(r);
            }
            if (_clearing.Count > 0)
            {
                // Every fast writer now either is in the threads' counts or sees the flag (StartWrite).
                Interlocked.MemoryBarrierProcessWide();
                foreach (int r in _clearing)
                {
                    // A writer that came the locked way meanwhile makes the compare-and-swap fail.
                    if (ThreadCount(r) == 0 && Interlocked.CompareExchange(ref _state[r * Stride], 0, Durable | Clearing) == (Durable | Clearing))
                    {
                        SetShadowBit(r, false);
                        cleared++;
                    }
                    else Interlocked.And(ref _state[r * Stride], ~Clearing);
                }
            }
            if (cleared == 0 || _flushing) return cleared;
            _flushing = true;
        }
        StartFlush();
        return cleared;
    }

    public void FlushAndWait(TimeSpan timeout)
    {
        using var done = new ManualResetEventSlim();
        var waiter = new Waiter(done);
        bool start;
        lock (_lock)
        {
            if (_nextTail is null) _nextHead = waiter; else _nextTail.NextWaiter = waiter;
            _nextTail = waiter;
            // A flush in flight starts the next one when it completes; that one releases this waiter.
            start = !_flushing;
            _flushing = true;
        }
        if (start) StartFlush();
        if (!done.Wait(timeout)) throw new IOException("the write-intent bitmap flush did not complete");
    }

    private sealed class Waiter(ManualResetEventSlim done) : IBitmapWaiter
    {
        public IBitmapWaiter? NextWaiter { get; set; }
        public int FirstRegion => 0;
        public int LastRegion => -1;
        public void BitsDurable() => done.Set();
    }

    /// <summary>Sets or clears the bit of every region in the shadow (before a flush: clean shutdown, full resync).</summary>
    public void SetAll(bool set)
    {
        if (Bitmap is null) return;
        lock (_lock)
            for (int r = 0; r < Regions; r++)
            {
                SetShadowBit(r, set);
                if (set) Interlocked.Or(ref _state[r * Stride], Durable);
                else Interlocked.And(ref _state[r * Stride], ~Durable);
            }
    }

    /// <summary>Marks every block of the shadow dirty (the next flush rewrites the whole bitmap, superblock included).</summary>
    public void MarkAllDirty()
    {
        lock (_lock) Array.Fill(_dirtyBlocks, true);
    }

    /// <summary>Loads the bits read from a member into the shadow; regions whose bit is set count as durable.</summary>
    public long Load(ReadOnlySpan<byte> image)
    {
        image[..(int)Math.Min(image.Length, ShadowBytes)].CopyTo(Shadow);
        long set = 0;
        for (int r = 0; r < Regions; r++)
        {
            long bit = MdBitmapSuperblock.Bytes * 8L + r;
            if ((_shadow[bit >> 3] & (1 << (int)(bit & 7))) == 0) continue;
            _state[r * Stride] |= Durable;
            set++;
        }
        return set;
    }

    /// <summary>True when region <paramref name="region"/>'s bit is set in the shadow.</summary>
    public bool IsSet(int region)
    {
        if (Bitmap is null) return false;
        long bit = MdBitmapSuperblock.Bytes * 8L + region;
        return (_shadow[bit >> 3] & (1 << (int)(bit & 7))) != 0;
    }

    /// <summary>Bits set in the shadow.</summary>
    public long DirtyBits
    {
        get
        {
            if (Bitmap is null) return 0;
            lock (_lock) return MdExamine.CountBits(Shadow[MdBitmapSuperblock.Bytes..], Regions);
        }
    }

    /// <summary>Rewrites the bitmap superblock in the shadow (events, state) and marks its block dirty.</summary>
    public void UpdateSuperblock(ulong events, bool cleared)
    {
        if (Bitmap is not { } bm) return;
        lock (_lock)
        {
            bm.Events = events;
            if (cleared) bm.EventsCleared = events;
            bm.Encode(Shadow);
            _dirtyBlocks[0] = true;
        }
    }

    /// <summary>Marks region <paramref name="region"/> as needing a resync (or not): reads of it go to one leg only until it is.</summary>
    public void SetUnsynced(int region, bool unsynced) => Volatile.Write(ref _unsynced[region], (byte)(unsynced ? 1 : 0));

    /// <summary>True while region <paramref name="region"/> awaits its resync.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public bool IsUnsynced(int region) => Volatile.Read(ref _unsynced[region]) != 0;

    /// <summary>Regions awaiting a resync.</summary>
    public int UnsyncedRegions
    {
        get
        {
            int n = 0;
            for (int r = 0; r < Regions; r++) n += Volatile.Read(ref _unsynced[r]);
            return n;
        }
    }

    /// <summary>Raises the barrier of region <paramref name="region"/> and waits until its writes in flight finished (worker thread).</summary>
    public void RaiseBarrier(int region)
    {
        ref long s = ref _state[region * Stride];
        Interlocked.Or(ref s, Barrier);
        // Fast writers after this see the barrier; those before are in the threads' counts (StartWrite).
        Interlocked.MemoryBarrierProcessWide();
        var spin = new SpinWait();
        while ((Volatile.Read(ref s) & PendingMask) != 0 || ThreadCount(region) != 0) spin.SpinOnce(sleep1Threshold: 20);
    }

    public void LowerBarrier(int region) => Interlocked.And(ref _state[region * Stride], ~Barrier);

    /// <summary>Writes in flight in all regions (0 when the array is idle).</summary>
    public long InFlight
    {
        get
        {
            long n = 0;
            for (int r = 0; r < Regions; r++) n += (Volatile.Read(ref _state[r * Stride]) & PendingMask) + ThreadCount(r);
            return n;
        }
    }

    // _mine is left to its finalizer: a write that completes after a stop that gave up waiting still ends through it.
    public void Dispose() => _arena?.Dispose();
}
