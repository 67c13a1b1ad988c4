using System.Text;
using PfnBlock.Block;
using PfnBlock.Devices;

namespace PfnBlock.Targets.Md;

/// <summary>Something an array completes only once a superblock update recording a member failure is durable.</summary>
internal interface IMdDeferred
{
    /// <summary>Link in the array's deferred list.</summary>
    IMdDeferred? NextDeferred { get; set; }
    /// <summary>The update is durable: complete now. Runs on the array's worker thread.</summary>
    void CompleteDeferred();
}

/// <summary>
/// A running md array (md's <c>mddev</c>): its members by slot, the superblock state it keeps on
/// them (events, roles, clean/active), its write-intent bitmap, and the worker thread that writes
/// superblock updates, clears idle bitmap bits, and runs resync, rebuild and check. The data path
/// is its personality, a <see cref="Target"/> (<see cref="Raid1Target"/>, Raid5Target)
/// in a one-line <see cref="MappedDevice"/>: the device an <c>md:</c> spec opens.
/// </summary>
/// <remarks>
/// <para>Failures: a member that fails a bio is marked faulty at once (reads and writes stop using
/// it) and the superblocks of the others record it (events + 1); a write that lost a leg is
/// acknowledged only after that update is durable, so an acknowledged write can never be
/// outvoted after a crash by the stale member. Too many failures (every mirror leg, two RAID5
/// members) fail the array: every bio then fails, none returns wrong data.</para>
/// <para>Shutdown: writes drain, the bitmap is cleared (unless degraded, when md keeps it for a
/// re-add), and the superblocks are marked clean.</para>
/// </remarks>
public sealed partial class MdArray
{
    private static readonly Lock s_claimLock = new();
    private static readonly Dictionary<IBlockDevice, MdArray> s_claims = new(ReferenceEqualityComparer.Instance);
    private static readonly Lock s_arraysLock = new();
    private static readonly List<WeakReference<MdArray>> s_arrays = [];

    private readonly Lock _lock = new();
    private readonly MdSuperblock _template;
    private ushort[] _roles;
    private ulong _events;
    private readonly MdMember[] _slots;
    private readonly List<MdMember> _retired = [];
    private readonly DeviceOpenContext _context;
    private readonly MdMetadataIo _io;
    private readonly List<string> _log = [];
    private volatile bool _failed;
    private bool _sbDirty;
    private IMdDeferred? _deferredHead, _deferredTail;
    private Thread? _worker;
    private readonly AutoResetEvent _wake = new(false);
    private volatile bool _stopping;
    private MappedDevice? _device;
    private MdTarget? _personality;
    private bool _disposed;
    private IDisposable? _journalHandle;

    private MdArray(MdSuperblock template, MdMember[] slots, ushort[] roles, DeviceOpenContext context, string name, bool readOnly)
    {
        _template = template;
        _slots = slots;
        _roles = roles;
        _events = template.Events;
        _context = context;
        Name = name;
        IsReadOnly = readOnly;
        _io = new MdMetadataIo(context.AddressSpace ?? Memory.PhysicalAddressSpace.Shared);
    }

    /// <summary>
    /// Where the library reports what arrays do (degraded starts, failures, rebuilds): one line per
    /// event, "md NAME: …". A CLI sets it to print to stderr; null drops the lines (they stay in <see cref="Log"/>).
    /// </summary>
    public static Action<string>? MessageSink { get; set; }

    /// <summary>The array's name (the device name).</summary>
    public string Name { get; }
    /// <summary>The array's uuid as mdadm prints it.</summary>
    public string Uuid => _template.UuidText;
    /// <summary>RAID level: 1 or 5.</summary>
    public int Level => (int)_template.Level;
    /// <summary>Slots in the array.</summary>
    public int RaidDisks => _slots.Length;
    /// <summary>RAID5 chunk in sectors (0 for a mirror).</summary>
    public long ChunkSectors => _template.ChunkSectors;
    /// <summary>Sectors of each member the array uses.</summary>
    public long MemberSectors => (long)_template.Size;
    /// <summary>The array's capacity in sectors.</summary>
    public long Sectors => (long)_template.ArraySectors;
    /// <summary>Opened read-only: no superblock, bitmap or resync writes.</summary>
    public bool IsReadOnly { get; }
    /// <summary>The superblocks' update counter.</summary>
    public ulong Events { get { lock (_lock) return _events; } }
    /// <summary>True when too many members failed for the level: every bio fails.</summary>
    public bool IsFailed => _failed;
    /// <summary>Slots without an in-sync member.</summary>
    public int Degraded => _slots.Count(m => m.State != MdMemberState.InSync);
    /// <summary>The write-intent bitmap and regions.</summary>
    internal WriteIntentBitmap Regions { get; private set; } = null!;
    /// <summary>The data path.</summary>
    internal MdTarget Personality => _personality!;
    /// <summary>The RAID5 write journal the array runs with, or null.</summary>
    internal Raid5Journal? Journal { get; private set; }
    /// <summary>What the write journal holds and did, or null without one.</summary>
    public Raid5JournalStatus? JournalStatus => Journal?.Status;
    /// <summary>The members' superblocks say the array has a write journal (MD_FEATURE_JOURNAL), whether or not it runs with it.</summary>
    public bool HasJournal => (_template.FeatureMap & MdSuperblock.FeatureJournal) != 0;
    /// <summary>What happened to the array, oldest first (also sent to <see cref="MessageSink"/>).</summary>
    public IReadOnlyList<string> Log { get { lock (_log) return [.. _log]; } }

    /// <summary>The members by slot.</summary>
    public IReadOnlyList<MdMemberStatus> Members =>
        [.. _slots.Select(m => new MdMemberStatus(m.Slot, m.Spec, m.State, m.RecoveryOffset, m.IoErrors))];

    /// <summary>Bits set in the bitmap now (regions written recently, or unsynced).</summary>
    public long BitmapDirtyBits => Regions.DirtyBits;
    /// <summary>Bytes of member data per bitmap bit (0 without a bitmap).</summary>
    public long BitmapChunkBytes => Regions.Bitmap is null ? 0 : Regions.RegionSectors << Bio.SectorShift;
    /// <summary>Bitmap flushes written since assembly.</summary>
    public long BitmapFlushes => Regions.Flushes;
    /// <summary>How often the bitmap daemon clears idle bits (md's daemon_sleep, 5 s by default).</summary>
    public TimeSpan BitmapDaemonInterval { get; set; } = TimeSpan.FromSeconds(5);

    /// <summary>The array a device opened by an <c>md:</c> spec runs, or null for another device.</summary>
    public static MdArray? Of(IBlockDevice device) =>
        device is MappedDevice { Table: [{ Target: MdTarget t }] } ? t.Array : null;

    /// <summary>Every array open in this process (for a control socket's status).</summary>
    public static IReadOnlyList<MdArray> All
    {
        get
        {
            lock (s_arraysLock)
            {
                s_arrays.RemoveAll(w => !w.TryGetTarget(out MdArray? a) || a._disposed);
                return [.. s_arrays.Select(w => w.TryGetTarget(out MdArray? a) ? a : null).OfType<MdArray>()];
            }
        }
    }

    /// <summary>mdstat's view of the array: "active raid1 [2/1] [U_]", "(degraded)", "FAILED".</summary>
    public string StatusLine
    {
        get
        {
            var sb = new StringBuilder();
            sb.Append(IsFailed ? "FAILED" : IsReadOnly ? "active (read-only)" : "active").Append(' ').Append(MdExamine.LevelName((uint)Level));
            int up = _slots.Count(m => m.State == MdMemberState.InSync);
            sb.Append($" [{RaidDisks}/{up}] [");
            foreach (MdMember m in _slots) sb.Append(m.State == MdMemberState.InSync ? 'U' : '_');
            sb.Append(']');
            if (up < RaidDisks && !IsFailed) sb.Append(" degraded");
            MdSyncStatus s = Sync;
            if (s.Action != MdSyncAction.Idle)
                sb.Append($" {s.Action.ToString().ToLowerInvariant()} {(s.TotalSectors == 0 ? 100 : 100.0 * s.DoneSectors / s.TotalSectors):F1}% ({s.DoneSectors}/{s.TotalSectors}) speed={s.SpeedKiBPerSecond}K/sec");
            return sb.ToString();
        }
    }

    // ---- failures and superblock updates ----------------------------------------------------------

    /// <summary>Marks <paramref name="member"/> faulty after a failed bio; the superblocks of the others record it.</summary>
    internal void MemberFailed(MdMember member, BlockStatus status, string what)
    {
        member.CountError();
        lock (_lock)
        {
            if (member.State is MdMemberState.Faulty or MdMemberState.Missing) return;
            if (!ReferenceEquals(_slots[member.Slot], member)) return; // already replaced
            member.State = MdMemberState.Faulty;
            if (member.DevNumber < _roles.Length) _roles[member.DevNumber] = MdSuperblock.RoleFaulty;
            _sbDirty = true;
            CheckFailedUnsynchronized();
        }
        Report($"member {member.Spec} (slot {member.Slot}) failed ({what}: {status}); {(IsFailed ? "the array has FAILED" : "continuing degraded")}");
        _wake.Set();
    }

    /// <summary>Fails the array when no longer enough members are in sync; the caller holds the lock.</summary>
    private void CheckFailedUnsynchronized()
    {
        int inSync = _slots.Count(m => m.State == MdMemberState.InSync);
        if (inSync < (Level == 5 ? RaidDisks - 1 : 1)) _failed = true;
    }

    /// <summary>Members writes go to (in sync or recovering, with a device).</summary>
    internal MdMember[] WritableMembers() => [.. _slots.Where(m => m.Writable)];

    /// <summary>The member in <paramref name="slot"/> now (lock-free read for the I/O path).</summary>
    internal MdMember Slot(int slot) => Volatile.Read(ref _slots[slot]);

    /// <summary>Every present member completes bios on the submitting thread (memory devices: pmem, RAM), so member I/O computes rather than waits.</summary>
    internal bool MembersSynchronous()
    {
        for (int i = 0; i < RaidDisks; i++)
            if (Slot(i).Device is { } d && (d.Features & DeviceFeatures.Synchronous) == 0) return false;
        return true;
    }

    /// <summary>Completes <paramref name="item"/> once the superblocks record the failures seen so far.</summary>
    internal void DeferUntilSuperblocks(IMdDeferred item)
    {
        lock (_lock)
        {
            item.NextDeferred = null;
            if (_deferredTail is null) _deferredHead = item; else _deferredTail.NextDeferred = item;
            _deferredTail = item;
        }
        _wake.Set();
    }

    /// <summary>
    /// Writes the superblocks of every writable member (events + 1) and then completes what waited
    /// for them. A member whose superblock write fails is marked faulty and the others are written
    /// again. Worker thread, assembly and shutdown only.
    /// </summary>
    private void WriteSuperblocks(bool clean)
    {
        if (IsReadOnly) return;
        IMdDeferred? deferred;
        while (true)
        {
            MdMember[] targets;
            ushort[] roles;
            ulong events;
            lock (_lock)
            {
                _sbDirty = false;
                events = ++_events;
                roles = (ushort[])_roles.Clone();
                targets = WritableMembers();
            }
            Regions.UpdateSuperblock(events, cleared: clean);
            if (Regions.Bitmap is not null && targets.Length > 0)
            {
                try { Regions.FlushAndWait(TimeSpan.FromSeconds(30)); }
                catch (IOException e) { Report($"bitmap update failed: {e.Message}"); }
            }
            var block = new byte[MdSuperblock.BlockBytes];
            foreach (MdMember m in targets)
            {
                MdSuperblock sb = _template.Clone();
                sb.DevRoles = roles;
                sb.DevNumber = m.DevNumber;
                sb.DeviceUuid = m.DeviceUuid;
                sb.DataOffset = (ulong)m.DataOffset;
                sb.DataSize = (ulong)m.DataSize;
                sb.Events = events;
                sb.UTime = MdSuperblock.EncodeTime(DateTimeOffset.UtcNow);
                sb.ResyncOffset = clean ? MdSuperblock.Clean : 0;
                sb.FeatureMap = (sb.FeatureMap & ~MdSuperblock.FeatureRecoveryOffset)
                    | (m.State == MdMemberState.Recovering ? MdSuperblock.FeatureRecoveryOffset : 0);
                sb.RecoveryOffset = m.State == MdMemberState.Recovering ? (ulong)m.RecoveryOffset : 0;
                sb.Encode(block);
                try { _io.Write(m.Device!, MdSuperblock.SuperOffsetSectors * 512, block); }
                catch (IOException) { MemberFailed(m, BlockStatus.IoError, "superblock write"); }
            }
            lock (_lock)
            {
                if (_sbDirty && !_failed) continue; // a member failed meanwhile: record that too
                deferred = _deferredHead;
                _deferredHead = _deferredTail = null;
            }
            break;
        }
        while (deferred is not null)
        {
            IMdDeferred next = deferred.NextDeferred!;
            deferred.NextDeferred = null;
            deferred.CompleteDeferred();
            deferred = next;
        }
    }

    /// <summary>Handles what the worker owes: superblock updates and the completions that wait for them.</summary>
    private void Service()
    {
        bool due;
        lock (_lock) due = _sbDirty || _deferredHead is not null;
        if (due) WriteSuperblocks(clean: false);
    }

    /// <summary>The journal device failed: reported; the personality refuses writes from now on.</summary>
    internal void JournalFailed(string message) => Report(message);

    private void Report(string message)
    {
        string line = $"md {Name}: {message}";
        lock (_log) _log.Add($"{DateTime.UtcNow:HH:mm:ss} {message}");
        MessageSink?.Invoke(line);
    }

    // ---- the worker --------------------------------------------------------------------------------

    private void StartWorker()
    {
        _worker = new Thread(WorkerLoop) { IsBackground = true, Name = $"md-{Name}" };
        _worker.Start();
        lock (s_arraysLock) s_arrays.Add(new WeakReference<MdArray>(this));
    }

    private void WorkerLoop()
    {
        long nextDaemon = Environment.TickCount64 + (long)BitmapDaemonInterval.TotalMilliseconds;
        while (!_stopping)
        {
            long wait = Math.Clamp(nextDaemon - Environment.TickCount64, 1, 1000);
            _wake.WaitOne((int)wait);
            if (_stopping) break;
            try
            {
                Service();
                RunRepairs();
                RunPendingSync();
                if (Environment.TickCount64 >= nextDaemon)
                {
                    nextDaemon = Environment.TickCount64 + (long)BitmapDaemonInterval.TotalMilliseconds;
                    // A degraded array keeps its bits (md does, for a re-added member); a resync needs them.
                    if (!IsReadOnly && !_failed && Degraded == 0 && Sync.Action == MdSyncAction.Idle) Regions.ClearIdle();
                }
            }
            catch (Exception e) when (e is IOException or InvalidOperationException or ObjectDisposedException)
            {
                Report($"worker: {e.Message}");
            }
        }
    }

    /// <summary>Wakes the worker (a sync was asked for, the daemon interval changed).</summary>
    internal void Wake() => _wake.Set();

    /// <summary>Stops the worker, drains writes, clears the bitmap and marks the superblocks clean; releases the members.</summary>
    internal void Shutdown()
    {
        lock (_lock)
        {
            if (_disposed) return;
            _disposed = true;
        }
        _stopping = true;
        _wake.Set();
        _worker?.Join();
        if (!IsReadOnly && !_failed)
        {
            // Writes still in flight on asynchronous members finish before the array is called clean.
            long deadline = Environment.TickCount64 + 30_000;
            while (Regions.InFlight > 0 && Environment.TickCount64 < deadline) Thread.Sleep(1);
            foreach (MdMember m in WritableMembers())
                if ((m.Device!.Features & DeviceFeatures.WriteCache) != 0) m.Device.SubmitAndWait(new Bio().Init(BioOp.Flush, 0));
            // Every record's stripe is on the flushed members now: the journal can forget them all.
            Journal?.Stop(clean: true);
            bool keepBits = Degraded > 0 || Regions.UnsyncedRegions > 0;
            if (!keepBits) Regions.SetAll(false);
            try { WriteSuperblocks(clean: Regions.UnsyncedRegions == 0); }
            catch (IOException e) { Report($"final superblock update failed: {e.Message}"); }
        }
        else
        {
            // Release whoever still waits for a superblock update that will not come.
            IMdDeferred? d;
            lock (_lock) { d = _deferredHead; _deferredHead = _deferredTail = null; }
            for (; d is not null; d = d.NextDeferred) d.CompleteDeferred();
        }
        lock (s_claimLock)
            foreach (MdMember m in _slots.Concat(_retired))
                if (m.Device is not null && s_claims.TryGetValue(m.Device, out MdArray? a) && a == this) s_claims.Remove(m.Device);
        lock (s_claimLock)
            if (Journal is not null && s_claims.TryGetValue(Journal.Device, out MdArray? a) && a == this) s_claims.Remove(Journal.Device);
        Regions.Dispose();
        DisposeSyncBuffers();
        _io.Dispose();
    }

    /// <summary>Releases the members' device handles (after the personality is disposed).</summary>
    private sealed class MemberHandles(MdArray array) : IDisposable
    {
        public void Dispose()
        {
            array.Journal?.Dispose();
            array._journalHandle?.Dispose();
            foreach (MdMember m in array._slots.Concat(array._retired).Reverse()) m.Handle?.Dispose();
        }
    }
}
