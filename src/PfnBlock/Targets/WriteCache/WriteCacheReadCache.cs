using System.Numerics;
using System.Runtime.CompilerServices;
using PfnBlock.Memory;

namespace PfnBlock.Targets.WriteCache;

/// <summary>
/// Read caching of origin data in a write cache (a PfnBlock extension: dm-pcache does it,
/// dm-writecache does not): clean copies of origin blocks kept in log slots that hold no dirty
/// data, indexed in DRAM only. Owned by <see cref="WriteCacheLog"/>, whose two locks it relies on:
/// members named <c>…Unsynchronized</c> run under the lock their summary names.
/// </summary>
/// <remarks>
/// <para><b>Crash safety by construction.</b> A clean copy is data in a free slot and nothing else:
/// no entry line, no superblock word, nothing persisted. The entry line of a free slot holds a
/// sequence number below the tail (or nothing), which recovery ignores; so after a crash or a
/// restart every clean copy is free space again and can never be taken for a write.</para>
/// <para><b>Where.</b> Free slots are the log positions <c>[head, tail + N)</c>. Copies go only into
/// the last <c>W = PCT % · N</c> of them and never within N/8 of the head:
/// <c>[max(head + N/8, tail + N − W), tail + N)</c>, the slots dirty data reaches last. An insert
/// cursor goes round that window (FIFO replacement: it overwrites the oldest copy when it comes
/// round). When the log's head reaches a slot that still holds a copy, the reservation evicts it
/// (one atomic state change under the reservation lock): the dirty path never waits for a read.</para>
/// <para><b>Slot states</b> (one word per slot): 0 none; <see cref="Filling"/> while a read's
/// completion copies origin data in; <see cref="Stolen"/> when a writer reserved the slot during
/// that copy — the writer then waits for the copy to end (a 4 KiB memory copy, never the origin
/// read) before its own data goes in; otherwise a tag, <c>generation · N + slot</c>, unique to that
/// copy. Readers copy out of a slot and read the state again, seqlock-style: a changed tag means
/// the copy was evicted or replaced meanwhile, and the block is looked up again. Data goes in with
/// streaming stores, which a locked instruction need not order: every eviction that may be
/// followed by such stores is followed by an <c>sfence</c> first.</para>
/// <para><b>Writes win.</b> A write or discard drops the copies of its blocks as it records them
/// in the dirty index and stamps the blocks' generation bucket (or, for a range, the range
/// generation). A read miss takes the generation with its lookup; the copy made from the origin's
/// data is published only if no write stamped the block's bucket and no range came since,
/// checked under the index lock that writes record under. A read that raced a write therefore
/// never publishes the older data (a bucket shared with another block only costs a refused insert).</para>
/// </remarks>
internal sealed class WriteCacheReadCache
{
    /// <summary>Slot state while a read completion copies origin data into the slot.</summary>
    public const long Filling = -1;
    /// <summary>Slot state when a writer reserved the slot while it was <see cref="Filling"/>: the filler sets 0 when its copy ends.</summary>
    public const long Stolen = -2;
    /// <summary>What <see cref="WriteCacheLog.Lookup(long, Span{long}, out long)"/> reports for a clean copy: this bit or'ed with the copy's tag.</summary>
    public const long CleanBit = 1L << 61;
    // A discard or write-zeroes longer than this drops every copy instead of looking its blocks up one by one.
    private const long LargeRange = 1024;

    private readonly long _n;
    private readonly long[] _state;     // per slot: 0, Filling, Stolen or a tag
    private readonly long[] _block;     // per slot: origin block + 1 of the copy last published there (0 none)
    private readonly WriteCacheIndex _index; // origin block → tag (entries whose tag no longer matches are stale)
    private readonly long[] _bucketGen; // per bucket of origin blocks: the generation of the last write to one of them
    private readonly int _bucketMask;
    private long _generation;           // index lock
    private long _rangeGeneration;      // index lock
    private long _cursor;               // reservation lock: the next log position to fill
    private long _tags;
    private long _count;
    private long _window;               // slots: _n · _percent / 100
    private int _percent;
    private bool _enabled = true;       // index lock
    private bool _claimed;              // reservation lock: a slot was ever claimed (until then no slot can hold a copy)

    /// <summary>Blocks read from clean copies.</summary>
    public long Hits;
    /// <summary>Clean copies published.</summary>
    public long Inserts;
    /// <summary>Clean copies evicted to make room: by a log reservation reaching their slot, or by the insert cursor coming round.</summary>
    public long Evictions;
    /// <summary>Clean copies dropped because their block was written, discarded, or passed through to the origin (or the log was sealed).</summary>
    public long Dropped;
    /// <summary>Inserts refused at publication: a write or discard of the block came after the read's lookup, or the slot was taken meanwhile.</summary>
    public long Refused;

    /// <summary>Creates the read cache of a log of <paramref name="entries"/> slots, clean copies in the last <paramref name="percent"/> % of them.</summary>
    public WriteCacheReadCache(long entries, int percent)
    {
        _n = entries;
        _state = new long[entries];
        _block = new long[entries];
        _index = new WriteCacheIndex(entries);
        int buckets = (int)Math.Min(1 << 16, BitOperations.RoundUpToPowerOf2((ulong)Math.Max(entries, 64)));
        _bucketGen = new long[buckets];
        _bucketMask = buckets - 1;
        Percent = percent;
    }

    /// <summary>The share of the log clean copies may use, in percent (0: no new inserts; copies already made are served until evicted).</summary>
    public int Percent
    {
        get => Volatile.Read(ref _percent);
        set
        {
            Volatile.Write(ref _percent, Math.Clamp(value, 0, 100));
            Volatile.Write(ref _window, _n * _percent / 100);
        }
    }

    /// <summary>True when reads should insert what they miss (a window to put copies in, not sealed).</summary>
    public bool Inserting => Volatile.Read(ref _window) > 0 && Volatile.Read(ref _enabled);

    /// <summary>Clean copies cached now.</summary>
    public long Count => Interlocked.Read(ref _count);

    /// <summary>The generation a read miss takes with its lookup (index lock).</summary>
    public long GenerationUnsynchronized => _generation;

    /// <summary>True while the copy <paramref name="tag"/> is still in its slot (the seqlock check after a copy out).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public bool IsValid(long tag) => Volatile.Read(ref _state[tag % _n]) == tag;

    /// <summary>The tag of <paramref name="block"/>'s clean copy, or 0 (index lock). A stale entry found on the way is removed.</summary>
    public long FindUnsynchronized(long block)
    {
        long tag = _index.Find(block);
        if (tag == 0) return 0;
        if (Volatile.Read(ref _state[tag % _n]) == tag) return tag;
        _index.Remove(block);
        return 0;
    }

    /// <summary>A write of <paramref name="block"/> is being recorded (index lock): stamp its bucket, drop its copy.</summary>
    public void NoteWriteUnsynchronized(long block)
    {
        _bucketGen[Bucket(block)] = ++_generation;
        if (_index.Count != 0) Drop(block);
    }

    /// <summary>
    /// A discard, write-zeroes or pass-through write of <paramref name="count"/> blocks from
    /// <paramref name="block"/> (index lock): reads in flight may not publish, copies in the range go.
    /// </summary>
    public void NoteRangeUnsynchronized(long block, long count)
    {
        _rangeGeneration = ++_generation;
        if (_index.Count == 0) return;
        if (count > LargeRange) DropAllUnsynchronized();
        else for (long b = block; b < block + count; b++) Drop(b);
    }

    /// <summary>Switches inserting on or off (index lock); off drops every copy (the log was sealed: writes now bypass the cache).</summary>
    public void SetEnabledUnsynchronized(bool on)
    {
        _enabled = on;
        if (!on)
        {
            _rangeGeneration = ++_generation;
            DropAllUnsynchronized();
        }
    }

    private void DropAllUnsynchronized()
    {
        for (int slot = 0; slot < _n; slot++)
        {
            long s = Volatile.Read(ref _state[slot]);
            if (s > 0 && Interlocked.CompareExchange(ref _state[slot], 0, s) == s) Forget(ref Dropped);
        }
        _index.Clear();
    }

    private void Drop(long block)
    {
        long tag = _index.Find(block);
        if (tag == 0) return;
        _index.Remove(block);
        if (Interlocked.CompareExchange(ref _state[tag % _n], 0, tag) == tag) Forget(ref Dropped);
    }

    private void Forget(ref long counter)
    {
        Interlocked.Decrement(ref _count);
        Interlocked.Increment(ref counter);
    }

    /// <summary>
    /// The log reserved <c>[seq, seq + count)</c> (reservation lock): evicts the copies in those
    /// slots and marks slots being filled <see cref="Stolen"/>. A writer then calls
    /// <see cref="WaitForFills"/> before its data goes in.
    /// </summary>
    public void EvictUnsynchronized(long seq, int count)
    {
        if (!_claimed) return; // never used: no slot can hold a copy or be filling
        bool evicted = false;
        for (int j = 0; j < count; j++)
        {
            ref long st = ref _state[(seq + j) % _n];
            while (true)
            {
                long s = Volatile.Read(ref st);
                if (s is 0 or Stolen) break;
                if (Interlocked.CompareExchange(ref st, s == Filling ? Stolen : 0, s) != s) continue;
                if (s > 0) Forget(ref Evictions);
                evicted = true;
                break;
            }
        }
        if (evicted) PersistentMemory.Drain();
    }

    /// <summary>Waits until no read completion is still copying into a slot of <c>[seq, seq + count)</c> (the writer's data goes in next).</summary>
    public void WaitForFills(long seq, int count)
    {
        for (int j = 0; j < count; j++)
        {
            ref long st = ref _state[(seq + j) % _n];
            if (Volatile.Read(ref st) != Stolen) continue;
            var spin = new SpinWait();
            while (Volatile.Read(ref st) == Stolen) spin.SpinOnce(-1);
        }
    }

    /// <summary>
    /// Takes up to <paramref name="slots"/>.Length free slots of the window for copies (reservation
    /// lock; the log is not sealed), marking them <see cref="Filling"/>; returns how many.
    /// </summary>
    /// <param name="head">The log's head.</param>
    /// <param name="tail">The log's tail.</param>
    /// <param name="slots">Receives the slot numbers.</param>
    public int ClaimUnsynchronized(long head, long tail, Span<int> slots)
    {
        long hi = tail + _n, lo = Math.Max(head + _n / 8, hi - Volatile.Read(ref _window));
        if (lo >= hi || !Volatile.Read(ref _enabled)) return 0;
        _claimed = true;
        int got = 0;
        bool replaced = false;
        for (long tries = Math.Min(hi - lo, 2L * slots.Length); tries > 0 && got < slots.Length; tries--)
        {
            if (_cursor < lo || _cursor >= hi) _cursor = lo;
            int slot = (int)(_cursor++ % _n);
            long s = Volatile.Read(ref _state[slot]);
            if (s < 0 || Interlocked.CompareExchange(ref _state[slot], Filling, s) != s) continue; // another fill is still copying in
            if (s > 0)
            {
                Forget(ref Evictions);
                replaced = true;
            }
            slots[got++] = slot;
        }
        // A reader of the copy replaced must see the state change before any of the new data.
        if (replaced) PersistentMemory.Drain();
        return got;
    }

    /// <summary>
    /// Publishes the copy of <paramref name="block"/> filled into <paramref name="slot"/> (index
    /// lock; its data is stored and fenced), unless a write or range came after
    /// <paramref name="generation"/>, the cache was switched off, or a writer took the slot.
    /// </summary>
    /// <returns>True when published.</returns>
    public bool PublishUnsynchronized(int slot, long block, long generation)
    {
        // Whatever copy the slot held before is gone: its index entry goes too (if it still names this slot).
        long old = _block[slot];
        if (old != 0)
        {
            long oldTag = _index.Find(old - 1);
            if (oldTag != 0 && oldTag % _n == slot) _index.Remove(old - 1);
            _block[slot] = 0;
        }
        if (!_enabled || _rangeGeneration > generation || _bucketGen[Bucket(block)] > generation)
        {
            Abandon(slot);
            return false;
        }
        long tag = Interlocked.Increment(ref _tags) * _n + slot;
        if (Interlocked.CompareExchange(ref _state[slot], tag, Filling) != Filling)
        {
            Abandon(slot);
            return false;
        }
        _block[slot] = block + 1;
        // A copy of the same block elsewhere (two reads missed it at once) is superseded.
        long previous = _index.Find(block);
        if (previous != 0 && Interlocked.CompareExchange(ref _state[previous % _n], 0, previous) == previous) Forget(ref Evictions);
        _index.Set(block, tag);
        Interlocked.Increment(ref _count);
        Interlocked.Increment(ref Inserts);
        return true;
    }

    /// <summary>Gives a claimed slot back unpublished; a writer waiting on it (<see cref="Stolen"/>) goes on.</summary>
    public void Abandon(int slot)
    {
        Interlocked.Increment(ref Refused);
        if (Interlocked.CompareExchange(ref _state[slot], 0, Filling) != Filling) Volatile.Write(ref _state[slot], 0);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private int Bucket(long block) => (int)WriteCacheEntry.Mix((ulong)block) & _bucketMask;
}
