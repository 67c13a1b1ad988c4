using System.Buffers.Binary;
using System.Runtime.CompilerServices;
using PfnBlock.Memory;

namespace PfnBlock.Targets.WriteCache;

/// <summary>
/// Supplies the data of a write, block by block, to <see cref="WriteCacheLog.AppendWrites"/>
/// (a bio's segments, a test's buffer). A struct, so the copy loop is specialised and allocates nothing.
/// </summary>
internal unsafe interface IWriteCacheSource
{
    /// <summary>Copies block <paramref name="index"/> of the write (4096 bytes) into the cache slot at <paramref name="slot"/> with non-temporal stores.</summary>
    void CopyBlock(int index, byte* slot);
}

/// <summary>A discard or write-zeroes logged in the cache and not yet applied to the origin.</summary>
/// <param name="Seq">Its sequence number.</param>
/// <param name="Block">First origin block.</param>
/// <param name="Count">Blocks covered.</param>
internal readonly record struct WriteCachePendingRange(long Seq, long Block, long Count);

/// <summary>Refusal to open or format a cache device for a configuration reason (wrong origin, too small, foreign data): bad input, not damage.</summary>
public sealed class WriteCacheRefusedException(string message) : ArgumentException(message);

/// <summary>
/// The persistent log of a write cache (on the cache device's mapping) and the DRAM state built
/// from it: the circular log's head, tail and epoch, a state word per slot, the index of cached
/// blocks and the pending discard ranges. It knows nothing of bios (the target drives it), so a
/// crash-explorer target could drive the same code.
/// </summary>
/// <remarks>
/// <para><b>Sequence numbers.</b> Every entry has one; its entry and data slot are number
/// <c>seq mod N</c>. Live entries are <c>[tail, head)</c>: <c>tail</c> is the written-back
/// sequence (persisted in the superblock), <c>head</c> the next to hand out. A writer reserves
/// k consecutive numbers at once, so a k-block bio is k consecutive slots (wrapping at N).</para>
/// <para><b>Write ordering</b> (<see cref="AppendWrites"/>): reserve; mark the slots busy; copy the
/// data into the slots with non-temporal stores; store the entries (one non-temporal line each);
/// one <c>sfence</c>; record the blocks in the index; publish each slot's sequence number. Data
/// and entry may reach the media in either order, so such an entry is valid only once a
/// <b>commit</b> (<see cref="Commit"/>: a FLUSH, or an autocommit after <c>autocommit_blocks</c>
/// blocks or <c>autocommit_time</c>) has moved the persistent committed sequence past it, as
/// dm-writecache commits at FLUSH: one fence per write instead of two. A FUA write keeps the
/// strict order instead (data, <c>sfence</c>, persist; entry flagged FUA, <c>sfence</c>, persist):
/// its entry is valid by itself. Recovery erases uncommitted plain entries (never flushed).</para>
/// <para><b>Slot state words</b> (DRAM, one per slot): 0 free (set by <see cref="Retire"/> before the tail moves past the slot), <see cref="Busy"/> while a writer
/// fills it, <c>seq</c> once committed, <c>seq | </c><see cref="HoleBit"/> for a sequence number
/// recovery found no valid entry for. They are the seqlock readers check around a copy out of a
/// slot (<see cref="IsCommitted"/>) and what tells write-back how far the log is complete.</para>
/// <para><b>Reservation</b> takes a lock of a few instructions: the head, the room check and the
/// flush epoch must change together, or a writer could take a lower sequence number in a newer
/// epoch than a writer after it, and epochs would not be monotonic along the log.</para>
/// </remarks>
internal sealed unsafe class WriteCacheLog
{
    /// <summary>Slot state of a slot a writer is filling.</summary>
    public const long Busy = -1;
    /// <summary>Slot state bit of a sequence number recovery found no valid entry for (a torn or unfinished write).</summary>
    public const long HoleBit = 1L << 62;
    /// <summary>What <see cref="Lookup(long, Span{long})"/> reports for a block a newer pending discard or write-zeroes covers: it reads as zeros.</summary>
    public const long Zeroed = -1;
    private const int StageEntries = 32;

    private readonly byte* _base;
    private readonly long _deviceBytes;
    private readonly Action<long, long> _persist;
    private readonly ulong _seed;
    private readonly long _n;

    private readonly Lock _reserveLock = new();
    private readonly Lock _commitLock = new();
    private long _head;
    private long _uncommittedBlocks; // plain blocks reserved since the last commit (autocommit_blocks)
    private long _committed; // the persisted commit word: entries below it are committed
    private long _commitChecked; // every writer below it has published (a commit waits for those above)
    private long _tail;
    private long _epoch;
    private bool _epochHasWrites;
    private bool _sealed;
    private bool _ntStoresDurable;

    private readonly long[] _slotState;
    private readonly long[] _slotBlock;
    private readonly long[] _slotEpoch;
    private readonly long[] _slotTime;
    private readonly uint[] _slotCount;
    private readonly byte[] _slotKind;
    private readonly byte[] _slotFlags;

    private readonly Lock _indexLock = new();
    private readonly WriteCacheIndex _index;
    private readonly WriteCachePendingRange[] _ranges;
    private int _rangeCount;
    private WriteCacheReadCache? _readCache;

    private WriteCacheLog(byte* baseAddress, long deviceBytes, Action<long, long> persist, WriteCacheSuperblock sb, long originBlocks)
    {
        _base = baseAddress;
        _deviceBytes = deviceBytes;
        _persist = persist;
        Superblock = sb;
        Layout = sb.Layout;
        _seed = sb.EntrySeed;
        _n = sb.Layout.Entries;
        OriginBlocks = originBlocks;
        _slotState = new long[_n];
        _slotBlock = new long[_n];
        _slotEpoch = new long[_n];
        _slotTime = new long[_n];
        _slotCount = new uint[_n];
        _slotKind = new byte[_n];
        _slotFlags = new byte[_n];
        _index = new WriteCacheIndex(_n);
        _ranges = new WriteCachePendingRange[_n];
    }

    /// <summary>The superblock.</summary>
    public WriteCacheSuperblock Superblock { get; }
    /// <summary>Where the areas lie.</summary>
    public WriteCacheLayout Layout { get; }
    /// <summary>Entries (and slots): N.</summary>
    public long Entries => _n;
    /// <summary>The origin's size in cache blocks.</summary>
    public long OriginBlocks { get; }
    /// <summary>The cache device's first byte.</summary>
    public byte* Base => _base;
    /// <summary>The next sequence number to hand out.</summary>
    public long Head => Volatile.Read(ref _head);
    /// <summary>The written-back sequence: every entry below it is on the origin.</summary>
    public long Tail => Volatile.Read(ref _tail);
    /// <summary>Slots in use (written and not yet written back, superseded ones included).</summary>
    public long Used => Head - Tail;
    /// <summary>The current flush epoch (entries written now record it).</summary>
    public long Epoch => Volatile.Read(ref _epoch);
    /// <summary>Blocks whose newest data is in the cache, plus pending discard ranges.</summary>
    public long Dirty => _index.Count + Volatile.Read(ref _rangeCount);
    /// <summary>True when no block is cached and no range is pending: every read can go to the origin.</summary>
    public bool NothingCached
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        get => _index.Count == 0 && Volatile.Read(ref _rangeCount) == 0;
    }
    /// <summary>Live entries recovery found at open.</summary>
    public long RecoveredEntries { get; private set; }
    /// <summary>Sequence numbers between the tail and the head for which recovery found no valid entry (torn or unfinished writes).</summary>
    public long RecoveredHoles { get; private set; }
    /// <summary>Entries recovery found whole but uncommitted (written, never flushed) and erased.</summary>
    public long UncommittedFound { get; private set; }
    /// <summary>The committed sequence: every entry below it is durable with its data.</summary>
    public long Committed => Volatile.Read(ref _committed);
    /// <summary>Plain blocks written after which a writer commits (dm: <c>autocommit_blocks</c>; 0 = never).</summary>
    public long AutocommitBlocks { get; set; }
    /// <summary>True when <see cref="AutocommitBlocks"/> plain blocks were written since the last commit.</summary>
    public bool CommitDue
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        get => AutocommitBlocks > 0 && Volatile.Read(ref _uncommittedBlocks) >= AutocommitBlocks;
    }
    /// <summary>True when the open formatted the device.</summary>
    public bool Formatted { get; private set; }
    /// <summary>True once the log was sealed (cleaner mode, drained): it takes no new entries and every write goes to the origin.</summary>
    public bool Sealed => Volatile.Read(ref _sealed);
    /// <summary>The read cache of origin data in the free slots, or null when it was never switched on.</summary>
    public WriteCacheReadCache? ReadCache => Volatile.Read(ref _readCache);

    /// <summary>
    /// Sets the share of the log clean copies of origin data may use (<c>read_cache PCT</c>),
    /// creating the read cache on first use (its DRAM is ~48 bytes per slot); 0 stops new inserts.
    /// Under both locks, so a writer sees it either before its reservation or not at all.
    /// </summary>
    public void SetReadCache(int percent)
    {
        lock (_reserveLock)
        {
            lock (_indexLock)
            {
                if (_readCache is { } rc) rc.Percent = percent;
                else if (percent > 0)
                {
                    rc = new WriteCacheReadCache(_n, percent);
                    if (_sealed) rc.SetEnabledUnsynchronized(false);
                    Volatile.Write(ref _readCache, rc);
                }
            }
        }
    }

    // ---- open, format, recovery ----------------------------------------------------------

    /// <summary>
    /// Opens the cache on the mapping at <paramref name="baseAddress"/>: validates the superblock
    /// against <paramref name="origin"/>, scans the entries and rebuilds the DRAM state (recovery).
    /// A device whose superblock area is all zeros is formatted first (unless <paramref name="readOnly"/>).
    /// </summary>
    /// <param name="baseAddress">The cache device's byte 0, mapped and pinned for the log's lifetime.</param>
    /// <param name="deviceBytes">The cache device's size.</param>
    /// <param name="persist">Makes a byte range of the device durable (<c>IDaxDevice.PersistRange</c>).</param>
    /// <param name="origin">The origin the cache is used with.</param>
    /// <param name="readOnly">Open without writing anything (no format).</param>
    /// <exception cref="WriteCacheRefusedException">Too small, foreign data, another origin, or read-only and blank.</exception>
    /// <exception cref="IOException">The superblock or the entries are damaged.</exception>
    /// <param name="ntStoresDurable">Non-temporal stores and a fence make data durable (a MAP_SYNC mapping): FUA needs no persist call.</param>
    public static WriteCacheLog Open(byte* baseAddress, long deviceBytes, Action<long, long> persist, WriteCacheOrigin origin, bool readOnly = false,
        bool ntStoresDurable = false)
    {
        var sbArea = new ReadOnlySpan<byte>(baseAddress, WriteCacheLayout.SuperblockSize);
        WriteCacheSuperblock? sb = WriteCacheSuperblock.TryParse(sbArea, deviceBytes, out bool blank, out string? error);
        bool formatted = false;
        if (sb is null)
        {
            bool interrupted = WriteCacheSuperblock.IsInterruptedFormat(sbArea);
            if (!blank && !interrupted)
                throw error!.Contains("no writecache superblock", StringComparison.Ordinal)
                    ? new WriteCacheRefusedException($"the cache device holds other data: {error}; refusing to format over it (use a fresh, zeroed namespace)")
                    : new IOException($"cache device: {error}");
            if (readOnly) throw new WriteCacheRefusedException("the cache device is not formatted and is open read-only");
            sb = Format(baseAddress, deviceBytes, persist, origin);
            formatted = true;
        }
        if (!sb.Origin.Matches(origin))
            throw new WriteCacheRefusedException($"the cache belongs to another origin: it was formatted for an origin of {sb.Origin}; this one has {origin}");
        var log = new WriteCacheLog(baseAddress, deviceBytes, persist, sb, origin.CapacitySectors / (WriteCacheLayout.BlockSize >> 9))
        {
            Formatted = formatted,
            _ntStoresDurable = ntStoresDurable,
        };
        log.Recover(readOnly);
        return log;
    }

    /// <summary>Formats the device: zeroed metadata area first, then the superblock without its magic, then the magic (each persisted).</summary>
    private static WriteCacheSuperblock Format(byte* b, long deviceBytes, Action<long, long> persist, WriteCacheOrigin origin)
    {
        WriteCacheLayout layout = WriteCacheLayout.For(deviceBytes)
            ?? throw new WriteCacheRefusedException($"the cache device is too small: {deviceBytes} bytes hold no writecache (at least {WriteCacheLayout.MinDeviceBytes} bytes: "
                + $"the 4 KiB superblock and {WriteCacheLayout.MinEntries} entries of 64 bytes and 4 KiB each)");
        var sb = new WriteCacheSuperblock
        {
            CacheUuid = Guid.NewGuid(),
            Origin = origin,
            Layout = layout,
            DeviceBytes = deviceBytes,
            FormatTimeMs = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds(),
        };
        // Entries of whatever the area held before fail the new uuid's checksum anyway; zeroing makes the area plainly empty.
        PmemStore.Clear(b + layout.MetadataOffset, (nuint)(layout.DataOffset - layout.MetadataOffset));
        persist(layout.MetadataOffset, layout.DataOffset - layout.MetadataOffset);
        byte[] block = new byte[WriteCacheLayout.SuperblockSize];
        sb.Encode(block);
        BinaryPrimitives.WriteUInt64LittleEndian(block.AsSpan(WriteCacheSuperblock.TailOffset), sb.EncodeTail(1));
        BinaryPrimitives.WriteUInt64LittleEndian(block.AsSpan(WriteCacheSuperblock.CommitOffset), sb.EncodeCommit(1));
        // The magic goes last: until it lands the area is an interrupted format, which the next open formats again.
        PmemStore.Copy(b + 8, block.AsSpan(8));
        persist(0, WriteCacheLayout.SuperblockSize);
        PmemStore.Write64((ulong*)b, WriteCacheSuperblock.Magic);
        persist(0, 8);
        return sb;
    }

    /// <summary>
    /// Recovery: the live entries are those with a valid checksum, a sequence number from the tail
    /// on, and committed (or FUA); the rest of [tail, head) are holes. Uncommitted entries are
    /// erased (unless <paramref name="readOnly"/>): new writes will reuse their sequence numbers
    /// and commit past them, which must not make the old lines valid.
    /// </summary>
    private void Recover(bool readOnly)
    {
        WriteCacheScan scan = WriteCacheScan.Run(_base, Superblock, OriginBlocks);
        if (scan.Error is not null) throw new IOException($"cache device: {scan.Error}");
        _tail = scan.Tail;
        _head = scan.Head;
        if (!readOnly)
        {
            foreach (long entry in scan.Uncommitted)
            {
                long offset = Layout.MetadataOffset + entry * WriteCacheLayout.EntrySize;
                PmemStore.Clear(_base + offset, WriteCacheLayout.EntrySize);
                _persist(offset, WriteCacheLayout.EntrySize);
            }
            // Everything live is committed now; a 1.0 cache gets its commit word here.
            if (scan.Committed != _head) PersistCommit(_head);
        }
        _committed = _commitChecked = readOnly ? Math.Min(scan.Committed, _head) : _head;
        UncommittedFound = scan.Uncommitted.Count;
        long maxEpoch = 0;
        long now = NowMs();
        foreach (WriteCacheEntry e in scan.Live)
        {
            int slot = Slot(e.Seq);
            _slotBlock[slot] = e.Block;
            _slotEpoch[slot] = e.Epoch;
            _slotTime[slot] = e.TimeMs > 0 && e.TimeMs <= now ? e.TimeMs : now;
            _slotCount[slot] = e.Count;
            _slotKind[slot] = (byte)e.Kind;
            _slotFlags[slot] = (byte)e.Flags;
            _slotState[slot] = e.Seq;
            if (e.Kind == WriteCacheEntryKind.Write) _index.Upsert(e.Block, e.Seq);
            else _ranges[_rangeCount++] = new WriteCachePendingRange(e.Seq, e.Block, e.Count);
            maxEpoch = Math.Max(maxEpoch, e.Epoch);
        }
        for (long s = scan.Tail; s < scan.Head; s++)
            if (_slotState[Slot(s)] != s) _slotState[Slot(s)] = s | HoleBit;
        // New writes start an epoch after every recovered one: what recovery found is ordered before them.
        _epoch = maxEpoch + 1;
        RecoveredEntries = scan.Live.Count;
        RecoveredHoles = scan.Holes;
    }

    // ---- the write path ------------------------------------------------------------------

    /// <summary>Slot (and entry) number of sequence <paramref name="seq"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public int Slot(long seq) => (int)(seq % _n);

    /// <summary>Address of the data slot of <paramref name="seq"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public byte* SlotAddress(long seq) => _base + Layout.SlotOffset(seq);

    /// <summary>Takes <paramref name="count"/> consecutive sequence numbers; false when the log has no room (write-back must free some first).</summary>
    public bool TryReserve(int count, bool fua, out long seq, out long epoch)
    {
        lock (_reserveLock)
        {
            long h = _head;
            if (_sealed || h + count - Volatile.Read(ref _tail) > _n)
            {
                seq = epoch = 0;
                return false;
            }
            if (h + count > WriteCacheSuperblock.MaxSeq) throw new IOException("write cache sequence numbers exhausted (2^56 blocks written); reformat the cache");
            _head = h + count;
            // Clean copies in the reserved slots go first: an atomic state change each, no waiting.
            _readCache?.EvictUnsynchronized(h, count);
            _epochHasWrites = true;
            if (!fua) _uncommittedBlocks += count;
            seq = h;
            epoch = _epoch;
            return true;
        }
    }

    /// <summary>
    /// Commits every write reserved before the call: waits for those still copying to publish
    /// (each fenced its own stores before), persists the log where stores alone are not durable,
    /// then persists the committed sequence. With <paramref name="flush"/> (a FLUSH) it also starts
    /// a new flush epoch if anything was written in the current one: writes completed before the
    /// call keep the older epoch, writes started after it get the new one, and write-back puts a
    /// flush of the origin between them. An autocommit does not: it is no ordering point.
    /// </summary>
    /// <exception cref="IOException">Persisting failed.</exception>
    public void Commit(bool flush)
    {
        lock (_commitLock)
        {
            long head;
            lock (_reserveLock)
            {
                if (flush && _epochHasWrites)
                {
                    _epoch++;
                    _epochHasWrites = false;
                }
                head = _head;
                _uncommittedBlocks = 0;
            }
            if (head == _committed) return;
            // Writers below the head hold no lock while they copy: wait for each to publish. A slot
            // written back meanwhile (below the tail) was published before.
            var spin = new SpinWait();
            for (long s = _commitChecked; s < head; s++)
                while (Volatile.Read(ref _slotState[Slot(s)]) is long state && state != s && state != (s | HoleBit) && s >= Volatile.Read(ref _tail))
                    spin.SpinOnce(-1);
            _commitChecked = head;
            // Where stores alone are not durable (a page-cache mapping), persist what was written
            // since the last commit: its slots and its entries, not the whole cache (msync walks
            // every page of the range it is given, and a commit comes every 64 writes).
            int count = (int)Math.Min(head - _committed, _n);
            PersistRun(Layout.DataOffset, head - count, count, WriteCacheLayout.BlockSize);
            PersistRun(Layout.MetadataOffset, head - count, count, WriteCacheLayout.EntrySize);
            PersistCommit(head);
        }
    }

    /// <summary>Stores the committed sequence word (one atomic 8-byte store) and persists its line.</summary>
    private void PersistCommit(long seq)
    {
        PmemStore.Write64((ulong*)(_base + WriteCacheSuperblock.CommitOffset), Superblock.EncodeCommit(seq));
        _persist(WriteCacheSuperblock.CommitOffset, sizeof(ulong));
        Volatile.Write(ref _committed, seq);
    }

    /// <summary>
    /// Logs a write of <paramref name="blocks"/> blocks from origin block <paramref name="block0"/>
    /// with the ordering the class documents; returns its first sequence number, or 0 when the
    /// log has no room (nothing was changed then).
    /// </summary>
    /// <param name="block0">First origin block.</param>
    /// <param name="blocks">Blocks in the write (at most N).</param>
    /// <param name="source">The data.</param>
    /// <param name="fua">Persist the slots and entries before returning.</param>
    /// <param name="overwrites">Blocks of the write that were cached already (write hits).</param>
    public long AppendWrites<TSource>(long block0, int blocks, ref TSource source, bool fua, out int overwrites)
        where TSource : IWriteCacheSource, allows ref struct
    {
        overwrites = 0;
        if (!TryReserve(blocks, fua, out long seq, out long epoch)) return 0;
        long now = NowMs();
        for (int j = 0; j < blocks; j++)
        {
            int slot = Slot(seq + j);
            // A reader still copying the slot's old data already sees it moved: Retire set the state
            // to 0 before the tail (and so this reservation) could pass it, and the state never
            // returns to the old sequence number. Busy only tells write-back the entry is not ready.
            Volatile.Write(ref _slotState[slot], Busy);
            SetSlotMeta(slot, block0 + j, epoch, now, 1, WriteCacheEntryKind.Write, WriteCacheEntryFlags.None);
        }
        // A read completion still copying origin data into a reserved slot finishes first (a memory copy, never an origin read).
        _readCache?.WaitForFills(seq, blocks);
        for (int j = 0; j < blocks; j++) source.CopyBlock(j, SlotAddress(seq + j));
        if (fua)
        {
            // The entry vouches for its data by itself: the data is durable before it is written.
            PersistentMemory.Drain();
            PersistRun(Layout.DataOffset, seq, blocks, WriteCacheLayout.BlockSize);
        }
        StoreEntries(seq, blocks, block0, epoch, now, WriteCacheEntryKind.Write, fua ? WriteCacheEntryFlags.Fua : WriteCacheEntryFlags.None, 1, fua);
        lock (_indexLock)
        {
            WriteCacheReadCache? rc = _readCache;
            for (int j = 0; j < blocks; j++)
            {
                if (_index.Upsert(block0 + j, seq + j)) overwrites++;
                rc?.NoteWriteUnsynchronized(block0 + j);
            }
        }
        // Published last: write-back takes only committed slots, and by then the index names them.
        for (int j = 0; j < blocks; j++) Volatile.Write(ref _slotState[Slot(seq + j)], seq + j);
        return seq;
    }

    /// <summary>
    /// Logs a discard or write-zeroes of <paramref name="count"/> origin blocks (one entry, no data):
    /// the blocks read as zeros from now until write-back has applied it to the origin.
    /// </summary>
    /// <returns>Its sequence number, or 0 when the log has no room.</returns>
    public long AppendRange(long block, long count, WriteCacheEntryKind kind, WriteCacheEntryFlags flags, bool fua)
    {
        if (!TryReserve(1, fua, out long seq, out long epoch)) return 0;
        long now = NowMs();
        int slot = Slot(seq);
        Volatile.Write(ref _slotState[slot], Busy);
        if (fua) flags |= WriteCacheEntryFlags.Fua;
        SetSlotMeta(slot, block, epoch, now, (uint)count, kind, flags);
        StoreEntries(seq, 1, block, epoch, now, kind, flags, (uint)count, fua);
        lock (_indexLock)
        {
            _ranges[_rangeCount++] = new WriteCachePendingRange(seq, block, count);
            _readCache?.NoteRangeUnsynchronized(block, count);
        }
        Volatile.Write(ref _slotState[slot], seq);
        return seq;
    }

    private void SetSlotMeta(int slot, long block, long epoch, long now, uint count, WriteCacheEntryKind kind, WriteCacheEntryFlags flags)
    {
        _slotBlock[slot] = block;
        _slotEpoch[slot] = epoch;
        _slotTime[slot] = now;
        _slotCount[slot] = count;
        _slotKind[slot] = (byte)kind;
        _slotFlags[slot] = (byte)flags;
    }

    /// <summary>Writes the entries of <c>[seq, seq + count)</c> (one line each, non-temporal) and fences (for a plain write, the one fence that also covers its data); with FUA persists them.</summary>
    [SkipLocalsInit] // the staging lines are written whole before they are copied
    private void StoreEntries(long seq, int count, long block0, long epoch, long now, WriteCacheEntryKind kind, WriteCacheEntryFlags flags, uint blocksEach, bool fua)
    {
        byte* stage = stackalloc byte[StageEntries * WriteCacheLayout.EntrySize + 64];
        stage = (byte*)(((nint)stage + 63) & ~(nint)63);
        int done = 0;
        while (done < count)
        {
            // A run of consecutive entries up to the end of the metadata area (the log wraps there).
            long s = seq + done;
            int run = (int)Math.Min(Math.Min(count - done, StageEntries), _n - Slot(s));
            for (int j = 0; j < run; j++)
            {
                long block = kind == WriteCacheEntryKind.Write ? block0 + done + j : block0;
                new WriteCacheEntry(s + j, block, epoch, blocksEach, kind, flags, now).Encode(stage + j * WriteCacheLayout.EntrySize, _seed);
            }
            PersistentMemory.CopyNonTemporal(_base + Layout.EntryOffset(s), stage, (nuint)(run * WriteCacheLayout.EntrySize));
            done += run;
        }
        PersistentMemory.Drain();
        if (fua) PersistRun(Layout.MetadataOffset, seq, count, WriteCacheLayout.EntrySize);
    }

    /// <summary>Persists the per-sequence records (slots or entries) of <c>[seq, seq + count)</c>: one range, or two where the log wraps.</summary>
    private void PersistRun(long areaOffset, long seq, int count, int size)
    {
        if (_ntStoresDurable) return; // the streaming stores and the fence already reached the persistence domain
        int first = Slot(seq);
        int inFirst = (int)Math.Min(count, _n - first);
        _persist(areaOffset + (long)first * size, (long)inFirst * size);
        if (inFirst < count) _persist(areaOffset, (long)(count - inFirst) * size);
    }

    // ---- the read path -------------------------------------------------------------------

    /// <summary>
    /// Where the newest data of <paramref name="seqs"/>.Length blocks from <paramref name="block0"/>
    /// is: a sequence number (its slot), 0 (the origin), or <see cref="Zeroed"/> (a newer pending
    /// discard or write-zeroes covers it).
    /// </summary>
    public void Lookup(long block0, Span<long> seqs) => Lookup(block0, seqs, out _);

    /// <summary>
    /// As <see cref="Lookup(long, Span{long})"/>, and where the read cache holds a clean copy of a
    /// block the origin would serve, <see cref="WriteCacheReadCache.CleanBit"/> or'ed with the copy's
    /// tag. <paramref name="generation"/> is what an insert of the blocks still missed must be
    /// published against (<see cref="InsertClean"/>).
    /// </summary>
    public void Lookup(long block0, Span<long> seqs, out long generation)
    {
        lock (_indexLock)
        {
            WriteCacheReadCache? rc = _readCache;
            generation = rc?.GenerationUnsynchronized ?? 0;
            for (int j = 0; j < seqs.Length; j++) seqs[j] = _index.Find(block0 + j);
            for (int r = 0; r < _rangeCount; r++)
            {
                WriteCachePendingRange range = _ranges[r];
                long from = Math.Max(range.Block, block0), to = Math.Min(range.Block + range.Count, block0 + seqs.Length);
                for (long b = from; b < to; b++)
                {
                    ref long s = ref seqs[(int)(b - block0)];
                    if (s >= 0 && range.Seq > s) s = Zeroed;
                }
            }
            if (rc is not null && rc.Count != 0)
                for (int j = 0; j < seqs.Length; j++)
                    if (seqs[j] == 0 && rc.FindUnsynchronized(block0 + j) is long tag and not 0) seqs[j] = WriteCacheReadCache.CleanBit | tag;
        }
    }

    /// <summary>
    /// Keeps clean copies of <paramref name="blocks"/> origin blocks from <paramref name="block0"/>
    /// just read from the origin, in free slots (nothing is persisted: see
    /// <see cref="WriteCacheReadCache"/>). A block is published only if no write or discard of it
    /// was recorded after <paramref name="generation"/> (taken with the lookup that sent the read to
    /// the origin); with no free slot in the read cache's window, fewer (or none) are kept.
    /// </summary>
    /// <returns>Copies published.</returns>
    [SkipLocalsInit] // the slot numbers are written by the claim before they are read
    public int InsertClean<TSource>(long block0, int blocks, long generation, ref TSource source)
        where TSource : IWriteCacheSource, allows ref struct
    {
        WriteCacheReadCache? rc = _readCache;
        if (rc is null || !rc.Inserting) return 0;
        Span<int> slots = stackalloc int[Math.Min(blocks, 256)];
        int got;
        lock (_reserveLock)
        {
            if (_sealed) return 0;
            got = rc.ClaimUnsynchronized(_head, Volatile.Read(ref _tail), slots);
        }
        if (got == 0) return 0;
        for (int j = 0; j < got; j++) source.CopyBlock(j, SlotAddress(slots[j]));
        // The streaming stores are visible before a tag publishes them (and before a waiting writer's own data goes in).
        PersistentMemory.Drain();
        int published = 0;
        lock (_indexLock)
        {
            for (int j = 0; j < got; j++)
            {
                // Dirty data always wins (a write recorded since also moved the generation; this is the plain check).
                if (_index.Find(block0 + j) != 0) rc.Abandon(slots[j]);
                else if (rc.PublishUnsynchronized(slots[j], block0 + j, generation)) published++;
            }
        }
        return published;
    }

    /// <summary>Drops the clean copies of <paramref name="count"/> blocks from <paramref name="block"/>: a write that bypassed the log (sealed) reached the origin.</summary>
    public void DropClean(long block, long count)
    {
        if (_readCache is not { } rc) return;
        lock (_indexLock) rc.NoteRangeUnsynchronized(block, count);
    }

    /// <summary>True while the read cache's copy <paramref name="tag"/> is still in its slot (the seqlock check after a copy out).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public bool IsCleanValid(long tag) => _readCache!.IsValid(tag);

    /// <summary>True while the slot of <paramref name="seq"/> holds that sequence's committed data (the seqlock check around a copy out).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public bool IsCommitted(long seq) => Volatile.Read(ref _slotState[Slot(seq)]) == seq;

    // ---- write-back ----------------------------------------------------------------------

    /// <summary>
    /// The run of the log write-back may take now: from the tail, entries that are committed (or
    /// holes), all of one flush epoch, at most <paramref name="max"/> of them.
    /// </summary>
    /// <returns>The end of the run (exclusive); the run is empty when it equals <paramref name="start"/>.</returns>
    public long CommittedRun(long max, out long start)
    {
        start = Volatile.Read(ref _tail);
        long head = Volatile.Read(ref _head);
        long end = start, epoch = -1;
        while (end < head && end - start < max)
        {
            long state = Volatile.Read(ref _slotState[Slot(end)]);
            if (state == end)
            {
                long e = _slotEpoch[Slot(end)];
                if (epoch < 0) epoch = e;
                else if (e != epoch) break;
                // A discard or write-zeroes is a run of its own: within a run write-back orders
                // nothing, and the range must land after the writes before it and before those after.
                if (_slotKind[Slot(end)] != (byte)WriteCacheEntryKind.Write)
                {
                    if (end == start) end++;
                    break;
                }
            }
            else if (state != (end | HoleBit)) break; // still being written
            end++;
        }
        return end;
    }

    /// <summary>The entry of committed sequence <paramref name="seq"/> as DRAM has it (kind None for a hole).</summary>
    public WriteCacheEntry EntryOf(long seq)
    {
        int slot = Slot(seq);
        if (Volatile.Read(ref _slotState[slot]) != seq) return default;
        return new WriteCacheEntry(seq, _slotBlock[slot], _slotEpoch[slot], _slotCount[slot], (WriteCacheEntryKind)_slotKind[slot],
            (WriteCacheEntryFlags)_slotFlags[slot], _slotTime[slot]);
    }

    /// <summary>Persists the written-back sequence: one atomic 8-byte store, then a persist of its line.</summary>
    public void PersistTail(long tail)
    {
        PmemStore.Write64((ulong*)(_base + WriteCacheSuperblock.TailOffset), Superblock.EncodeTail(tail));
        _persist(WriteCacheSuperblock.TailOffset, sizeof(ulong));
    }

    /// <summary>
    /// After <see cref="PersistTail"/>(<paramref name="end"/>): drops the written-back entries of
    /// <c>[start, end)</c> from the index (unless a newer write of the block came meanwhile) and
    /// the pending ranges, frees their slots and moves the DRAM tail, so writers may reuse them.
    /// </summary>
    public void Retire(long start, long end)
    {
        for (long s = start; s < end;)
        {
            long chunkEnd = Math.Min(end, s + 256); // readers and writers wait for this lock: hold it briefly
            lock (_indexLock)
            {
                for (; s < chunkEnd; s++)
                {
                    int slot = Slot(s);
                    if (_slotState[slot] != s) continue;
                    if (_slotKind[slot] == (byte)WriteCacheEntryKind.Write) _index.RemoveIf(_slotBlock[slot], s);
                    else RemoveRange(s);
                }
            }
        }
        // Freed before the tail moves: a reader that looked a slot up before the drop sees it change.
        for (long s = start; s < end; s++) Volatile.Write(ref _slotState[Slot(s)], 0);
        Volatile.Write(ref _tail, end);
    }

    private void RemoveRange(long seq)
    {
        for (int r = 0; r < _rangeCount; r++)
        {
            if (_ranges[r].Seq != seq) continue;
            Array.Copy(_ranges, r + 1, _ranges, r, _rangeCount - r - 1);
            Volatile.Write(ref _rangeCount, _rangeCount - 1);
            return;
        }
    }

    /// <summary>The commit time (Unix ms) of the oldest entry not written back, or null when the log is empty or its oldest entry is still being written.</summary>
    public long? OldestTimeMs
    {
        get
        {
            long tail = Volatile.Read(ref _tail), head = Volatile.Read(ref _head);
            for (long s = tail; s < head && s < tail + 64; s++)
            {
                long state = Volatile.Read(ref _slotState[Slot(s)]);
                if (state == s) return _slotTime[Slot(s)];
                if (state != (s | HoleBit)) return null;
            }
            return null;
        }
    }

    /// <summary>
    /// Seals the log if it is empty (every entry written back): from then on it takes no entry and
    /// the target sends writes to the origin (cleaner mode, finished). Under the reservation lock,
    /// so no writer holds a reservation across the seal.
    /// </summary>
    /// <returns>True when the log is sealed.</returns>
    public bool TrySeal()
    {
        lock (_reserveLock)
        {
            if (_head == Volatile.Read(ref _tail) && !_sealed)
            {
                // Writes go straight to the origin from now on: no clean copy may outlive that. The
                // copies go first, so that whoever sees the seal (Status.PassThrough) sees them gone.
                if (_readCache is { } rc) lock (_indexLock) rc.SetEnabledUnsynchronized(false);
                Volatile.Write(ref _sealed, true);
            }
            return _sealed;
        }
    }

    /// <summary>Lets the log take entries again (cleaner mode switched off).</summary>
    public void Unseal()
    {
        lock (_reserveLock)
        {
            Volatile.Write(ref _sealed, false);
            if (_readCache is { } rc) lock (_indexLock) rc.SetEnabledUnsynchronized(true);
        }
    }

    private static readonly long s_unixMsAtTick0 = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds() - Environment.TickCount64;

    /// <summary>
    /// Wall-clock milliseconds, as entries record them: the coarse monotonic tick plus the Unix
    /// time it stood for when the process started (a few ns, where reading the wall clock per
    /// write costs tens; ages need milliseconds, not precision).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static long NowMs() => s_unixMsAtTick0 + Environment.TickCount64;

    /// <summary>The cache device's size as given at open.</summary>
    public long DeviceBytes => _deviceBytes;
}
