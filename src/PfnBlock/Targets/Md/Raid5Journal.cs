using PfnBlock.Block;
using PfnBlock.Devices.Pmem;
using PfnBlock.Memory;

namespace PfnBlock.Targets.Md;

/// <summary>What a journal reports (<c>ctl md</c>, <c>pfnblock check</c>).</summary>
/// <param name="Spec">The journal device's spec.</param>
/// <param name="Mode">Its mode.</param>
/// <param name="Blocks">Log size in journal blocks (512 bytes, <see cref="Raid5JournalLayout.BlockBytes"/>).</param>
/// <param name="UsedBlocks">Blocks between the durable tail and the head (records a replay would walk).</param>
/// <param name="Records">Records appended since assembly.</param>
/// <param name="Replayed">Records replayed onto the members at assembly.</param>
/// <param name="Reclaims">Superblock updates that reclaimed log space since assembly.</param>
/// <param name="Failed">The journal device failed: the array refuses writes.</param>
/// <param name="Pending">Write-back: data records acknowledged but not yet written out to the members.</param>
/// <param name="WrittenOut">Write-back: data records written out since assembly.</param>
public sealed record Raid5JournalStatus(string Spec, Raid5JournalMode Mode, long Blocks, long UsedBlocks, long Records, long Replayed, long Reclaims, bool Failed,
    long Pending = 0, long WrittenOut = 0);

/// <summary>
/// A RAID5 array's write journal on a pmem namespace (md's raid5-cache, <c>mdadm --write-journal</c>).
/// In write-through mode, before a stripe's members are written, the new contents of every member
/// range the stripe write changes (data and parity) go to the journal as one record and are made
/// durable; the members are written after. A crash between the two leaves the record, which
/// assembly replays onto the members, so a stripe is never left with data and parity that
/// disagree (the RAID5 write hole) and a dirty array needs no parity resync.
/// </summary>
/// <remarks>
/// <para>Appends are serialised: one record is written before the next starts, so the log has no
/// holes and a replay stops at the first record that fails its checksums. A record is made durable
/// (with every record before it) when something relies on it: a write-through stripe record and a
/// write-out's parity record before their members change, a FUA write's data record before it
/// completes, the log up to its head at an array flush. Records are
/// done once their members were written; the oldest done ones are reclaimed when the log needs
/// their space: the members are flushed, then the superblock's tail moves past them (md's
/// r5l_do_reclaim). A writer that finds the log full waits for reclaim, it does not fail.</para>
/// <para>In write-back mode (md's r5c) a write appends a <see cref="Raid5JournalRecordKind.Data"/>
/// record of its new data alone and completes: no member is read or written. The records stay
/// pending, indexed by stripe in DRAM (reads lay them over what the members hold), until the
/// target's write-out workers write them out a stripe at a time, each worker the stripes
/// <see cref="OwnerOf"/> gives it: the stripe of its oldest pending record, with every pending
/// record of that stripe merged into one stripe write (md's r5c flushes a stripe_head with all its
/// cached pages). The write-out computes the parity of the merged
/// rows and journals it alone as a <see cref="Raid5JournalRecordKind.Parity"/> record covering those
/// data records before it changes any member (the data is in the log already), so a torn
/// write-out is replayed, not a write hole. Each pending data record reserves the log space of the
/// parity it may need, so a full log makes writers wait for write-out and write-out itself never
/// waits for room.</para>
/// <para>The hot path allocates nothing: the record's header is encoded into one preallocated
/// DRAM frame and the bio gathers it with the stripe buffers that hold the new contents.</para>
/// </remarks>
internal sealed unsafe class Raid5Journal : IDisposable
{
    /// <summary>The fewest records that may be between written and done at once (more than the stripe buffer sets).</summary>
    private const int MinRing = 256;
    /// <summary>The most records the log holds at once (its DRAM index is preallocated): 1 GiB of 4 KiB writes fits.</summary>
    private const int MaxRing = 1 << 18;

    private readonly MdArray _array;
    private readonly IBlockDevice _device;
    private readonly Raid5JournalSuperblock _sb;
    private readonly DramArena _arena; // a record header
    private readonly Bio _bio;
    private readonly Bio _flush = new(1);
    private readonly MdMetadataIo _io;
    private readonly object _sync = new();
    private readonly int _ring;           // ring slots: more than the records the log can hold (each takes ≥ 2 blocks)
    private readonly long[] _ringBlock;   // per live record (slot seq % _ring): its header block
    private readonly bool[] _ringDone;    // its member writes are done (a data record: written out)
    // Write-back: per pending data record, its stripe, entries, the next pending record of the
    // same stripe (a slot, −1 none) and the blocks it reserves for its write-out record.
    private readonly long[] _ringSeq;
    private readonly long[] _ringStripe;
    private readonly Raid5JournalEntry[] _ringEntries;
    private readonly int[] _ringCount;
    private readonly int[] _ringNext;
    private readonly int[] _ringReserve;
    private readonly Dictionary<long, (int Head, int Tail)> _pendingByStripe = [];
    private readonly Bio _readBio = new(1);
    private readonly long _slack;         // write-back admission slack: one largest record (the wrap at the log's end)
    private readonly uint _seed;
    private long _reserved;               // blocks reserved by pending data records for their write-out records
    private readonly long[] _nextOut;     // per write-out worker: no pending data record of its stripes has a lower seq
    private readonly AutoResetEvent[] _outWakes; // per write-out worker: set when it has work (see WakeWriteOut)
    private volatile int _pending;
    private long _writtenOut;
    private long _dataRecords;            // data records appended since assembly (the write-out's idle test)
    private bool _draining;               // a stop waits for every record to be written out
    private bool _outWoken;               // the write-out workers were woken past the high watermark and have not gone idle since
    private long _head, _headSeq;            // where and which the next record is
    private long _memTailBlock, _memTailSeq; // the oldest record not yet done (or the head)
    private long _durTailBlock, _durTailSeq; // the tail the superblock records
    private long _records, _replayed, _reclaims;
    private volatile bool _failed;
    private bool _stopped;
    private long _dirtyFrom = -1;         // the first log block written since the log was last made durable (−1: none)
    private readonly IDaxDevice? _dax;    // the device's memory, when it has direct access: persisting a range needs no flush of it all
    private readonly bool _volatile;      // the device has a volatile cache: written records are durable only once persisted
    private readonly DaxRange[] _pins = [];
    private readonly byte* _base;         // the device's memory, pinned while the journal is open: records copied in and read out without bios (null: bios)
    private readonly bool _ntDurable;     // non-temporal stores and a fence make it durable (a MAP_SYNC pmem mapping): persisting is a fence

    private Raid5Journal(MdArray array, IBlockDevice device, string spec, Raid5JournalSuperblock sb, MdMetadataIo io)
    {
        _array = array;
        _device = device;
        Spec = spec;
        _sb = sb;
        _io = io;
        _seed = sb.RecordSeed;
        _arena = DramArena.Create(Raid5JournalLayout.BlockBytes, device.AddressSpace, $"md-{array.Name}-journal");
        new Span<byte>(_arena.BaseAddress, Raid5JournalLayout.BlockBytes).Clear();
        _bio = new Bio(Raid5JournalLayout.MaxMembers + 1); // a header and a range per member, or per parity run
        _ring = (int)Math.Clamp((sb.Blocks - Raid5JournalLayout.LogStart) / 2 + 2, MinRing, MaxRing);
        _volatile = (device.Features & DeviceFeatures.WriteCache) != 0;
        _dax = (device.Features & DeviceFeatures.Dax) != 0 ? device as IDaxDevice : null;
        if (_dax is not null && (device.Features & DeviceFeatures.ReadOnly) == 0 && PinLog(_dax, sb.Blocks * Raid5JournalLayout.BlockBytes, out _base) is { } pins)
        {
            _pins = pins;
            _ntDurable = device is PmemDevice p && p.Persistence == PersistenceMode.CpuCache;
        }
        _ringBlock = new long[_ring];
        _ringDone = new bool[_ring];
        _ringSeq = new long[_ring];
        _ringStripe = new long[_ring];
        _ringEntries = new Raid5JournalEntry[_ring * sb.RaidDisks];
        _ringCount = new int[_ring];
        _ringNext = new int[_ring];
        _ringReserve = new int[_ring];
        _pendingByStripe.EnsureCapacity(_ring);
        _slack = Raid5JournalLayout.MaxRecordBlocks(sb.RaidDisks, sb.ChunkSectors);
        WriteOutWorkers = array.MembersSynchronous() ? Math.Clamp(Environment.ProcessorCount, 2, MaxWriteOutWorkers) : SlowMemberWriteOutWorkers;
        _nextOut = new long[WriteOutWorkers];
        _outWakes = new AutoResetEvent[WriteOutWorkers];
        for (int k = 0; k < WriteOutWorkers; k++) _outWakes[k] = new AutoResetEvent(false);
        _head = _memTailBlock = _durTailBlock = sb.TailBlock;
        _headSeq = _memTailSeq = _durTailSeq = sb.TailSeq;
    }

    /// <summary>
    /// Pins the journal's bytes of a device with direct access, when they are one contiguous
    /// mapping (a pmem namespace): appends then copy records in with non-temporal stores and the
    /// write-out reads them with memory copies. Null (nothing pinned) when the device refuses a page
    /// (a bad block: the bios report it) or the mapping is in pieces; the journal then uses bios.
    /// </summary>
    private static DaxRange[]? PinLog(IDaxDevice dax, long bytes, out byte* baseAddress)
    {
        var pins = new List<DaxRange>();
        long pages = (bytes + Pfn.PageSize - 1) >> Pfn.PageShift, done = 0;
        baseAddress = null;
        while (done < pages)
        {
            long got = dax.DirectAccess(done, pages - done, out DaxRange r);
            if (got == 0 || (done > 0 && r.Address != baseAddress + (done << Pfn.PageShift)))
            {
                if (got != 0) r.Unpin();
                foreach (DaxRange p in pins) p.Unpin();
                baseAddress = null;
                return null;
            }
            if (done == 0) baseAddress = r.Address;
            pins.Add(r);
            done += got;
        }
        return [.. pins];
    }

    /// <summary>The journal device's spec.</summary>
    public string Spec { get; }
    /// <summary>The journal device.</summary>
    public IBlockDevice Device => _device;
    /// <summary>Its mode.</summary>
    public Raid5JournalMode Mode => _sb.Mode;
    /// <summary>The superblock says the journal was stopped cleanly (nothing to replay or write out).</summary>
    public bool IsClean => _sb.IsClean;
    /// <summary>Write-back mode: writes complete once their data is in the journal.</summary>
    public bool WriteBack => _sb.Mode == Raid5JournalMode.WriteBack;
    /// <summary>The journal device failed a write: the array refuses writes (md forces the array read-only).</summary>
    public bool Failed => _failed;
    /// <summary>Write-back: data records not yet written out to the members.</summary>
    public int Pending => _pending;
    /// <summary>The most write-out workers a journal runs over members that complete on the submitting thread (pmem): each is busy on a core.</summary>
    private const int MaxWriteOutWorkers = 4;

    /// <summary>
    /// Write-out workers over members that do not complete on the submitting thread (O_DIRECT
    /// files, disks): a worker waits for its member I/O most of the time, so one per core would
    /// keep one stripe per core in flight at disk latency — slower than the front end. Sixteen
    /// keep sixteen stripes (up to 16 × members I/Os) in flight, md's stripe cache in miniature;
    /// each holds a stripe buffer set (members + 1 chunks).
    /// </summary>
    internal const int SlowMemberWriteOutWorkers = 16;

    /// <summary>
    /// Write-back: how many write-out workers the target runs — over pmem members one per core, at
    /// least two, at most <see cref="MaxWriteOutWorkers"/>; over slower members
    /// <see cref="SlowMemberWriteOutWorkers"/>. Each owns the stripes <see cref="OwnerOf"/> gives it, so a
    /// stripe's records are written out by one worker in log order and no two workers take one
    /// stripe's lock; the log's tail is the oldest record any of them has not written out.
    /// </summary>
    public int WriteOutWorkers { get; }

    /// <summary>The write-out worker that owns the stripe at member sector <paramref name="memberSector"/>: stripes are dealt round-robin.</summary>
    public int OwnerOf(long memberSector) => (int)((ulong)(memberSector / _sb.ChunkSectors) % (uint)WriteOutWorkers);

    /// <summary>What write-out worker <paramref name="worker"/> waits on: set when write-out is wanted now (a record was appended past the high watermark, a writer waits for room, a stop drains).</summary>
    public WaitHandle OutWake(int worker) => _outWakes[worker];

    /// <summary>Wakes every write-out worker.</summary>
    public void WakeWriteOut()
    {
        foreach (AutoResetEvent e in _outWakes) e.Set();
    }
    /// <summary>Writers waiting for log space now.</summary>
    internal int Waiters { get; private set; }
    /// <summary>Test seam: while set, the write-out workers leave data records pending (writers still wait when the log is full).</summary>
    internal bool PauseWriteOut { get; set; }
    /// <summary>Test seam: a mask of write-out workers that leave their stripes' records pending (bit k: worker k).</summary>
    internal int PausedWorkers { get; set; }
    /// <summary>Test seam: write-out worker <paramref name="worker"/> is paused.</summary>
    internal bool Paused(int worker) => PauseWriteOut || (PausedWorkers & (1 << worker)) != 0;
    /// <summary>Test seam: the oldest record not done (every record before it is on the members); the durable tail moves only up to it.</summary>
    internal long MemTailSeq
    {
        get { lock (_sync) return _memTailSeq; }
    }
    /// <summary>Test seam: the next stop leaves the log as a crash would (records kept, superblock not marked clean).</summary>
    internal bool LeaveLogOnStop { get; set; }
    /// <summary>True when the journal's device completes bios on the submitting thread.</summary>
    public bool Synchronous => (_device.Features & DeviceFeatures.Synchronous) != 0;

    /// <summary>What the journal holds and did.</summary>
    public Raid5JournalStatus Status
    {
        get
        {
            lock (_sync)
                return new Raid5JournalStatus(Spec, _sb.Mode, _sb.Blocks - Raid5JournalLayout.LogStart, Used(_durTailBlock, _durTailSeq), _records, _replayed, _reclaims, _failed,
                    _pending, _writtenOut);
        }
    }

    // ---- format and open -------------------------------------------------------------------------

    /// <summary>Makes <paramref name="device"/> an empty journal of the array with uuid <paramref name="arrayUuid"/>.</summary>
    /// <exception cref="ArgumentException">The device is too small for the array's largest record twice over.</exception>
    /// <exception cref="IOException">The device cannot be written.</exception>
    public static void Format(IBlockDevice device, string spec, byte[] arrayUuid, int raidDisks, long chunkSectors, Raid5JournalMode mode)
    {
        long blocks = device.CapacityBytes / Raid5JournalLayout.BlockBytes;
        long min = Raid5JournalLayout.MinBlocks(raidDisks, chunkSectors, mode);
        if (blocks < min)
            throw new ArgumentException($"journal {spec} has {device.CapacityBytes} bytes; an array of {raidDisks} members with {chunkSectors / 2} KiB chunks needs at least {min * Raid5JournalLayout.BlockBytes} (superblocks and two full-stripe records)");
        if ((device.Features & DeviceFeatures.ReadOnly) != 0) throw new ArgumentException($"journal {spec} is read-only");
        if (raidDisks > Raid5JournalLayout.MaxMembers) throw new ArgumentException($"a RAID5 journal serves arrays of at most {Raid5JournalLayout.MaxMembers} members; this one has {raidDisks}");
        var sb = new Raid5JournalSuperblock
        {
            Generation = 1,
            ArrayUuid = (byte[])arrayUuid.Clone(),
            JournalUuid = Guid.NewGuid().ToByteArray(),
            Blocks = blocks,
            TailBlock = Raid5JournalLayout.LogStart,
            TailSeq = 1,
            Mode = mode,
            RaidDisks = raidDisks,
            ChunkSectors = chunkSectors,
            Flags = Raid5JournalSuperblock.FlagClean,
        };
        var block = new byte[Raid5JournalLayout.BlockBytes];
        sb.Encode(block);
        using var io = new MdMetadataIo(device.AddressSpace);
        // Both copies, and the first log block zeroed so no record of an earlier journal sits where the log starts.
        io.Zero(device, Raid5JournalLayout.LogStart * Raid5JournalLayout.BlockBytes, Raid5JournalLayout.BlockBytes);
        io.Write(device, 0, block);
        sb.Generation = 0; // the older copy
        sb.Encode(block);
        io.Write(device, Raid5JournalLayout.BlockBytes, block);
    }

    /// <summary>Reads the current superblock of a journal device: the valid copy with the higher generation.</summary>
    /// <exception cref="InvalidDataException">Neither copy is valid; the message says why.</exception>
    public static Raid5JournalSuperblock ReadSuperblock(IBlockDevice device, MdMetadataIo io)
    {
        long deviceBlocks = device.CapacityBytes / Raid5JournalLayout.BlockBytes;
        var block = new byte[Raid5JournalLayout.BlockBytes];
        Raid5JournalSuperblock? best = null;
        string? error = null;
        for (int copy = 0; copy < 2; copy++)
        {
            io.Read(device, copy * Raid5JournalLayout.BlockBytes, block);
            Raid5JournalSuperblock? sb = Raid5JournalSuperblock.Decode(block, deviceBlocks, out string? e);
            error ??= e;
            if (sb is not null && (best is null || sb.Generation > best.Generation)) best = sb;
        }
        return best ?? throw new InvalidDataException($"{device.Name}: {error}");
    }

    /// <summary>
    /// Opens the journal <paramref name="device"/> of <paramref name="array"/> (uuid, geometry and mode checked).
    /// </summary>
    /// <exception cref="IOException">Not a journal, another array's, a geometry that does not match, or a mode this build cannot run.</exception>
    public static Raid5Journal Open(MdArray array, IBlockDevice device, string spec, byte[] arrayUuid)
    {
        var io = new MdMetadataIo(device.AddressSpace);
        try
        {
            Raid5JournalSuperblock sb;
            try { sb = ReadSuperblock(device, io); }
            catch (InvalidDataException e) { throw new IOException($"md: journal {spec}: {e.Message}", e); }
            if (!sb.ArrayUuid.AsSpan().SequenceEqual(arrayUuid))
                throw new IOException($"md: journal {spec} belongs to another array ({sb.ArrayUuidText}, not {MdSuperblock.FormatUuid(arrayUuid)})");
            if (sb.RaidDisks != array.RaidDisks || sb.ChunkSectors != array.ChunkSectors)
                throw new IOException($"md: journal {spec} records {sb.RaidDisks} members and {sb.ChunkSectors}-sector chunks; the array has {array.RaidDisks} and {array.ChunkSectors}");
            return new Raid5Journal(array, device, spec, sb, io);
        }
        catch
        {
            io.Dispose();
            throw;
        }
    }

    /// <summary>The mode as md's journal_mode names it.</summary>
    public static string ModeName(Raid5JournalMode mode) => mode switch
    {
        Raid5JournalMode.WriteThrough => "write-through",
        Raid5JournalMode.WriteBack => "write-back",
        _ => $"unknown ({(uint)mode})",
    };

    /// <summary>Parses md's journal_mode words.</summary>
    /// <exception cref="ArgumentException">Another word.</exception>
    public static Raid5JournalMode ParseMode(string text) => text switch
    {
        "write-through" => Raid5JournalMode.WriteThrough,
        "write-back" => Raid5JournalMode.WriteBack,
        _ => throw new ArgumentException($"journal mode '{text}' is not write-through or write-back"),
    };

    // ---- replay ----------------------------------------------------------------------------------

    /// <summary>One committed record found by <see cref="Scan"/>.</summary>
    internal readonly record struct Record(long Seq, long Block, long MemberSector, int PayloadBlocks, Raid5JournalEntry[] Entries,
        Raid5JournalRecordKind Kind = Raid5JournalRecordKind.Stripe, uint WritesOut = 0);

    /// <summary>
    /// Walks the log from the superblock's tail: every committed record in order, and where the
    /// walk ended (the first block and seq that hold no committed record). Reads only.
    /// </summary>
    internal static (List<Record> Records, long EndBlock, long EndSeq, string? Stop) Scan(IBlockDevice device, Raid5JournalSuperblock sb, MdMetadataIo io)
    {
        var records = new List<Record>();
        var header = new byte[Raid5JournalLayout.BlockBytes];
        var entries = new Raid5JournalEntry[Raid5JournalLayout.MaxMembers];
        long at = sb.TailBlock, seq = sb.TailSeq;
        string? stop = null;
        if (sb.IsClean) return (records, at, seq, null);
        while (records.Count < sb.Blocks)
        {
            if (!TryRecordAt(at, out Record r, out stop) && (at == Raid5JournalLayout.LogStart || !TryRecordAt(Raid5JournalLayout.LogStart, out r, out _))) break;
            records.Add(r);
            seq++;
            at = r.Block + 1 + r.PayloadBlocks;
            if (at >= sb.Blocks) at = Raid5JournalLayout.LogStart;
        }
        return (records, at, seq, stop);

        bool TryRecordAt(long block, out Record r, out string? why)
        {
            r = default;
            why = null;
            if (block + 1 > sb.Blocks) { why = "end of log"; return false; }
            io.Read(device, block * Raid5JournalLayout.BlockBytes, header);
            if (!Raid5JournalRecord.TryDecodeHeader(header, sb.RecordSeed, block, sb.RaidDisks, sb.ChunkSectors, out long s, out long memberSector, out int payload, out uint crc, entries, out int n,
                    out Raid5JournalRecordKind kind, out uint writesOut))
            {
                why = $"no valid record header at block {block}";
                return false;
            }
            if (s != seq) { why = $"block {block} holds record {s}, not {seq} (an older lap of the log)"; return false; }
            if (block + 1 + payload > sb.Blocks) { why = $"record {s} runs past the log's end"; return false; }
            // The payload's checksum: a record whose payload did not fully reach the journal is torn.
            var c = new Crc32C.Lanes(sb.RecordSeed);
            var buffer = new byte[Math.Min(MdMetadataIo.BufferBytes, (long)payload * Raid5JournalLayout.BlockBytes)];
            for (long done = 0, total = (long)payload * Raid5JournalLayout.BlockBytes; done < total;)
            {
                int len = (int)Math.Min(buffer.Length, total - done);
                io.Read(device, (block + 1) * Raid5JournalLayout.BlockBytes + done, buffer.AsSpan(0, len));
                fixed (byte* b = buffer) c.Append(b, len);
                done += len;
            }
            if (c.Value != crc) { why = $"record {s} at block {block} is torn (payload checksum mismatch)"; return false; }
            r = new Record(s, block, memberSector, payload, entries[..n], kind, writesOut);
            return true;
        }
    }

    /// <summary>
    /// Replays the committed records: each stripe record's bytes go to its slots' members (those
    /// present), in log order, so the last record of a stripe wins; then the members are flushed.
    /// In write-back mode a data record covered by a parity record of its stripe (its
    /// <c>writes_out</c> reaches back to it) is written onto the members as it is, and the parity
    /// record's parity after it; a data record no parity record covers becomes pending again:
    /// indexed for reads and left for the write-out workers (parity computed from the members then,
    /// degraded or not). Returns what to report.
    /// </summary>
    /// <exception cref="IOException">A journal read or member write failed.</exception>
    public string Replay()
    {
        bool wasClean = _sb.IsClean;
        (List<Record> records, long endBlock, long endSeq, string? stop) = Scan(_device, _sb, _io);
        if (records.Count >= _ring) throw new IOException($"md: journal {Spec}: {records.Count} records after the tail, more than a log of this size can hold");
        var buffer = new byte[MdMetadataIo.BufferBytes];
        var stripes = new HashSet<long>();
        Dictionary<long, long> covered = CoveredUpTo(records);
        int applied = 0;
        foreach (Record r in records)
        {
            if (r.Kind == Raid5JournalRecordKind.Data && !IsCovered(covered, r)) continue;
            applied++;
            long payloadByte = (r.Block + 1) * Raid5JournalLayout.BlockBytes;
            foreach (Raid5JournalEntry e in r.Entries)
            {
                MdMember m = _array.Slot(e.Slot);
                long bytes = (long)e.Sectors << Bio.SectorShift;
                if (m.Device is not null && m.State is MdMemberState.InSync or MdMemberState.Recovering)
                    for (long done = 0; done < bytes;)
                    {
                        int len = (int)Math.Min(buffer.Length, bytes - done);
                        _io.Read(_device, payloadByte + done, buffer.AsSpan(0, len));
                        _io.Write(m.Device, ((m.DataOffset + r.MemberSector + e.First) << Bio.SectorShift) + done, buffer.AsSpan(0, len));
                        done += len;
                    }
                payloadByte += bytes;
            }
            stripes.Add(r.MemberSector);
        }
        FlushMembers();
        _replayed = applied;
        int pending = 0;
        lock (_sync)
        {
            _head = endBlock;
            _headSeq = endSeq;
            // Every record is done but the data records no stripe record wrote out: those stay, in order.
            foreach (Record r in records)
            {
                int slot = (int)(r.Seq % _ring);
                _ringBlock[slot] = r.Block;
                _ringSeq[slot] = r.Seq;
                _ringDone[slot] = r.Kind != Raid5JournalRecordKind.Data || IsCovered(covered, r);
                _ringCount[slot] = 0;
                if (_ringDone[slot]) continue;
                r.Entries.CopyTo(_ringEntries.AsSpan(slot * _sb.RaidDisks));
                AddPending(slot, r.MemberSector, r.Entries.Length, WriteOutBlocks(r.Entries));
                pending++;
            }
            _memTailSeq = records.FirstOrDefault(r => !_ringDone[r.Seq % _ring]).Seq is long first and > 0 ? first : endSeq;
            _memTailBlock = _memTailSeq == endSeq ? endBlock : _ringBlock[_memTailSeq % _ring];
            _nextOut.AsSpan().Fill(_memTailSeq);
            _durTailBlock = _memTailBlock;
            _durTailSeq = _memTailSeq;
            WriteSuperblock(clean: false);
        }
        if (wasClean) return $"journal {Spec} ({ModeName(Mode)}): clean, nothing to replay";
        return $"journal {Spec} ({ModeName(Mode)}): replayed {applied} record(s) onto {stripes.Count} stripe(s); parity needs no resync" +
            (pending > 0 ? $"; {pending} acknowledged data record(s) pending write-out (reads see them)" : "") +
            (stop is not null && records.Count > 0 ? $" (the log ends where {stop})" : "");
    }

    /// <summary>Per stripe, the newest data record seq its parity records cover (write-out records: every data record of the stripe up to seq − writes_out).</summary>
    private static Dictionary<long, long> CoveredUpTo(List<Record> records)
    {
        var covered = new Dictionary<long, long>();
        foreach (Record r in records)
            if (r.WritesOut != 0 && r.Seq - r.WritesOut > covered.GetValueOrDefault(r.MemberSector)) covered[r.MemberSector] = r.Seq - r.WritesOut;
        return covered;
    }

    private static bool IsCovered(Dictionary<long, long> covered, Record r) => r.Seq <= covered.GetValueOrDefault(r.MemberSector);

    /// <summary>
    /// Log blocks a data record with <paramref name="entries"/> reserves for the parity record that
    /// writes it out: a header and the parity rows it spans. A merged write-out's parity record
    /// covers the union of its records' rows, never more than the sum of their reservations.
    /// </summary>
    private static int WriteOutBlocks(ReadOnlySpan<Raid5JournalEntry> entries)
    {
        long lo = long.MaxValue, hi = 0;
        foreach (Raid5JournalEntry e in entries)
        {
            lo = Math.Min(lo, e.First);
            hi = Math.Max(hi, e.First + e.Sectors);
        }
        return (int)(1 + (hi - lo + Raid5JournalLayout.BlockSectors - 1) / Raid5JournalLayout.BlockSectors);
    }

    /// <summary>
    /// What <c>pfnblock check</c> and <c>raid examine</c> print for a journal device: its superblock,
    /// and what an assembly would replay. Null when the device holds no journal superblock at all;
    /// otherwise the lines and whether the metadata is consistent. Reads only.
    /// </summary>
    public static (bool Consistent, List<string> Lines)? Describe(IBlockDevice device)
    {
        using var io = new MdMetadataIo(device.AddressSpace);
        var block = new byte[Raid5JournalLayout.BlockBytes];
        io.Read(device, 0, block);
        bool magic = BitConverter.ToUInt64(block) == Raid5JournalSuperblock.Magic;
        io.Read(device, Raid5JournalLayout.BlockBytes, block);
        if (!magic && BitConverter.ToUInt64(block) != Raid5JournalSuperblock.Magic) return null;
        Raid5JournalSuperblock sb;
        try { sb = ReadSuperblock(device, io); }
        catch (InvalidDataException e) { return (false, [$"RAID5 journal: {e.Message}"]); }
        (List<Record> records, long endBlock, long endSeq, string? stop) = Scan(device, sb, io);
        var lines = new List<string>
        {
            $"RAID5 journal of md array {sb.ArrayUuidText} ({sb.RaidDisks} members, {sb.ChunkSectors / 2}K chunks), {ModeName(sb.Mode)}",
            $"log: {sb.Blocks - Raid5JournalLayout.LogStart} blocks of {Raid5JournalLayout.BlockBytes} bytes, superblock generation {sb.Generation}, {(sb.IsClean ? "clean" : "active")}",
            $"tail: block {sb.TailBlock}, record {sb.TailSeq}; committed records after it end at block {endBlock}, record {endSeq}",
            records.Count == 0 ? "assembly would replay nothing"
                : $"assembly would replay {records.Count} record(s) onto {records.Select(r => r.MemberSector).Distinct().Count()} stripe(s) ({records.Sum(r => (long)r.PayloadBlocks) * Raid5JournalLayout.BlockBytes / 1024} KiB)",
        };
        if (stop is not null && !sb.IsClean) lines.Add($"the log ends where {stop}");
        if (sb.Mode == Raid5JournalMode.WriteBack && records.Count > 0)
        {
            Dictionary<long, long> covered = CoveredUpTo(records);
            int pending = records.Count(r => r.Kind == Raid5JournalRecordKind.Data && !IsCovered(covered, r));
            lines.Add($"write-back: {pending} acknowledged data record(s) not yet on the members (assembly writes them out)");
        }
        return (true, lines);
    }

    // ---- the write path --------------------------------------------------------------------------

    /// <summary>
    /// Writes the record of one write-through stripe write: member ranges <paramref name="entries"/>
    /// of the stripe at member sector <paramref name="memberSector"/>, their new bytes in
    /// <paramref name="set"/>'s buffers at the same places; returns when it (and every record before
    /// it) is durable. Waits while the log is full. False when the journal device failed (the write
    /// must fail; nothing reached the members).
    /// </summary>
    public bool Append(long memberSector, ReadOnlySpan<Raid5JournalEntry> entries, StripeBuffers set, out long seq) =>
        Append(Raid5JournalRecordKind.Stripe, memberSector, entries, set, 0, durable: true, out seq);

    /// <summary>
    /// Write-back: writes a data record of one stripe write (data ranges only, in the order of the
    /// array's sectors) and makes it pending; the write may complete on return. With
    /// <paramref name="durable"/> (a FUA or preflush write) it returns once the record and every
    /// record before it are durable; otherwise the next array flush makes it so (or a write-out of
    /// its stripe, before any member changes). Waits while the log has no room for it and for the
    /// parity records of every pending record. False when the journal device failed.
    /// </summary>
    public bool AppendData(long memberSector, ReadOnlySpan<Raid5JournalEntry> entries, StripeBuffers set, bool durable, out long seq) =>
        Append(Raid5JournalRecordKind.Data, memberSector, entries, set, 0, durable, out seq);

    /// <summary>
    /// Write-back write-out: writes the parity record of the stripe at <paramref name="memberSector"/>
    /// (<paramref name="parity"/>, runs of the parity slot's rows in <paramref name="set"/>), covering
    /// its pending data records up to seq <paramref name="coversUpTo"/> (<paramref name="covered"/>,
    /// the oldest of a <see cref="SnapshotStripe"/>); returns once it and every record before it are durable, so the
    /// members may change. Their reservations pay for it. False when the journal device failed.
    /// </summary>
    public bool AppendParity(long memberSector, ReadOnlySpan<Raid5JournalEntry> parity, StripeBuffers set, long coversUpTo, ReadOnlySpan<int> covered, out long seq) =>
        Append(Raid5JournalRecordKind.Parity, memberSector, parity, set, coversUpTo, durable: true, out seq, covered);

    /// <summary>Appends a record; <paramref name="paidBy"/> are the ring slots whose reservations pay for it (released once it is placed, not before: a writer could take the room).</summary>
    private bool Append(Raid5JournalRecordKind kind, long memberSector, ReadOnlySpan<Raid5JournalEntry> entries, StripeBuffers set, long coversUpTo, bool durable, out long seq,
        ReadOnlySpan<int> paidBy = default)
    {
        // The checksum before the lock: the payload is the caller's and nobody else's meanwhile.
        long sectors = 0;
        var crc = new Crc32C.Lanes(_seed);
        foreach (Raid5JournalEntry e in entries)
        {
            sectors += e.Sectors;
            crc.Append(set.At(e.Slot, (long)e.First << Bio.SectorShift), (long)e.Sectors << Bio.SectorShift);
        }
        int payload = (int)sectors; // a journal block is a sector: no padding
        long size = 1 + payload;
        int reserve = kind == Raid5JournalRecordKind.Data ? WriteOutBlocks(entries) : 0;
        lock (_sync)
        {
            long at;
            while (true)
            {
                if (_failed || _stopped) { seq = 0; return false; }
                bool ringFull = _headSeq - _durTailSeq >= _ring - 1;
                if (!ringFull && (at = Place(size)) >= 0 && (reserve == 0 || Admits(size + reserve))) break;
                // A data record reclaims in batches (an eighth of the log, or all once nothing is pending): each
                // reclaim flushes the members and writes the superblock, too dear to pay per record.
                if (_memTailSeq > _durTailSeq && !_failed &&
                    (reserve == 0 || ringFull || _pending == 0 || (Used(_durTailBlock, _durTailSeq) - Used(_memTailBlock, _memTailSeq)) * LowWatermark >= _sb.Blocks))
                {
                    Reclaim();
                    continue;
                }
                // Full of records still being written to the members (or written out): their Done frees space.
                if (_pending > 0) WakeWriteOut();
                Waiters++;
                Monitor.Wait(_sync, 100);
                Waiters--;
            }
            seq = _headSeq;
            foreach (int paying in paidBy)
            {
                _reserved -= _ringReserve[paying];
                _ringReserve[paying] = 0;
            }
            var header = new Span<byte>(_arena.BaseAddress, Raid5JournalLayout.BlockBytes);
            Raid5JournalRecord.EncodeHeader(header, seq, at, memberSector, entries, payload, crc.Value, _seed, kind, coversUpTo == 0 ? 0 : (uint)(seq - coversUpTo));
            // No FUA and no fence: the record is made durable below (with the ones before it) or by whoever relies on it later.
            if (_base != null)
            {
                byte* to = _base + at * Raid5JournalLayout.BlockBytes;
                PersistentMemory.CopyNonTemporal(to, _arena.BaseAddress, Raid5JournalLayout.BlockBytes);
                to += Raid5JournalLayout.BlockBytes;
                foreach (Raid5JournalEntry e in entries)
                {
                    uint n = (uint)e.Sectors << Bio.SectorShift;
                    PersistentMemory.CopyNonTemporal(to, set.At(e.Slot, (long)e.First << Bio.SectorShift), n);
                    to += n;
                }
            }
            else
            {
                Bio bio = _bio.Init(BioOp.Write, at * Raid5JournalLayout.BlockSectors).AddVec(_arena.PfnAt(0), 0, Raid5JournalLayout.BlockBytes);
                foreach (Raid5JournalEntry e in entries)
                {
                    (Pfn pfn, uint inFrame) = set.FrameOf(e.Slot, (long)e.First << Bio.SectorShift);
                    bio.AddVec(pfn, inFrame, (uint)e.Sectors << Bio.SectorShift);
                }
                if (_device.SubmitAndWait(bio) != BlockStatus.Ok)
                {
                    JournalFailed("record write");
                    return false;
                }
            }
            // Copied in directly, a record needs at least the fence to be durable, whatever the device's cache.
            if (_dirtyFrom < 0 && (_volatile || _base != null)) _dirtyFrom = at;
            int slot = (int)(seq % _ring);
            _ringBlock[slot] = at;
            _ringSeq[slot] = seq;
            _ringDone[slot] = false;
            _ringCount[slot] = 0;
            _head = at + size;
            _headSeq = seq + 1;
            _records++;
            if (durable && !PersistLocked())
            {
                JournalFailed("record flush");
                return false;
            }
            if (kind == Raid5JournalRecordKind.Data)
            {
                entries.CopyTo(_ringEntries.AsSpan(slot * _sb.RaidDisks));
                AddPending(slot, memberSector, entries.Length, reserve);
            }
            return true;
        }
    }

    /// <summary>
    /// Makes every record written so far durable (an array flush in write-back mode: the data
    /// records of the writes it covers). False when the journal device failed.
    /// </summary>
    public bool Persist()
    {
        if (!_volatile && _base == null) return !_failed;
        lock (_sync)
        {
            if (_failed) return false;
            if (PersistLocked()) return true;
            JournalFailed("flush");
            return false;
        }
    }

    /// <summary>
    /// Makes the log from the first block written since the last persist up to the head durable:
    /// with direct access the range alone (two where the log wrapped), else a flush of the device.
    /// Under the lock.
    /// </summary>
    private bool PersistLocked()
    {
        if (_dirtyFrom < 0) return true;
        try
        {
            if (_base != null) PersistentMemory.Drain(); // the copies' non-temporal stores first
            if (_ntDurable) return Clean(); // a MAP_SYNC mapping: the fence was it
            if (_dax is { } dax)
            {
                long from = _dirtyFrom * Raid5JournalLayout.BlockBytes, to = _head * Raid5JournalLayout.BlockBytes;
                if (_head > _dirtyFrom) dax.PersistRange(from, to - from);
                else
                {
                    // Wrapped since: up to the log's end, then from its start.
                    dax.PersistRange(from, _sb.Blocks * Raid5JournalLayout.BlockBytes - from);
                    dax.PersistRange(Raid5JournalLayout.LogStart * Raid5JournalLayout.BlockBytes, to - Raid5JournalLayout.LogStart * Raid5JournalLayout.BlockBytes);
                }
            }
            else if (_device.SubmitAndWait(_flush.Init(BioOp.Flush, 0)) != BlockStatus.Ok) return false;
        }
        catch (IOException) { return false; }
        return Clean();

        bool Clean()
        {
            _dirtyFrom = -1;
            return true;
        }
    }

    /// <summary>Write-back admission: the log keeps room for <paramref name="blocks"/> more, every pending record's write-out record and the slack a wrap wastes. Under the lock.</summary>
    private bool Admits(long blocks) =>
        _sb.Blocks - Raid5JournalLayout.LogStart - Used(_durTailBlock, _durTailSeq) >= blocks + _reserved + _slack;

    /// <summary>Makes ring slot <paramref name="slot"/> a pending data record of the stripe at <paramref name="memberSector"/>: last in its stripe's chain. Under the lock.</summary>
    private void AddPending(int slot, long memberSector, int count, int reserve)
    {
        _ringStripe[slot] = memberSector;
        _ringCount[slot] = count;
        _ringReserve[slot] = reserve;
        _ringNext[slot] = -1;
        _reserved += reserve;
        ref (int Head, int Tail) chain = ref System.Runtime.InteropServices.CollectionsMarshal.GetValueRefOrAddDefault(_pendingByStripe, memberSector, out bool exists);
        if (exists) _ringNext[chain.Tail] = slot;
        else chain.Head = slot;
        chain.Tail = slot;
        _pending++;
        _dataRecords++;
        // Write-out is lazy (as md's r5c): woken past the high watermark, else it finds work when idle.
        if (!_outWoken && Used(_memTailBlock, _memTailSeq) * HighWatermark > _sb.Blocks)
        {
            _outWoken = true; // one wake, not one per write: the workers keep going until the low watermark
            WakeWriteOut();
        }
    }

    /// <summary>Write-out starts when more than 1/<c>HighWatermark</c> of the log is in use …</summary>
    private const int HighWatermark = 4;
    /// <summary>… and goes on until no more than 1/<c>LowWatermark</c> is (or the array is idle, or a stop drains it).</summary>
    private const int LowWatermark = 8;

    /// <summary>
    /// Whether a write-out worker should write a record out now: a stop drains the log, a writer
    /// waits for room, the log is past its low watermark, or no data record was appended since
    /// the last look (<paramref name="lastSeen"/>, updated): an idle array is written out fully.
    /// </summary>
    public bool WriteOutWanted(ref long lastSeen)
    {
        lock (_sync)
        {
            if (_pending == 0)
            {
                _outWoken = false;
                return false;
            }
            bool idle = _dataRecords == lastSeen;
            lastSeen = _dataRecords;
            bool wanted = _draining || Waiters > 0 || idle || Used(_memTailBlock, _memTailSeq) * LowWatermark > _sb.Blocks;
            if (!wanted) _outWoken = false;
            return wanted;
        }
    }

    /// <summary>True when the stripe at member sector <paramref name="memberSector"/> has data records not yet written out (reads must lay them over the members).</summary>
    public bool HasPending(long memberSector)
    {
        if (_pending == 0) return false;
        lock (_sync) return _pendingByStripe.ContainsKey(memberSector);
    }

    /// <summary>
    /// Lays the pending data of slot <paramref name="slot"/>'s chunk sectors [<paramref name="lo"/>,
    /// <paramref name="hi"/>) of the stripe at <paramref name="memberSector"/> over buffer
    /// <paramref name="buffer"/> of <paramref name="set"/> (at each sector's place in the chunk),
    /// oldest record first. The caller holds the stripe lock, so no record of the stripe is written
    /// out (and its log space reused) meanwhile. False when the journal could not be read.
    /// </summary>
    public bool Overlay(long memberSector, int slot, long lo, long hi, StripeBuffers set, int buffer)
    {
        lock (_sync)
        {
            if (!_pendingByStripe.TryGetValue(memberSector, out (int Head, int Tail) chain)) return true;
            for (int r = chain.Head; r >= 0; r = _ringNext[r])
            {
                long payloadByte = (_ringBlock[r] + 1) * Raid5JournalLayout.BlockBytes;
                foreach (Raid5JournalEntry e in _ringEntries.AsSpan(r * _sb.RaidDisks, _ringCount[r]))
                {
                    long a = Math.Max(lo, e.First), b = Math.Min(hi, e.First + e.Sectors);
                    if (e.Slot == slot && a < b)
                    {
                        if (ReadLog(_readBio, (payloadByte >> Bio.SectorShift) + a - e.First, set, buffer, a << Bio.SectorShift, (int)((b - a) << Bio.SectorShift)) != BlockStatus.Ok) return false;
                    }
                    payloadByte += (long)e.Sectors << Bio.SectorShift;
                }
            }
            return true;
        }
    }

    /// <summary>
    /// The stripe (first member sector) of the oldest pending data record of the stripes write-out
    /// worker <paramref name="worker"/> owns: its next to write out. False when none is pending.
    /// </summary>
    public bool NextWriteOutStripe(int worker, out long memberSector)
    {
        lock (_sync)
        {
            // Records before the tail are all done (and their slots may hold newer records).
            if (_nextOut[worker] < _memTailSeq) _nextOut[worker] = _memTailSeq;
            for (; _nextOut[worker] < _headSeq; _nextOut[worker]++)
            {
                int slot = (int)(_nextOut[worker] % _ring);
                // A pending data record (not done, with entries: other records' slots have none) of a stripe it owns;
                // another worker's records are never this one's, so it passes them for good.
                if (_ringDone[slot] || _ringCount[slot] == 0 || OwnerOf(_ringStripe[slot]) != worker) continue;
                memberSector = _ringStripe[slot];
                return true;
            }
            memberSector = 0;
            return false;
        }
    }

    /// <summary>
    /// Write-out: the pending data records of the stripe at <paramref name="memberSector"/>, oldest
    /// first (at most <paramref name="slots"/>' length): their ring slots. The records stay pending (reads keep laying them over) until
    /// <see cref="WrittenOut"/>; only the stripe's write-out worker removes them, so the slots stay theirs.
    /// </summary>
    public int SnapshotStripe(long memberSector, Span<int> slots)
    {
        lock (_sync)
        {
            int n = 0;
            if (_pendingByStripe.TryGetValue(memberSector, out (int Head, int Tail) chain))
                for (int r = chain.Head; r >= 0 && n < slots.Length; r = _ringNext[r]) slots[n++] = r;
            return n;
        }
    }

    /// <summary>The seq of the pending record in ring slot <paramref name="slot"/> (from <see cref="SnapshotStripe"/>).</summary>
    public long SeqOf(int slot) => _ringSeq[slot];

    /// <summary>The entries of the pending record in ring slot <paramref name="slot"/> (from <see cref="SnapshotStripe"/>) and the log block of its payload.</summary>
    public ReadOnlySpan<Raid5JournalEntry> EntriesOf(int slot, out long payloadBlock)
    {
        payloadBlock = _ringBlock[slot] + 1;
        return _ringEntries.AsSpan(slot * _sb.RaidDisks, _ringCount[slot]);
    }

    /// <summary>
    /// Reads <paramref name="bytes"/> from log block <paramref name="block"/> into buffer
    /// <paramref name="buffer"/> of <paramref name="set"/> at <paramref name="offset"/>: a memory copy
    /// from the pinned log, else with <paramref name="bio"/> (the caller's). No lock is taken: a
    /// pending record's blocks are not reused.
    /// </summary>
    public BlockStatus ReadLog(Bio bio, long block, StripeBuffers set, int buffer, long offset, int bytes)
    {
        if (_base != null)
        {
            Buffer.MemoryCopy(_base + block * Raid5JournalLayout.BlockBytes, set.At(buffer, offset), bytes, bytes);
            return BlockStatus.Ok;
        }
        (Pfn pfn, uint inFrame) = set.FrameOf(buffer, offset);
        return _device.SubmitAndWait(bio.Init(BioOp.Read, block * Raid5JournalLayout.BlockSectors).AddVec(pfn, inFrame, (uint)bytes));
    }

    /// <summary>
    /// Write-back: the data records in <paramref name="slots"/> (a snapshot of their stripe, oldest
    /// first) and their parity record <paramref name="paritySeq"/> are on the members: they leave
    /// the index and their space may be reclaimed. Called under the stripe lock, so a read of the
    /// stripe sees either the records or the members that hold them.
    /// </summary>
    public void WrittenOut(ReadOnlySpan<int> slots, long paritySeq)
    {
        lock (_sync)
        {
            foreach (int slot in slots)
            {
                long stripe = _ringStripe[slot];
                ref (int Head, int Tail) chain = ref System.Runtime.InteropServices.CollectionsMarshal.GetValueRefOrNullRef(_pendingByStripe, stripe);
                if (!System.Runtime.CompilerServices.Unsafe.IsNullRef(ref chain))
                {
                    // The snapshot is the chain's oldest part, so each is its head; unlink it wherever it is all the same.
                    int prev = -1;
                    for (int r = chain.Head; r >= 0; prev = r, r = _ringNext[r])
                    {
                        if (r != slot) continue;
                        if (prev < 0) chain.Head = _ringNext[r];
                        else _ringNext[prev] = _ringNext[r];
                        if (chain.Tail == r) chain.Tail = prev;
                        _pending--;
                        break;
                    }
                    if (chain.Head < 0) _pendingByStripe.Remove(stripe);
                }
                _reserved -= _ringReserve[slot];
                _ringReserve[slot] = 0;
                _ringCount[slot] = 0;
                _writtenOut++;
                _ringDone[slot] = true;
            }
            if (paritySeq != 0) _ringDone[paritySeq % _ring] = true;
            AdvanceMemTail();
        }
    }
    /// <summary>
    /// Waits until every data record is written out (a clean stop), the journal failed, or
    /// <paramref name="alive"/> says every write-out worker still runs (false: one ended). True when none is pending.
    /// </summary>
    public bool WaitWrittenOut(Func<bool> alive)
    {
        lock (_sync)
        {
            _draining = true;
            while (_pending > 0 && !_failed && alive())
            {
                WakeWriteOut();
                Monitor.Wait(_sync, 50);
            }
        }
        return _pending == 0;
    }

    /// <summary>Blocks in use from the durable tail to the head, as a fraction of the log.</summary>
    public double UsedFraction
    {
        get { lock (_sync) return (double)Used(_durTailBlock, _durTailSeq) / (_sb.Blocks - Raid5JournalLayout.LogStart); }
    }

    /// <summary>Record <paramref name="seq"/>'s member writes are done: its space may be reclaimed once the members are flushed.</summary>
    public void Done(long seq)
    {
        lock (_sync) MarkDone((int)(seq % _ring));
    }

    private void MarkDone(int slot)
    {
        _ringDone[slot] = true;
        AdvanceMemTail();
    }

    /// <summary>Moves the in-memory tail past the done records and wakes writers waiting for room. Under the lock.</summary>
    private void AdvanceMemTail()
    {
        while (_memTailSeq < _headSeq && _ringDone[_memTailSeq % _ring]) _memTailSeq++;
        _memTailBlock = _memTailSeq == _headSeq ? _head : _ringBlock[_memTailSeq % _ring];
        Monitor.PulseAll(_sync);
    }

    /// <summary>Where a record of <paramref name="size"/> blocks goes, or −1 when the log has no room before the durable tail. Under the lock.</summary>
    private long Place(long size)
    {
        long end = _sb.Blocks, start = Raid5JournalLayout.LogStart;
        if (_durTailSeq == _headSeq) return _head + size <= end ? _head : start; // nothing live
        if (_head > _durTailBlock)
            return _head + size <= end ? _head : start + size <= _durTailBlock ? start : -1;
        return _head + size <= _durTailBlock ? _head : -1; // wrapped: up to the tail
    }

    /// <summary>Blocks from a tail to the head.</summary>
    private long Used(long tailBlock, long tailSeq) =>
        tailSeq == _headSeq ? 0 : _head > tailBlock ? _head - tailBlock : _sb.Blocks - tailBlock + _head - Raid5JournalLayout.LogStart;

    /// <summary>Moves the durable tail to the oldest record not done: members flushed first (what they hold must survive a crash once the journal forgets it). Under the lock.</summary>
    private void Reclaim()
    {
        if (!FlushMembers()) return;
        _durTailBlock = _memTailBlock;
        _durTailSeq = _memTailSeq;
        _reclaims++;
        try { WriteSuperblock(clean: false); }
        catch (IOException) { JournalFailed("superblock write"); }
    }

    private bool FlushMembers()
    {
        bool ok = true;
        foreach (MdMember m in _array.WritableMembers())
            if ((m.Device!.Features & DeviceFeatures.WriteCache) != 0 && m.Device.SubmitAndWait(_flush.Init(BioOp.Flush, 0)) != BlockStatus.Ok)
            {
                _array.MemberFailed(m, BlockStatus.IoError, "flush before journal reclaim");
                ok = false;
            }
        return ok;
    }

    /// <summary>Writes the superblock with the durable tail into the older copy. Under the lock (or before I/O starts).</summary>
    private void WriteSuperblock(bool clean)
    {
        _sb.Generation++;
        _sb.TailBlock = _durTailBlock >= _sb.Blocks ? Raid5JournalLayout.LogStart : _durTailBlock;
        _sb.TailSeq = _durTailSeq;
        _sb.Flags = clean ? Raid5JournalSuperblock.FlagClean : 0;
        var block = new byte[Raid5JournalLayout.BlockBytes];
        _sb.Encode(block);
        _io.Write(_device, (long)(_sb.Generation % 2) * Raid5JournalLayout.BlockBytes, block);
    }

    private void JournalFailed(string what)
    {
        if (_failed) return;
        _failed = true;
        Monitor.PulseAll(_sync);
        WakeWriteOut();
        _array.JournalFailed($"journal {Spec} failed ({what}): writes are refused from now on, the array is read-only (as md does)");
    }

    /// <summary>
    /// Stops the journal: with <paramref name="clean"/> (every write done, the members flushed by the
    /// caller) the log is emptied and the superblock marked clean; otherwise left as it is for replay.
    /// </summary>
    public void Stop(bool clean)
    {
        lock (_sync)
        {
            if (_stopped) return;
            _stopped = true;
            Monitor.PulseAll(_sync);
            if (!clean || _failed || _memTailSeq != _headSeq || LeaveLogOnStop) return;
            _durTailBlock = _head;
            _durTailSeq = _headSeq;
            try { WriteSuperblock(clean: true); }
            catch (IOException) { _failed = true; }
        }
    }

    public void Dispose()
    {
        Stop(clean: false);
        foreach (DaxRange r in _pins) r.Unpin();
        _arena.Dispose();
        _io.Dispose();
        foreach (AutoResetEvent e in _outWakes) e.Dispose();
    }
}
