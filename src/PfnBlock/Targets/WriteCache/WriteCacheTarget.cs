using System.Runtime.CompilerServices;
using PfnBlock.Block;
using PfnBlock.Devices;
using PfnBlock.Memory;

namespace PfnBlock.Targets.WriteCache;

/// <summary>
/// A persistent write-back cache on a pmem namespace in front of any origin device (the kernel's
/// <c>dm-writecache</c> in <c>p</c> mode). Table:
/// <c>START LENGTH writecache p ORIGIN CACHE 4096 COUNT [OPTION…]</c>, the options as
/// <see cref="WriteCacheOptions"/> lists them.
/// </summary>
/// <remarks>
/// <para><b>Writes</b> are appended to the circular log of <see cref="WriteCacheLog"/> (data and
/// entry with non-temporal stores, one fence) and complete at memory speed; a FUA write is
/// persisted before it completes, a FLUSH commits everything and ends the flush epoch, and a
/// write after <c>autocommit_blocks</c> plain blocks commits too (without ending the epoch).</para>
/// <para><b>Reads</b> are split per 4 KiB block: blocks whose newest data is in the cache are
/// copied out of their slot (then the slot's state is checked again, seqlock-style: a slot that was
/// written back and reused meanwhile is read again), blocks under a pending discard read as zeros,
/// and runs of the other blocks go to the origin as clones of the bio.</para>
/// <para><b>Write-back</b> runs on its own thread (<see cref="WriteCacheWriteback"/>), in log order,
/// one flush epoch at a time, flushing the origin before the persistent tail moves: the origin
/// alone is always a state the writes could have left it in, never a mix.</para>
/// </remarks>
public sealed unsafe class WriteCacheTarget : Target, IRegisteredTarget
{
    private const int MaxBioBlocks = 256;
    private readonly IBlockDevice _origin;
    private readonly string _originSpec, _cacheSpec;
    private readonly WriteCacheInstance _cache;
    private readonly WriteCacheLog _log;
    private readonly WriteCacheWriteback _writeback;
    private readonly BioPool _pool;
    private readonly PhysicalAddressSpace _space;
    private readonly DeviceFeatures _adds;
    private readonly int _maxBioBlocks;
    private readonly ReadCacheHook _fillHook;
    private bool _disposed;

    private WriteCacheTarget(LowerDevice origin, LowerDevice cache, WriteCacheOptions options, long length) : base(origin.Device, cache.Device)
    {
        _origin = origin.Device;
        (_originSpec, _cacheSpec) = (origin.Spec, cache.Spec);
        Options = options;
        _space = _origin.AddressSpace;
        if (length > _origin.CapacitySectors)
            throw TargetContext.Fail($"Device too small: origin {origin.Spec} has {_origin.CapacitySectors} sectors, the line maps {length}");
        _cache = WriteCacheInstance.Acquire(_origin, cache, options);
        _log = _cache.Log;
        _writeback = _cache.Writeback;
        // A bio must fit in the log even when it is nearly full of other entries.
        _maxBioBlocks = (int)Math.Min(MaxBioBlocks, _log.Entries / 4);
        _adds = DeviceFeatures.WriteCache | DeviceFeatures.Fua
            | ((_origin.Features & DeviceFeatures.WriteZeroes) != 0 ? DeviceFeatures.Discard | DeviceFeatures.WriteZeroes | DeviceFeatures.DiscardZeroesData : 0);
        _pool = new BioPool(new BioPoolOptions { Name = "writecache-clones" });
        _fillHook = new ReadCacheHook(this);
    }

    /// <inheritdoc/>
    public static TargetType TargetType { get; } = new()
    {
        Name = "writecache",
        Version = new(1, 8, 0), // 1.8: read_cache
        Arguments = "p ORIGIN CACHE 4096 COUNT [OPTION…]",
        Summary = "a persistent write-back cache on the pmem namespace CACHE in front of ORIGIN (dm-writecache); options: "
            + "high_watermark PCT, low_watermark PCT, writeback_jobs N, autocommit_blocks N, autocommit_time MS, pause_writeback MS, max_age MS, stall_timeout MS, read_cache PCT, cleaner",
        Create = Create,
        Samples =
        [
            new("over the device, pmem cache", s => new($"p {s.Lower[0]} {s.NewPmem()} 4096 0", s.LowerSectors)),
            new("watermarks 10/5, 8 jobs", s => new($"p {s.Lower[0]} {s.NewPmem()} 4096 6 high_watermark 10 low_watermark 5 writeback_jobs 8", s.LowerSectors - 2048)),
            new("read cache 50%, watermarks 10/5", s => new($"p {s.Lower[0]} {s.NewPmem()} 4096 6 read_cache 50 high_watermark 10 low_watermark 5", s.LowerSectors)),
        ],
    };

    private static WriteCacheTarget Create(TargetContext ctx)
    {
        if (ctx.Args.Count < 5) throw TargetContext.Fail($"Invalid argument count (expected p ORIGIN CACHE 4096 COUNT [OPTION…], got {ctx.Args.Count} arguments)");
        if (ctx.Args[0] != "p")
            throw TargetContext.Fail(ctx.Args[0] == "s" ? "Only persistent memory mode 'p' is supported (the cache must be a pmem namespace)" : $"Invalid mode '{ctx.Args[0]}' (expected p)");
        if (ctx.Args[3] != "4096") throw TargetContext.Fail($"Invalid block size '{ctx.Args[3]}' (only 4096 is supported)");
        long count = ctx.Number(4, "Invalid number of optional arguments", 64);
        if (ctx.Args.Count != 5 + count)
            throw TargetContext.Fail($"Invalid number of optional arguments: the count says {count}, the line has {ctx.Args.Count - 5}");
        WriteCacheOptions options = WriteCacheOptions.Parse([.. ctx.Args.Skip(5)]);
        if (ctx.Length % (WriteCacheLayout.BlockSize >> Bio.SectorShift) != 0)
            throw TargetContext.Fail($"Length {ctx.Length} is not a whole number of 4096-byte blocks");
        LowerDevice origin = ctx.Device(1), cache = ctx.Device(2);
        return new WriteCacheTarget(origin, cache, options, ctx.Length);
    }

    /// <summary>The optional arguments in force.</summary>
    public WriteCacheOptions Options { get; }

    /// <summary>The log (for tests and <c>pfnblock check</c>).</summary>
    internal WriteCacheLog Log => _log;

    /// <summary>The write-back thread (for tests).</summary>
    internal WriteCacheWriteback Writeback => _writeback;

    /// <inheritdoc/>
    public override int FlushBios => 1; // a flush is the cache's own business: acknowledged writes are in the log

    /// <inheritdoc/>
    public override DeviceFeatures PassesThrough => DeviceFeatures.None;

    /// <inheritdoc/>
    public override DeviceFeatures Adds => _adds;

    /// <inheritdoc/>
    public override DeviceLimits AdjustLimits(DeviceLimits stacked) => stacked with
    {
        LogicalBlockSize = Math.Max(stacked.LogicalBlockSize, WriteCacheLayout.BlockSize),
        PhysicalBlockSize = Math.Max(stacked.PhysicalBlockSize, WriteCacheLayout.BlockSize),
        MaxBytesPerBio = Math.Min(stacked.MaxBytesPerBio, _maxBioBlocks * WriteCacheLayout.BlockSize),
    };

    /// <inheritdoc/>
    public override string Arguments => $"p {_originSpec} {_cacheSpec} 4096 {Options}";

    /// <summary>A snapshot of the cache's state and counters.</summary>
    public WriteCacheStatus Status
    {
        get
        {
            long? oldest = _log.OldestTimeMs;
            return new WriteCacheStatus(_log.Entries, _log.Used, _log.Dirty, Interlocked.Read(ref _cache.ReadHits), Interlocked.Read(ref _cache.ReadMisses),
                Interlocked.Read(ref _cache.WriteHits), _log.Head - 1, _writeback.WrittenBack, _writeback.Rate,
                oldest is { } t ? TimeSpan.FromMilliseconds(Math.Max(0, WriteCacheLog.NowMs() - t)) : null,
                _writeback.Errors, _writeback.LastError, _writeback.Cleaner, _log.Sealed, _writeback.Paused, _log.Epoch, _writeback.Lost,
                _log.ReadCache is { } rc
                    ? new WriteCacheReadCacheStatus(rc.Percent, rc.Count, Interlocked.Read(ref rc.Hits), Interlocked.Read(ref rc.Inserts),
                        Interlocked.Read(ref rc.Evictions), Interlocked.Read(ref rc.Dropped), Interlocked.Read(ref rc.Refused))
                    : null);
        }
    }

    /// <summary>Stops background write-back (demands through <see cref="WriteBackAll"/> still run); writes keep landing in the cache until it is full.</summary>
    public void PauseWriteback() => _writeback.Paused = true;

    /// <summary>Resumes background write-back.</summary>
    public void ResumeWriteback() => _writeback.Paused = false;

    /// <summary>Switches cleaner mode: on, everything is written back and then writes pass straight to the origin; off, the cache takes writes again.</summary>
    public void SetCleaner(bool on)
    {
        _writeback.Cleaner = on;
        if (!on) _log.Unseal();
    }

    /// <summary>Writes back every entry logged before the call and waits for it (on demand); false when <paramref name="timeout"/> passed first.</summary>
    public bool WriteBackAll(TimeSpan timeout) => _writeback.WriteBackAll(timeout);

    /// <inheritdoc/>
    public override MapResult Map(Bio bio, out IBlockDevice? lower)
    {
        lower = _origin;
        // A finished cleaner passes everything through, flushes included (the log is empty).
        if (_log.Sealed && bio.Op != BioOp.Read) return PassThrough(bio);
        switch (bio.Op)
        {
            case BioOp.Read:
                return MapRead(bio);
            case BioOp.Flush:
                // Lost to another host: what is cached stays committed, but it will never reach the
                // image the new owner serves, so the client is not told it is safe.
                BlockStatus flushed = FlushCache();
                bio.Complete(_writeback.Lost is null ? flushed : BlockStatus.IoError);
                return MapResult.Submitted;
            default:
                return MapWrite(bio);
        }
    }

    private BlockStatus FlushCache() => _cache.Commit(flush: true);

    private MapResult MapWrite(Bio bio)
    {
        // The origin was taken over by another host (blocklisted, lock broken): acknowledging more
        // writes would promise data the new owner never sees. The cache keeps what it holds.
        if (_writeback.Lost is not null) { bio.Complete(BlockStatus.IoError); return MapResult.Submitted; }
        if ((bio.Flags & BioFlags.Preflush) != 0)
        {
            BlockStatus st = FlushCache();
            if (st != BlockStatus.Ok) { bio.Complete(st); return MapResult.Submitted; }
        }
        bool fua = (bio.Flags & BioFlags.Fua) != 0;
        long block0 = bio.Sector >> 3;
        int blocks = (int)(bio.Size >> 12);
        long seq;
        int hits = 0;
        if (bio.Op == BioOp.Write)
        {
            var source = new BioSource(bio, _space);
            // Every frame is checked before anything is logged: a bad pfn fails the bio, not the log.
            if (!source.Reachable()) { bio.Complete(BlockStatus.Invalid); return MapResult.Submitted; }
            seq = _log.AppendWrites(block0, blocks, ref source, fua, out hits);
        }
        else
        {
            WriteCacheEntryKind kind = bio.Op == BioOp.Discard ? WriteCacheEntryKind.Discard : WriteCacheEntryKind.WriteZeroes;
            WriteCacheEntryFlags flags = (bio.Flags & BioFlags.NoUnmap) != 0 ? WriteCacheEntryFlags.NoUnmap : WriteCacheEntryFlags.None;
            seq = _log.AppendRange(block0, blocks, kind, flags, fua);
        }
        if (seq == 0)
        {
            // Sealed meanwhile (cleaner finished): the origin takes it. Else the log is full: wait for
            // write-back, unless write-back has been failing for stall_timeout (the origin is gone),
            // where waiting would hang the client for good: fail this write, keep what is cached.
            if (_log.Sealed) return PassThrough(bio);
            if (_writeback.Stalled) { bio.Complete(BlockStatus.IoError); return MapResult.Submitted; }
            _writeback.Wake(full: true);
            return MapResult.Requeue;
        }
        if (hits != 0) Interlocked.Add(ref _cache.WriteHits, hits);
        if (_log.CommitDue)
        {
            BlockStatus st = _cache.Commit(flush: false);
            if (st != BlockStatus.Ok) { bio.Complete(st); return MapResult.Submitted; }
        }
        _writeback.NoteWrite();
        bio.Complete(BlockStatus.Ok);
        return MapResult.Submitted;
    }

    [SkipLocalsInit] // the sequence numbers are all written by the lookup
    private MapResult MapRead(Bio bio)
    {
        int blocks = (int)(bio.Size >> 12);
        WriteCacheReadCache? rc = _log.ReadCache;
        if (rc is null && _log.NothingCached)
        {
            Interlocked.Add(ref _cache.ReadMisses, blocks);
            return MapResult.Remapped;
        }
        // Misses fill the read cache only while it takes copies: their clones carry the fill hook.
        bool fill = rc is not null && rc.Inserting && !_log.Sealed;
        long block0 = bio.Sector >> 3;
        Span<long> seqs = stackalloc long[blocks];
        _log.Lookup(block0, seqs, out long generation);
        if (!fill && seqs.IndexOfAnyExcept(0L) < 0)
        {
            Interlocked.Add(ref _cache.ReadMisses, blocks);
            return MapResult.Remapped;
        }
        // Every frame is checked before any is written: a bad pfn fails the bio, not the process.
        if (!new BioSource(bio, _space).Reachable()) { bio.Complete(BlockStatus.Invalid); return MapResult.Submitted; }
        int hits = 0, cleanHits = 0, runStart = -1;
        for (int j = 0; j < blocks; j++)
        {
            long seq = seqs[j];
            while (seq != 0)
            {
                if (seq == WriteCacheLog.Zeroed) { CopyToBio(bio, j, null); break; }
                bool clean = (seq & WriteCacheReadCache.CleanBit) != 0;
                long at = seq & ~WriteCacheReadCache.CleanBit;
                CopyToBio(bio, j, _log.SlotAddress(at));
                // The seqlock check: the copy's loads must happen before the state is read again.
                Interlocked.MemoryBarrier();
                if (clean ? _log.IsCleanValid(at) : _log.IsCommitted(seq))
                {
                    if (clean) cleanHits++;
                    break;
                }
                // Written back and reused, evicted, or not yet published: ask the index again. The
                // generation of the first lookup stays: older is only more careful for an insert.
                Span<long> one = new(ref seq);
                _log.Lookup(block0 + j, one, out _);
                Thread.SpinWait(4);
            }
            if (seq == 0)
            {
                if (runStart < 0) runStart = j;
                continue;
            }
            hits++;
            if (runStart >= 0) { ReadOrigin(bio, runStart, j - runStart, fill, generation); runStart = -1; }
        }
        if (runStart >= 0) ReadOrigin(bio, runStart, blocks - runStart, fill, generation);
        Interlocked.Add(ref _cache.ReadHits, hits);
        Interlocked.Add(ref _cache.ReadMisses, blocks - hits);
        if (cleanHits != 0) Interlocked.Add(ref rc!.Hits, cleanHits);
        bio.Complete(BlockStatus.Ok); // the bio's own reference: it completes when its origin clones have
        return MapResult.Submitted;
    }

    /// <summary>
    /// Reads <paramref name="count"/> blocks from block <paramref name="first"/> of the bio from the
    /// origin, as a clone chained to it; with <paramref name="fill"/> the clone's completion keeps
    /// clean copies of them, published against <paramref name="generation"/>.
    /// </summary>
    private void ReadOrigin(Bio bio, int first, int count, bool fill = false, long generation = 0)
    {
        Bio clone = bio.Clone(_pool);
        if (first > 0) clone.Advance((uint)first << 12);
        clone.Iter.Size = (uint)count << 12;
        if (fill)
        {
            clone.Tag = generation;
            clone.PushEndIo(_fillHook);
        }
        clone.Chain(bio);
        _origin.Submit(clone);
    }

    /// <summary>
    /// A write, discard or write-zeroes while the log is sealed (cleaner done) goes to the origin;
    /// with a read cache it goes as a clone whose completion drops the blocks' clean copies: a copy
    /// made by a read that raced it (inserting was switched back on meanwhile) must not outlive it.
    /// </summary>
    private MapResult PassThrough(Bio bio)
    {
        if (_log.ReadCache is null || bio.Op == BioOp.Flush) return MapResult.Remapped;
        Bio clone = bio.Clone(_pool);
        clone.PushEndIo(_fillHook);
        clone.Chain(bio);
        _origin.Submit(clone);
        bio.Complete(BlockStatus.Ok); // the bio's own reference, as for reads
        return MapResult.Submitted;
    }

    /// <summary>The end_io of origin clones that touch the read cache: a read's data becomes clean copies, a passed-through write drops them.</summary>
    private sealed class ReadCacheHook(WriteCacheTarget target) : IBioEndIo
    {
        public EndIoResult EndIo(Bio bio, ref BlockStatus status)
        {
            if (status != BlockStatus.Ok) return EndIoResult.Done;
            WriteCacheLog log = target._log;
            long block0 = bio.Sector >> 3;
            if (bio.Op != BioOp.Read)
            {
                log.DropClean(block0, bio.Size >> 12);
                return EndIoResult.Done;
            }
            var source = new BioSource(bio, target._space);
            if (source.Reachable()) log.InsertClean(block0, (int)(bio.Size >> 12), bio.Tag, ref source);
            return EndIoResult.Done;
        }
    }

    /// <summary>Fills block <paramref name="block"/> of the bio's memory from <paramref name="src"/> (a cache slot), or with zeros when it is null.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void CopyToBio(Bio bio, int block, byte* src)
    {
        BvecIter it = bio.Iter;
        ReadOnlySpan<BioVec> vecs = bio.Vecs;
        if (block > 0) it.Advance(vecs, (uint)block << 12);
        uint left = WriteCacheLayout.BlockSize;
        while (left > 0)
        {
            BioVec seg = it.Current(vecs);
            uint n = Math.Min(seg.Length, left);
            byte* dst = _space.TryKmap(seg.Pfn, seg.Offset, n); // checked reachable when the bio was taken
            if (src == null) new Span<byte>(dst, (int)n).Clear();
            else
            {
                Buffer.MemoryCopy(src, dst, n, n);
                src += n;
            }
            left -= n;
            it.Advance(vecs, n);
        }
    }

    /// <summary>The data of a write bio, block by block, copied into cache slots with non-temporal stores.</summary>
    private ref struct BioSource(Bio bio, PhysicalAddressSpace space) : IWriteCacheSource
    {
        private BvecIter _it = bio.Iter;

        /// <summary>True when every frame of the bio can be reached (checked before anything is logged).</summary>
        public readonly bool Reachable()
        {
            foreach (BioVec seg in bio.Segments)
                if (space.TryKmap(seg.Pfn, seg.Offset, seg.Length) == null) return false;
            return true;
        }

        public void CopyBlock(int index, byte* slot)
        {
            // Called for blocks 0, 1, 2, … in order: the cursor just moves on.
            ReadOnlySpan<BioVec> vecs = bio.Vecs;
            uint left = WriteCacheLayout.BlockSize;
            while (left > 0)
            {
                BioVec seg = _it.Current(vecs);
                uint n = Math.Min(seg.Length, left);
                byte* src = space.TryKmap(seg.Pfn, seg.Offset, n);
                PersistentMemory.CopyNonTemporal(slot, src, n);
                slot += n;
                left -= n;
                _it.Advance(vecs, n);
            }
        }
    }

    /// <inheritdoc/>
    public override void Dispose()
    {
        if (!_disposed) _cache.Release();
        _disposed = true;
        base.Dispose();
    }
}
