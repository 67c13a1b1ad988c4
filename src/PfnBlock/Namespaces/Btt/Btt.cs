using System.Runtime.CompilerServices;
using PfnBlock.Memory;

namespace PfnBlock.Namespaces.Btt;

/// <summary>How a BTT is opened or laid out.</summary>
public sealed record BttOptions
{
    /// <summary>Exported sector size (the namespace's sector size or the pool's block size).</summary>
    public required uint LbaSize { get; init; }
    /// <summary>The container's uuid that every info block's parent_uuid must equal.</summary>
    public Guid ParentUuid { get; init; }
    /// <summary>Kernel or pmemblk conventions.</summary>
    public BttFlavor Flavor { get; init; } = BttFlavor.Kernel;
    /// <summary>Lanes; 0 picks min(nfree, processor count).</summary>
    public int Lanes { get; init; }
    /// <summary>
    /// Accept media with no layout at all and write it on the first write (libpmemblk's behaviour
    /// for fresh pools); reads return zeros until then.
    /// </summary>
    public bool LayOutOnFirstWrite { get; init; }
    /// <summary>The media is known to be zero (pmemblk <c>is_zeroed</c>): the map need not be cleared at layout.</summary>
    public bool MediaIsZeroed { get; init; }
    /// <summary>A deliberate ordering bug in the write path, for the crash explorer's mutation tests.</summary>
    internal OrderingMutation Mutation { get; init; }
}

/// <summary>A point in the write path, for fault injection in tests.</summary>
internal enum BttWriteStep
{
    /// <summary>The data is in the free block; nothing else changed.</summary>
    DataWritten,
    /// <summary>The first 8 bytes (lba, old_map) of the flog entry are stored; seq is not.</summary>
    FlogFirstHalf,
    /// <summary>The flog entry is complete; the map still points at the old block.</summary>
    FlogWritten,
}

/// <summary>What reading the info blocks of one arena found.</summary>
internal sealed record ArenaInfoRead(int Index, long Offset, long Size, BttInfoBlock? Info, string? PrimaryError, string? BackupError, bool PrimarySigned, bool BackupSigned)
{
    /// <summary>The primary was invalid and the backup is used.</summary>
    public bool UsedBackup => Info is not null && PrimaryError is not null;
}

/// <summary>
/// A Block Translation Table over a <see cref="BttMedia"/>: power-fail-atomic sector writes on
/// byte-addressable memory, in the on-media format of Linux's BTT v1.1 and PMDK's libpmemblk.
/// </summary>
/// <remarks>
/// <para>A write goes to the lane's free block, never over live data: take the lane's free block,
/// wait until no reader has it in the read tracking table, copy the data with non-temporal
/// stores and fence, then under the map lock write the flog entry (two 8-byte halves, seq last)
/// and the map entry; the old block becomes the lane's free block. A crash before the flog seq
/// lands leaves the old data mapped; after it, open completes the map update from the flog.</para>
/// <para>Persistence: on a MAP_SYNC mapping every step is flushed and fenced before the next.
/// On a page-cache mapping (tmpfs, non-DAX files) the steps are ordered by the CPU (a fence after
/// the non-temporal data copy, plain stores after), which makes each sector atomic against a
/// process crash; durability against power loss comes from msync: a FUA write msyncs its data
/// block, then its flog line, then its map entry, and a flush msyncs the whole mapping.</para>
/// </remarks>
public sealed unsafe class Btt
{
    private readonly BttMedia _media;
    private readonly BttOptions _options;
    private readonly bool _cpuCache;
    private readonly Lanes _lanes;
    private readonly Lock _layoutLock = new();
    private readonly int _lbaSize;
    private Arena[]? _arenas;
    private readonly long[] _arenaStarts;
    private readonly List<string> _warnings = [];
    private readonly OrderingMutation _mutation;

    internal Action<BttWriteStep>? StepHook;

    private Btt(BttMedia media, BttOptions options, Arena[]? arenas, long[] arenaStarts, long nlba)
    {
        _media = media;
        _options = options;
        _cpuCache = media.Persistence == PersistenceMode.CpuCache;
        _lbaSize = (int)options.LbaSize;
        _mutation = options.Mutation;
        _arenas = arenas;
        _arenaStarts = arenaStarts;
        ExternalNlba = nlba;
        int lanes = options.Lanes > 0 ? options.Lanes : Environment.ProcessorCount;
        _lanes = new Lanes(Math.Min(lanes, (int)BttInfoBlock.DefaultNfree));
    }

    /// <summary>Sectors the BTT exports over all its arenas (for a fresh pool, what its layout will export); valid sector numbers are below it.</summary>
    public long ExternalNlba { get; }
    /// <summary>Bytes per sector (<see cref="BttOptions.LbaSize"/>): every <see cref="Read"/> and <see cref="Write"/> moves exactly this many.</summary>
    public int LbaSize => _lbaSize;
    /// <summary>Writers that can be inside <see cref="Write"/> at once: min(nfree, <see cref="BttOptions.Lanes"/> or the processor count); more wait.</summary>
    public int LaneCount => _lanes.Count;
    /// <summary>Arenas (0 until laid out).</summary>
    public int ArenaCount => _arenas?.Length ?? 0;
    /// <summary>False for a fresh pmemblk pool whose layout is written on the first write.</summary>
    public bool IsLaidOut => Volatile.Read(ref _arenas) is not null;
    /// <summary>Interrupted writes whose map update was completed from the flog at open.</summary>
    public int RecoveredWrites { get; private set; }
    /// <summary>Things found at open that did not stop it (e.g. a primary info block restored from its backup).</summary>
    public IReadOnlyList<string> Warnings => _warnings;
    /// <summary>Kernel or pmemblk conventions, fixed by <see cref="BttOptions.Flavor"/> at open.</summary>
    public BttFlavor Flavor => _options.Flavor;
    /// <summary>The info block in use for each arena (the backup where the primary is invalid); empty until laid out.</summary>
    public IReadOnlyList<BttInfoBlock> ArenaInfos => _arenas?.Select(a => a.Info).ToArray() ?? [];

    /// <summary>The smallest media a BTT fits in (one 16 MiB arena).</summary>
    public const long MinSize = BttInfoBlock.MinArenaSize;

    /// <summary>Writes a new, empty layout over the whole media (every sector reads as zeros).</summary>
    public static void Format(BttMedia media, BttOptions options)
    {
        IReadOnlyList<long> sizes = BttInfoBlock.ArenaSizes(media.Length, options.Flavor);
        if (sizes.Count == 0) throw new ArgumentException($"{media.Length} bytes is too small for a BTT (at least {MinSize} bytes)");
        Guid uuid = Guid.NewGuid();
        long offset = 0;
        byte[] block = new byte[BttInfoBlock.Size];
        for (int i = 0; i < sizes.Count; i++)
        {
            BttInfoBlock info = BttInfoBlock.ForArena(sizes[i], i == sizes.Count - 1, options.LbaSize, options.Flavor, uuid, options.ParentUuid);
            byte* arena = media.Address + offset;
            if (!options.MediaIsZeroed) PmemStore.Clear(arena + info.MapOff, (nuint)(info.FlogOff - info.MapOff));
            PmemStore.Clear(arena + info.FlogOff, (nuint)(info.Info2Off - info.FlogOff));
            uint initialFlags = options.Flavor == BttFlavor.Pmemblk ? MapEntry.ZeroFlag : 0;
            for (uint lane = 0; lane < info.Nfree; lane++)
            {
                // Entry 0 = {lba = lane, old = new = the lane's free block, seq 1}, in the two halves a write uses.
                ulong* e = (ulong*)(arena + info.FlogOff + lane * BttInfoBlock.FlogGroupSize);
                uint free = (info.ExternalNlba + lane) | initialFlags;
                PmemStore.Write64(e, lane | (ulong)free << 32);
                PmemStore.Write64(e + 1, free | 1UL << 32);
            }
            media.PersistRange(offset + info.MapOff, info.Info2Off - info.MapOff);
            // Backup first: a valid primary then implies a complete layout.
            info.Write(block);
            PmemStore.Copy(arena + info.Info2Off, block);
            media.PersistRange(offset + info.Info2Off, BttInfoBlock.Size);
            PmemStore.Copy(arena, block);
            media.PersistRange(offset, BttInfoBlock.Size);
            offset += sizes[i];
        }
    }

    /// <summary>
    /// Opens the BTT on <paramref name="media"/>: validates every arena's info block (falling back
    /// to the backup copy, with a warning), rebuilds the lanes' free blocks from the flog and
    /// completes any map update a crash interrupted.
    /// </summary>
    /// <exception cref="InvalidNamespaceException">No usable layout: both info blocks of an arena are invalid, a flog pair is impossible, or a flog entry points outside its arena.</exception>
    public static Btt Open(BttMedia media, BttOptions options)
    {
        ArenaInfoRead[] reads = ReadArenaInfos(media, options);
        if (reads.Length == 0) throw new InvalidNamespaceException($"{media.Length} bytes is too small for a BTT (at least {MinSize} bytes)");
        long[] starts = new long[reads.Length];
        if (reads.All(r => r.Info is null && !r.PrimarySigned && !r.BackupSigned) && options.LayOutOnFirstWrite)
            return new Btt(media, options, null, starts, ExternalNlbaFor(media.Length, options.LbaSize, options.Flavor, starts));
        var warnings = new List<string>();
        var infos = new BttInfoBlock[reads.Length];
        long nlba = 0;
        for (int i = 0; i < reads.Length; i++)
        {
            ArenaInfoRead r = reads[i];
            if (r.Info is null)
                throw new InvalidNamespaceException(!r.PrimarySigned && !r.BackupSigned
                    ? $"arena {i}: no BTT layout (no BTT_ARENA_INFO signature in either info block)"
                    : $"arena {i}: both BTT info blocks are invalid (primary: {r.PrimaryError}; backup: {r.BackupError})");
            if (r.UsedBackup) warnings.Add($"arena {i}: primary BTT info block is invalid ({r.PrimaryError}); using the backup copy (run 'pfnblock check --repair' to restore the primary)");
            infos[i] = r.Info;
            starts[i] = nlba;
            nlba += r.Info.ExternalNlba;
        }
        var btt = new Btt(media, options, null, starts, nlba);
        var arenas = new Arena[reads.Length];
        for (int i = 0; i < reads.Length; i++)
        {
            arenas[i] = new Arena(media, i, reads[i].Offset, starts[i], infos[i], btt._lanes.Count);
            btt.RecoveredWrites += btt.LoadFlog(arenas[i], repair: true);
        }
        btt._warnings.AddRange(warnings);
        btt._arenas = arenas;
        return btt;
    }

    /// <summary>The sectors a new layout over <paramref name="rawSize"/> bytes exports (libpmemblk's <c>write_layout(write = 0)</c>).</summary>
    public static long ExternalNlbaFor(long rawSize, uint lbaSize, BttFlavor flavor) => ExternalNlbaFor(rawSize, lbaSize, flavor, null);

    private static long ExternalNlbaFor(long rawSize, uint lbaSize, BttFlavor flavor, long[]? arenaStarts)
    {
        IReadOnlyList<long> sizes = BttInfoBlock.ArenaSizes(rawSize, flavor);
        long total = 0;
        for (int i = 0; i < sizes.Count; i++)
        {
            if (arenaStarts is not null) arenaStarts[i] = total;
            total += BttInfoBlock.ForArena(sizes[i], i == sizes.Count - 1, lbaSize, flavor, Guid.Empty, Guid.Empty).ExternalNlba;
        }
        return total;
    }

    /// <summary>Reads and validates the info blocks of every arena the media's size implies.</summary>
    internal static ArenaInfoRead[] ReadArenaInfos(BttMedia media, BttOptions options)
    {
        IReadOnlyList<long> sizes = BttInfoBlock.ArenaSizes(media.Length, options.Flavor);
        var reads = new ArenaInfoRead[sizes.Count];
        long offset = 0;
        for (int i = 0; i < sizes.Count; i++)
        {
            long room = media.Length - offset;
            bool last = i == sizes.Count - 1;
            BttInfoBlock? Parse(long at, out string? error, out bool signed)
            {
                var span = new ReadOnlySpan<byte>(media.Address + at, BttInfoBlock.Size);
                signed = BttInfoBlock.HasSignature(span);
                if (!BttInfoBlock.TryParse(span, out BttInfoBlock? info, out error)) return null;
                error = info!.Validate(room, options.LbaSize, options.ParentUuid, options.Flavor);
                if (error is null && info.ArenaSize != sizes[i]) error = $"arena size {info.ArenaSize} differs from the expected {sizes[i]}";
                if (error is null && (info.NextOff == 0) != last) error = last ? $"next arena offset {info.NextOff} points past the media" : "next arena offset is 0 but the media holds another arena";
                return error is null ? info : null;
            }
            BttInfoBlock? primary = Parse(offset, out string? pErr, out bool pSigned);
            BttInfoBlock? backup = Parse(offset + sizes[i] - BttInfoBlock.Size, out string? bErr, out bool bSigned);
            reads[i] = new ArenaInfoRead(i, offset, sizes[i], primary ?? backup, pErr, bErr, pSigned, bSigned);
            offset += sizes[i];
        }
        return reads;
    }

    /// <summary>
    /// Rebuilds the lanes' free blocks from the flog and, when <paramref name="repair"/>, completes
    /// interrupted map updates (new_map ≠ map[lba] and old_map = map[lba]).
    /// </summary>
    /// <returns>The number of map entries completed (or, without repair, found pending).</returns>
    internal int LoadFlog(Arena a, bool repair)
    {
        // Validate every lane before writing anything: a refused open leaves the media untouched.
        var current = new FlogEntry[a.Info.Nfree];
        var seen = new HashSet<uint>();
        for (int lane = 0; lane < current.Length; lane++)
        {
            FlogEntry e0 = a.ReadFlog(lane, 0), e1 = a.ReadFlog(lane, 1);
            int cur = LogGroup.Current(e0, e1, out string? error);
            if (cur < 0) throw new InvalidNamespaceException($"arena {a.Index} flog lane {lane}: {error}");
            FlogEntry c = cur == 0 ? e0 : e1;
            if (c.Lba >= a.ExternalNlba || c.OldBlock >= a.InternalNlba || c.NewBlock >= a.InternalNlba)
                throw new InvalidNamespaceException($"arena {a.Index} flog lane {lane}: entry (lba {c.Lba}, old {c.OldBlock}, new {c.NewBlock}) points outside the arena ({a.ExternalNlba} sectors, {a.InternalNlba} blocks)");
            if (!seen.Add(c.OldBlock)) throw new InvalidNamespaceException($"arena {a.Index} flog lane {lane}: free block {c.OldBlock} is also another lane's free block");
            current[lane] = c;
            a.Free[lane] = new LaneFreeState { Block = c.OldBlock, NextSlot = 1 - cur, Seq = c.Seq };
        }
        int pending = 0;
        foreach (FlogEntry c in current)
        {
            if (c.OldBlock == c.NewBlock) continue;
            uint post = new MapEntry(Volatile.Read(ref a.Map[c.Lba])).PostMap(c.Lba);
            if (post == c.NewBlock || post != c.OldBlock) continue;
            pending++;
            if (!repair) continue;
            uint entry = _options.Flavor == BttFlavor.Pmemblk ? c.NewMap : MapEntry.Normal(c.NewBlock).Raw;
            PmemStore.Write32(a.Map + c.Lba, entry);
            _media.PersistRange((byte*)(a.Map + c.Lba) - _media.Address, MapEntry.Size);
        }
        return pending;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private Arena Locate(Arena[] arenas, long lba, out uint premap)
    {
        int i = 0;
        while (i < arenas.Length - 1 && lba >= arenas[i + 1].ExternalStart) i++;
        premap = (uint)(lba - arenas[i].ExternalStart);
        return arenas[i];
    }

    /// <summary>Reads sector <paramref name="lba"/> into <paramref name="dst"/> (<see cref="LbaSize"/> bytes).</summary>
    /// <returns><see cref="BttStatus.MediaError"/> for a sector in the error state, <see cref="BttStatus.BadMapEntry"/> for one whose map entry points outside the arena.</returns>
    public BttStatus Read(long lba, byte* dst)
    {
        if ((ulong)lba >= (ulong)ExternalNlba) return BttStatus.OutOfRange;
        Arena[]? arenas = Volatile.Read(ref _arenas);
        if (arenas is null) { new Span<byte>(dst, _lbaSize).Clear(); return BttStatus.Ok; }
        Arena a = Locate(arenas, lba, out uint premap);
        uint raw = Volatile.Read(ref a.Map[premap]);
        var e = new MapEntry(raw);
        if (e.IsError) return BttStatus.MediaError;
        if (e.IsZero || e.IsInitial) { new Span<byte>(dst, _lbaSize).Clear(); return BttStatus.Ok; }
        uint block = raw & MapEntry.LbaMask;
        if (block >= a.InternalNlba) return BttStatus.BadMapEntry;
        // Publish, then re-read: if the map moved meanwhile, the block may already be a writer's free block.
        int slot = a.Rtt.Enter(block);
        try
        {
            while (true)
            {
                uint again = Volatile.Read(ref a.Map[premap]);
                if (again == raw) break;
                raw = again;
                e = new MapEntry(raw);
                if (e.IsError) return BttStatus.MediaError;
                if (e.IsZero || e.IsInitial) { new Span<byte>(dst, _lbaSize).Clear(); return BttStatus.Ok; }
                block = raw & MapEntry.LbaMask;
                if (block >= a.InternalNlba) return BttStatus.BadMapEntry;
                a.Rtt.Update(slot, block);
            }
            Buffer.MemoryCopy(a.Block(block), dst, _lbaSize, _lbaSize);
            return BttStatus.Ok;
        }
        finally { a.Rtt.Exit(slot); }
    }

    /// <summary>Writes sector <paramref name="lba"/> atomically from <paramref name="src"/>.</summary>
    /// <param name="lba">Sector number, below <see cref="ExternalNlba"/>.</param>
    /// <param name="src"><see cref="LbaSize"/> bytes.</param>
    /// <param name="durable">FUA: on a page-cache mapping, msync each step so the write survives power loss when this returns.</param>
    /// <returns><see cref="BttStatus.ArenaInError"/> when the arena refuses writes, <see cref="BttStatus.BadMapEntry"/> when the sector's old map entry points outside the arena (nothing is changed then).</returns>
    public BttStatus Write(long lba, byte* src, bool durable = false)
    {
        if ((ulong)lba >= (ulong)ExternalNlba) return BttStatus.OutOfRange;
        Arena[] arenas = Volatile.Read(ref _arenas) ?? LayOut();
        Arena a = Locate(arenas, lba, out uint premap);
        if (a.ReadOnly) return BttStatus.ArenaInError;
        int lane = _lanes.Acquire();
        try
        {
            ref LaneFreeState free = ref a.Free[lane];
            uint newBlock = free.Block;
            a.Rtt.WaitWhileRead(newBlock);
            byte* dst = a.Block(newBlock);
            if (!Mutated(OrderingMutation.BttMapBeforeData)) WriteData(dst, src, durable);
            StepHook?.Invoke(BttWriteStep.DataWritten);

            Lock mapLock = a.MapLock(premap);
            mapLock.Enter();
            try
            {
                uint oldRaw = Volatile.Read(ref a.Map[premap]);
                var old = new MapEntry(oldRaw);
                uint oldBlock = old.PostMap(premap);
                if (oldBlock >= a.InternalNlba) return BttStatus.BadMapEntry;
                uint oldField, newField;
                if (_options.Flavor == BttFlavor.Pmemblk)
                {
                    oldField = old.IsInitial ? premap | MapEntry.NormalFlags : oldRaw;
                    newField = newBlock | MapEntry.NormalFlags;
                }
                else
                {
                    oldField = oldBlock;
                    newField = newBlock;
                }
                uint seq = FlogEntry.NextSeq(free.Seq);
                ulong* slot = a.FlogSlot(lane, free.NextSlot);
                if (Mutated(OrderingMutation.BttFlogSeqBeforeEntry))
                {
                    PmemStore.Write64(slot + 1, newField | (ulong)seq << 32);
                    PersistMeta(slot, FlogEntry.Size, durable);
                    PmemStore.Write64(slot, premap | (ulong)oldField << 32);
                    PersistMeta(slot, FlogEntry.Size, durable);
                }
                else
                {
                    PmemStore.Write64(slot, premap | (ulong)oldField << 32);
                    PersistMeta(slot, 8, durable: false);
                    StepHook?.Invoke(BttWriteStep.FlogFirstHalf);
                    PmemStore.Write64(slot + 1, newField | (ulong)seq << 32);
                    if (Mutated(OrderingMutation.BttSkipFlogFence)) PersistentMemory.Flush((byte*)slot, FlogEntry.Size);
                    else PersistMeta(slot, FlogEntry.Size, durable);
                }
                StepHook?.Invoke(BttWriteStep.FlogWritten);
                PmemStore.Write32(a.Map + premap, MapEntry.Normal(newBlock).Raw);
                PersistMeta(a.Map + premap, MapEntry.Size, durable);
                if (Mutated(OrderingMutation.BttMapBeforeData)) WriteData(dst, src, durable);
                free.Block = oldBlock;
                free.NextSlot ^= 1;
                free.Seq = seq;
            }
            finally { mapLock.Exit(); }
            return BttStatus.Ok;
        }
        finally { _lanes.Release(lane); }
    }

    /// <summary>Makes sector <paramref name="lba"/> read as zeros (discard, write-zeroes): sets the map entry's Z flag.</summary>
    public BttStatus SetZero(long lba, bool durable = false) => SetFlag(lba, MapEntry.ZeroFlag, durable);

    /// <summary>Makes sector <paramref name="lba"/> fail reads until it is rewritten: sets the map entry's E flag.</summary>
    public BttStatus SetError(long lba, bool durable = false) => SetFlag(lba, MapEntry.ErrorFlag, durable);

    /// <summary>
    /// Ends the error state of sector <paramref name="lba"/> (<c>namespace clear-errors</c>): the
    /// entry keeps its block and takes the Z flag, so the sector reads as zeros (what it held went
    /// with the error) until it is written. A sector not in the error state is left alone.
    /// </summary>
    public BttStatus ClearError(long lba, bool durable = false) => SetFlag(lba, MapEntry.ZeroFlag, durable, onlyOverError: true);

    /// <summary>The map entry of sector <paramref name="lba"/> as it stands (an initial entry while a pmemblk pool has no layout): whether the sector is unwritten, zero, in error or holds data.</summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="lba"/> is not a sector of the BTT.</exception>
    public MapEntry MapEntryOf(long lba)
    {
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual((ulong)lba, (ulong)ExternalNlba, nameof(lba));
        Arena[]? arenas = Volatile.Read(ref _arenas);
        if (arenas is null) return default;
        Arena a = Locate(arenas, lba, out uint premap);
        return new MapEntry(Volatile.Read(ref a.Map[premap]));
    }

    /// <summary>Gives the entry of <paramref name="lba"/> the flag <paramref name="flag"/>, keeping its block; with <paramref name="onlyOverError"/>, only an entry in the error state.</summary>
    private BttStatus SetFlag(long lba, uint flag, bool durable, bool onlyOverError = false)
    {
        if ((ulong)lba >= (ulong)ExternalNlba) return BttStatus.OutOfRange;
        Arena[]? arenas = Volatile.Read(ref _arenas);
        if (arenas is null)
        {
            if (flag == MapEntry.ZeroFlag) return BttStatus.Ok; // everything reads as zeros already
            arenas = LayOut();
        }
        Arena a = Locate(arenas, lba, out uint premap);
        if (a.ReadOnly) return BttStatus.ArenaInError;
        Lock mapLock = a.MapLock(premap);
        mapLock.Enter();
        try
        {
            var old = new MapEntry(Volatile.Read(ref a.Map[premap]));
            if (onlyOverError ? !old.IsError : flag == MapEntry.ZeroFlag && (old.IsZero || old.IsInitial)) return BttStatus.Ok;
            uint block = old.PostMap(premap);
            if (block >= a.InternalNlba) return BttStatus.BadMapEntry;
            PmemStore.Write32(a.Map + premap, block | flag);
            PersistMeta(a.Map + premap, MapEntry.Size, durable);
            return BttStatus.Ok;
        }
        finally { mapLock.Exit(); }
    }

    /// <summary>Makes every completed write durable.</summary>
    public void Flush()
    {
        if (_cpuCache) PersistentMemory.Drain();
        else _media.Flush();
    }

    /// <summary>Copies a sector's data into its new block and fences: globally visible (and, with MAP_SYNC, durable) before any metadata names it.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void WriteData(byte* dst, byte* src, bool durable)
    {
        PersistentMemory.CopyNonTemporal(dst, src, (nuint)_lbaSize);
        PersistentMemory.Drain();
        if (durable && !_cpuCache) _media.PersistRange(dst - _media.Address, _lbaSize);
    }

    /// <summary>True when <paramref name="mutation"/> is switched on; constant false unless tracing is enabled in the process.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private bool Mutated(OrderingMutation mutation) => PmemTrace.Enabled && _mutation == mutation;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void PersistMeta(void* p, int length, bool durable)
    {
        if (_cpuCache) PersistentMemory.Persist((byte*)p, (nuint)length);
        else if (durable) _media.PersistRange((byte*)p - _media.Address, length);
    }

    private Arena[] LayOut()
    {
        lock (_layoutLock)
        {
            if (_arenas is { } done) return done;
            Format(_media, _options);
            ArenaInfoRead[] reads = ReadArenaInfos(_media, _options);
            var arenas = new Arena[reads.Length];
            for (int i = 0; i < reads.Length; i++)
            {
                arenas[i] = new Arena(_media, i, reads[i].Offset, _arenaStarts[i], reads[i].Info!, _lanes.Count);
                LoadFlog(arenas[i], repair: false);
            }
            Volatile.Write(ref _arenas, arenas);
            return arenas;
        }
    }
}
