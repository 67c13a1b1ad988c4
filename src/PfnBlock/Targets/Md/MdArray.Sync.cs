using System.Diagnostics;
using PfnBlock.Block;
using PfnBlock.Memory;

namespace PfnBlock.Targets.Md;

/// <summary>What an array's worker is doing to its members' data (md's sync_action).</summary>
public enum MdSyncAction
{
    /// <summary>Nothing.</summary>
    Idle,
    /// <summary>Making the members agree again after an unclean stop (the regions whose bitmap bits are set, or everything without a bitmap).</summary>
    Resync,
    /// <summary>Rebuilding a replacement member from the others.</summary>
    Recovery,
    /// <summary>Reading everything and counting where the members disagree (mismatch_cnt), changing nothing.</summary>
    Check,
}

/// <summary>Progress of the array's sync (what /proc/mdstat shows).</summary>
/// <param name="Action">What runs.</param>
/// <param name="DoneSectors">Member sectors done.</param>
/// <param name="TotalSectors">Member sectors to do.</param>
/// <param name="SpeedKiBPerSecond">Average speed since the action started.</param>
/// <param name="Pending">Actions waiting to run after this one.</param>
public sealed record MdSyncStatus(MdSyncAction Action, long DoneSectors, long TotalSectors, long SpeedKiBPerSecond, IReadOnlyList<MdSyncAction> Pending);

public sealed partial class MdArray
{
    /// <summary>Member sectors one sync step covers at most (1 MiB).</summary>
    internal const int SyncWindowSectors = 2048;

    private MdSyncAction _action;
    private long _syncDone, _syncTotal, _syncStartTicks;
    private bool _checkRequested;
    private long _mismatches, _resynced, _recovered;
    private DramArena? _syncArena;
    private long _lastIos;
    private volatile int _speedMin = 1000, _speedMax = 200_000;

    /// <summary>The sync running now and its progress.</summary>
    public MdSyncStatus Sync
    {
        get
        {
            lock (_lock)
            {
                long elapsed = Stopwatch.GetTimestamp() - _syncStartTicks;
                long speed = _action == MdSyncAction.Idle || elapsed <= 0 ? 0 : (long)(_syncDone * 512.0 / 1024 / ((double)elapsed / Stopwatch.Frequency));
                var pending = new List<MdSyncAction>();
                if (_action != MdSyncAction.Resync && Regions.UnsyncedRegions > 0) pending.Add(MdSyncAction.Resync);
                if (_action != MdSyncAction.Recovery && _slots.Any(m => m.State == MdMemberState.Recovering)) pending.Add(MdSyncAction.Recovery);
                if (_checkRequested) pending.Add(MdSyncAction.Check);
                return new MdSyncStatus(_action, _syncDone, _syncTotal, speed, pending);
            }
        }
    }

    /// <summary>Sectors the last check found inconsistent (md's mismatch_cnt: a whole 4 KiB row counted per mismatch).</summary>
    public long MismatchCount => Interlocked.Read(ref _mismatches);
    /// <summary>Member sectors resynced since assembly (per member: the regions the bitmap named, or everything without one).</summary>
    public long ResyncedSectors => Interlocked.Read(ref _resynced);
    /// <summary>Member sectors rebuilt onto replacements since assembly.</summary>
    public long RecoveredSectors => Interlocked.Read(ref _recovered);

    /// <summary>The sync speed guaranteed even while the array is busy, KiB/s (md's speed_limit_min, 1000 by default).</summary>
    public int SpeedLimitMin
    {
        get => _speedMin;
        set => _speedMin = value > 0 ? value : throw new ArgumentOutOfRangeException(nameof(value), "the minimum sync speed must be positive");
    }

    /// <summary>The sync speed never exceeded, KiB/s (md's speed_limit_max, 200000 by default; <see cref="int.MaxValue"/> for no limit).</summary>
    public int SpeedLimitMax
    {
        get => _speedMax;
        set => _speedMax = value > 0 ? value : throw new ArgumentOutOfRangeException(nameof(value), "the maximum sync speed must be positive");
    }

    /// <summary>Starts a check (scrub): every stripe or mirror is read and compared; <see cref="MismatchCount"/> counts what disagrees. Nothing is changed.</summary>
    /// <exception cref="InvalidOperationException">The array is degraded or failed (nothing to compare against).</exception>
    public void StartCheck()
    {
        if (_failed || Degraded > 0) throw new InvalidOperationException($"md {Name}: a degraded array cannot be checked");
        lock (_lock) _checkRequested = true;
        _wake.Set();
    }

    /// <summary>Waits until no sync runs or waits to run; false on timeout.</summary>
    public bool WaitForSync(TimeSpan timeout)
    {
        long deadline = Environment.TickCount64 + (long)timeout.TotalMilliseconds;
        while (true)
        {
            MdSyncStatus s = Sync;
            if (s.Action == MdSyncAction.Idle && s.Pending.Count == 0) return true;
            if (_failed && s.Action == MdSyncAction.Idle) return true;
            if (Environment.TickCount64 > deadline) return false;
            Thread.Sleep(2);
        }
    }

    private void RunPendingSync()
    {
        if (IsReadOnly || _failed) return;
        if (Regions.UnsyncedRegions > 0) RunResync();
        foreach (MdMember m in _slots)
            if (m.State == MdMemberState.Recovering && !_stopping && !_failed) RunRecovery(m);
        bool check = false;
        lock (_lock)
            if (_checkRequested)
            {
                // Taken and shown as running in one step, so a waiter never sees neither.
                _checkRequested = false;
                _action = MdSyncAction.Check;
                check = true;
            }
        if (!check) return;
        if (!_stopping && !_failed && Degraded == 0) RunCheck();
        else EndSync();
    }

    private void BeginSync(MdSyncAction action, long total)
    {
        lock (_lock)
        {
            _action = action;
            _syncDone = 0;
            _syncTotal = total;
            _syncStartTicks = Stopwatch.GetTimestamp();
        }
        _lastIos = UserIos();
    }

    private void EndSync()
    {
        lock (_lock) _action = MdSyncAction.Idle;
    }

    private bool Abort => _stopping || _failed;

    private void RunResync()
    {
        int regions = Regions.UnsyncedRegions;
        BeginSync(MdSyncAction.Resync, Math.Min((long)regions * Regions.RegionSectors, MemberSectors));
        Report($"resync of {regions} region(s) of {Regions.RegionSectors << Bio.SectorShift >> 10} KiB started");
        long done = 0;
        for (int r = 0; r < Regions.Regions && !Abort; r++)
        {
            if (!Regions.IsUnsynced(r)) continue;
            long start = (long)r * Regions.RegionSectors, end = Math.Min(start + Regions.RegionSectors, MemberSectors);
            bool ok = true;
            for (long s = start; s < end && ok && !Abort; s += SyncWindowSectors)
            {
                int n = (int)Math.Min(SyncWindowSectors, end - s);
                Regions.RaiseBarrier(r);
                try { ok = Personality.SyncWindow(MdSyncAction.Resync, null, s, n, SyncBuffers()) >= 0; }
                finally { Regions.LowerBarrier(r); }
                Progress(n);
                Interlocked.Add(ref _resynced, n);
                Service();
            }
            if (ok && !Abort) Regions.SetUnsynced(r, false);
            done++;
        }
        EndSync();
        if (!Abort)
        {
            Report($"resync done: {ResyncedSectors} sectors per member");
            WriteSuperblocks(clean: false);
        }
    }

    private void RunRecovery(MdMember target)
    {
        BeginSync(MdSyncAction.Recovery, MemberSectors - target.RecoveryOffset);
        Report($"recovery of slot {target.Slot} onto {target.Spec} started at sector {target.RecoveryOffset}");
        long lastSave = Environment.TickCount64;
        while (target.RecoveryOffset < MemberSectors && !Abort && target.State == MdMemberState.Recovering)
        {
            long s = target.RecoveryOffset;
            int r = Regions.RegionOf(s);
            long regionEnd = Math.Min(((long)r + 1) * Regions.RegionSectors, MemberSectors);
            int n = (int)Math.Min(SyncWindowSectors, regionEnd - s);
            long result;
            Regions.RaiseBarrier(r);
            try
            {
                result = Personality.SyncWindow(MdSyncAction.Recovery, target, s, n, SyncBuffers());
                // Reads of the new member may use the window from now on.
                if (result >= 0) target.RecoveryOffset = s + n;
            }
            finally { Regions.LowerBarrier(r); }
            if (result < 0) break;
            Progress(n);
            Interlocked.Add(ref _recovered, n);
            Service();
            if (Environment.TickCount64 - lastSave > 5000)
            {
                // Record the checkpoint, so a restart resumes rather than starts over (md's recovery_offset).
                lastSave = Environment.TickCount64;
                lock (_lock) _sbDirty = true;
                Service();
            }
        }
        bool finished = target.RecoveryOffset >= MemberSectors && target.State == MdMemberState.Recovering;
        if (finished)
        {
            lock (_lock)
            {
                target.State = MdMemberState.InSync;
                _sbDirty = true;
            }
            Report($"recovery of slot {target.Slot} onto {target.Spec} done");
        }
        EndSync();
        if (!_stopping) Service();
    }

    private void RunCheck()
    {
        Interlocked.Exchange(ref _mismatches, 0);
        BeginSync(MdSyncAction.Check, MemberSectors);
        for (long s = 0; s < MemberSectors && !Abort && Degraded == 0; s += SyncWindowSectors)
        {
            int r = Regions.RegionOf(s);
            long regionEnd = Math.Min(((long)r + 1) * Regions.RegionSectors, MemberSectors);
            int n = (int)Math.Min(SyncWindowSectors, regionEnd - s);
            Regions.RaiseBarrier(r);
            long found;
            try { found = Personality.SyncWindow(MdSyncAction.Check, null, s, n, SyncBuffers()); }
            finally { Regions.LowerBarrier(r); }
            if (found < 0) break;
            Interlocked.Add(ref _mismatches, found);
            Progress(n);
            Service();
            s = s - SyncWindowSectors + n;
        }
        EndSync();
        Report($"check done: mismatch_cnt {MismatchCount}");
    }

    /// <summary>Counts progress and holds the speed between md's limits: at most the maximum, and above the minimum only while the array has no other I/O.</summary>
    private void Progress(int sectors)
    {
        lock (_lock) _syncDone += sectors;
        while (!Abort)
        {
            double seconds = (double)(Stopwatch.GetTimestamp() - _syncStartTicks) / Stopwatch.Frequency;
            double kib = Volatile.Read(ref _syncDone) / 2.0;
            double speed = seconds <= 0 ? double.MaxValue : kib / seconds;
            if (speed <= _speedMin) return;
            long ios = UserIos();
            bool idle = ios == _lastIos;
            _lastIos = ios;
            if (speed <= _speedMax && idle) return;
            Thread.Sleep(2);
            Service();
        }
    }

    private long UserIos()
    {
        if (_device is null) return 0;
        DiskStatsSnapshot s = _device.Stats.Snapshot();
        return s.Read.Ios + s.Write.Ios + s.InFlight;
    }

    /// <summary>Read errors a member may have corrected before it is failed (md's max_corrected_read_errors).</summary>
    public const int MaxCorrectedReadErrors = 20;

    private readonly Queue<(MdMember Member, long Sector, int Sectors)> _repairs = new();
    private long _corrected;

    /// <summary>Member sectors rewritten from the redundancy after read errors since assembly.</summary>
    public long CorrectedSectors => Interlocked.Read(ref _corrected);

    /// <summary>
    /// Notes that <paramref name="m"/> failed a read of member sectors [<paramref name="sector"/>,
    /// +<paramref name="sectors"/>): the worker rewrites them from the redundancy (a media error is
    /// cured by a write), unless the member has had too many, when it is failed. The read itself is
    /// retried elsewhere by the personality. Called from completion paths; does not block.
    /// </summary>
    internal void ReadError(MdMember m, long sector, int sectors)
    {
        if (IsReadOnly || m.CountReadError() > MaxCorrectedReadErrors)
        {
            MemberFailed(m, BlockStatus.IoError, IsReadOnly ? "read (read-only array: nothing rewritten)" : $"read; more than {MaxCorrectedReadErrors} read errors");
            return;
        }
        m.CountError();
        lock (_repairs) _repairs.Enqueue((m, sector, sectors));
        _wake.Set();
    }

    /// <summary>Rewrites what read errors left, window by window under the regions' barriers (worker thread).</summary>
    private void RunRepairs()
    {
        while (!Abort)
        {
            (MdMember m, long sector, int sectors) item;
            lock (_repairs)
                if (!_repairs.TryDequeue(out item)) return;
            (MdMember m, long sector, int sectors) = item;
            if (m.State != MdMemberState.InSync || !ReferenceEquals(Slot(m.Slot), m)) continue;
            bool ok = true;
            for (long s = sector, end = sector + sectors; s < end && ok && !Abort;)
            {
                int r = Regions.RegionOf(s);
                int n = (int)Math.Min(Math.Min(SyncWindowSectors, ((long)r + 1) * Regions.RegionSectors - s), end - s);
                Regions.RaiseBarrier(r);
                try { ok = Personality.RepairWindow(m, s, n, SyncBuffers()); }
                finally { Regions.LowerBarrier(r); }
                s += n;
            }
            if (!ok) continue;
            // The log line first: whoever sees the count go up (ctl, a test) finds the line there too.
            Report($"read error corrected ({sectors} sectors at {sector} on {m.Spec})");
            Interlocked.Add(ref _corrected, sectors);
        }
    }

    /// <summary>Buffers for one sync window per slot plus one: made on first use, kept until shutdown.</summary>
    private MdSyncBuffers SyncBuffers()
    {
        _syncArena ??= DramArena.Create((long)(RaidDisks + 1) * SyncWindowSectors * Bio.SectorSize, _context.AddressSpace, $"md-{Name}-sync");
        return new MdSyncBuffers(_syncArena, RaidDisks + 1, SyncWindowSectors * Bio.SectorSize);
    }

    private void DisposeSyncBuffers() => _syncArena?.Dispose();

    /// <summary>Reads or writes a member synchronously for a sync step; a failure marks the member faulty.</summary>
    internal bool SyncIo(MdMember m, BioOp op, long memberSector, Pfn buffer, int bytes)
    {
        var bio = new Bio(1).Init(op, m.DataOffset + memberSector).AddVec(buffer, 0, (uint)bytes);
        BlockStatus status = m.Device!.SubmitAndWait(bio);
        if (status == BlockStatus.Ok) return true;
        MemberFailed(m, status, $"{(op == BioOp.Read ? "sync read" : "sync write")} at sector {memberSector}");
        return false;
    }

    /// <summary>
    /// Reads a member synchronously for a sync step; a read error is reported as one
    /// (<see cref="ReadError"/>: rewritten later, or the member failed) so the caller can try
    /// another source, as md's fix_sync_read_error does.
    /// </summary>
    internal bool SyncRead(MdMember m, long memberSector, Pfn buffer, int bytes)
    {
        var bio = new Bio(1).Init(BioOp.Read, m.DataOffset + memberSector).AddVec(buffer, 0, (uint)bytes);
        BlockStatus status = m.Device!.SubmitAndWait(bio);
        if (status == BlockStatus.Ok) return true;
        if (status.IsDeviceError()) ReadError(m, memberSector, bytes >> Bio.SectorShift);
        else MemberFailed(m, status, $"sync read at sector {memberSector}");
        return false;
    }
}

/// <summary>The worker's buffers for one sync window: one per slot, and a spare.</summary>
internal readonly unsafe struct MdSyncBuffers(DramArena arena, int count, int bytes)
{
    /// <summary>Bytes per buffer.</summary>
    public int Bytes { get; } = bytes;
    /// <summary>How many buffers.</summary>
    public int Count { get; } = count;
    /// <summary>The first frame of buffer <paramref name="i"/>.</summary>
    public Pfn Pfn(int i) => arena.PfnAt((long)i * Bytes >> Memory.Pfn.PageShift);
    /// <summary>The frame and in-frame offset of byte <paramref name="offset"/> of buffer <paramref name="i"/>.</summary>
    public (Pfn Pfn, uint Offset) FrameOf(int i, long offset)
    {
        long b = (long)i * Bytes + offset;
        return (arena.PfnAt(b >> Memory.Pfn.PageShift), (uint)(b & (Memory.Pfn.PageSize - 1)));
    }
    /// <summary>The CPU address of buffer <paramref name="i"/>.</summary>
    public byte* Address(int i) => arena.BaseAddress + (long)i * Bytes;
}
