using System.Runtime.CompilerServices;
using PfnBlock.Block;
using PfnBlock.Memory;

namespace PfnBlock.Targets.Md;

/// <summary>
/// The mirror personality (md's raid1): a write goes to every writable leg as clones of the
/// array's bio, a read to the leg that owns its 2 MiB granule (remapped in place, with a per-leg end_io hook).
/// A leg that fails a bio is marked faulty; a failed read is retried on another leg from its
/// end_io hook (<see cref="EndIoResult.Incomplete"/> and a resubmission), and a write that
/// reached at least one leg completes once the superblocks record the failure.
/// </summary>
/// <remarks>
/// Writes take the write-intent bitmap first: each write counts itself in its regions and, when a
/// region's bit is not durable yet, waits for the bitmap flush that makes it so. Regions a crash
/// left unsynced are read from the resync's source leg only, until the resync reaches them.
/// </remarks>
internal sealed class Raid1Target : MdTarget
{
    private static readonly Action<Bio> s_legDone = LegDone;
    /// <summary>Reads are spread over the legs by 2 MiB granule of the address (log2 of its sectors).</summary>
    private const int ReadGranuleShift = 12;
    /// <summary>The write whose legs this thread is submitting (inline completions are noted, not settled).</summary>
    [ThreadStatic] private static R1Write? t_issuing;

    private readonly BioPool _writes;
    private readonly BioPool _clones;

    public Raid1Target(MdArray array, IBlockDevice[] devices) : base(array, devices)
    {
        _writes = new BioPool(new BioPoolOptions { Name = $"md-{array.Name}-writes", MaxVecs = 1, Context = _ => new R1Write(this) });
        _clones = new BioPool(new BioPoolOptions { Name = $"md-{array.Name}-legs", MaxVecs = 1, Context = _ => new LegIo() });
    }

    /// <summary>Mirrors pass a volatile cache, FUA, discard and zeroing on to every leg; nothing is synchronous (a write may wait for the bitmap or a resync barrier).</summary>
    public override DeviceFeatures PassesThrough => DeviceFeatures.WriteCache | DeviceFeatures.Fua | DeviceFeatures.Discard
        | DeviceFeatures.DiscardZeroesData | DeviceFeatures.WriteZeroes | DeviceFeatures.ReadOnly;

    /// <summary>Clones and carriers still out (0 when idle: a leak check).</summary>
    public long Outstanding => _writes.Outstanding + _clones.Outstanding;

    // ---- reads ---------------------------------------------------------------------------------------

    /// <inheritdoc/>
    protected override MapResult MapRead(Bio bio, out IBlockDevice? lower)
    {
        long sector = bio.Sector, sectors = bio.Size >> Bio.SectorShift;
        MdMember? leg = Unsynced(sector, sectors) ? Primary() : Choose(sector, sectors, 0);
        if (leg is null) return Fail(bio, out lower);
        bio.Iter.Sector += leg.DataOffset;
        bio.PushEndIo(leg.ReadHook ??= new LegReadHook(this, leg, 1 << leg.Slot));
        lower = leg.Device;
        return MapResult.Remapped;
    }

    /// <summary>True when the range touches a region an unclean stop left unsynced (its legs may differ).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private bool Unsynced(long sector, long sectors)
    {
        WriteIntentBitmap regions = Array.Regions;
        int last = regions.RegionOf(sector + sectors - 1);
        for (int r = regions.RegionOf(sector); r <= last; r++)
            if (regions.IsUnsynced(r)) return true;
        return false;
    }

    /// <summary>The leg a resync copies from (the first in sync): the only one read in unsynced regions.</summary>
    private MdMember? Primary()
    {
        for (int i = 0; i < Array.RaidDisks; i++)
        {
            MdMember m = Array.Slot(i);
            if (m.State == MdMemberState.InSync) return m;
        }
        return null;
    }

    /// <summary>
    /// The leg that serves reads of the range's 2 MiB granule (the granule number modulo the legs),
    /// or the next one that can serve the range and is not in the <paramref name="tried"/> mask of
    /// slots. Dividing the address space, rather than taking legs in turn, keeps each leg's
    /// share of a random read's footprint at 1/n: every leg's pages, TLB entries and cache lines
    /// then serve one part of the array, where taking turns touches both copies of every block
    /// (measured in docs/BENCHMARKS.md §9). Any leg is as fast as another for memory.
    /// </summary>
    private MdMember? Choose(long sector, long sectors, int tried)
    {
        int n = Array.RaidDisks;
        int start = (int)((ulong)(sector >> ReadGranuleShift) % (uint)n);
        for (int k = 0; k < n; k++)
        {
            int slot = (start + k) % n;
            if ((tried & (1 << slot)) != 0) continue;
            MdMember m = Array.Slot(slot);
            if (m.Readable(sector, sectors)) return m;
        }
        return null;
    }

    /// <summary>The read hook of <paramref name="leg"/> for a read that already tried the slots in <paramref name="tried"/> (error path only).</summary>
    private LegReadHook RetryHook(MdMember leg, int tried) => _retryHooks.GetOrAdd((leg, tried), k => new LegReadHook(this, k.Leg, k.Tried));

    private readonly System.Collections.Concurrent.ConcurrentDictionary<(MdMember Leg, int Tried), LegReadHook> _retryHooks = new();

    /// <summary>
    /// Sees a read of one leg complete. On an I/O error (a dead leg, or a bad sector) it reports
    /// the error to the array, which rewrites the range on that leg from a good one later (md's
    /// fix_read_error) or fails the leg, and retries the read on a leg not tried yet (the
    /// <c>tried</c> mask of slots bounds the retries); with none left the read fails.
    /// </summary>
    private sealed class LegReadHook(Raid1Target owner, MdMember leg, int tried) : IBioEndIo
    {
        public EndIoResult EndIo(Bio bio, ref BlockStatus status)
        {
            // Only a failure of the leg is retried; a refused request (a bad vector) would fail anywhere.
            if (!status.IsDeviceError()) return EndIoResult.Done;
            long sector = bio.Iter.Sector - leg.DataOffset, sectors = bio.Size >> Bio.SectorShift;
            owner.Array.ReadError(leg, sector, (int)sectors);
            MdMember? next = owner.Choose(sector, sectors, tried);
            if (next is null) return EndIoResult.Done;
            bio.Iter.Sector = sector + next.DataOffset;
            bio.PushEndIo(owner.RetryHook(next, tried | 1 << next.Slot));
            next.Device!.Submit(bio);
            return EndIoResult.Incomplete;
        }
    }

    // ---- writes (and discard, write-zeroes) ---------------------------------------------------------

    /// <inheritdoc/>
    protected override MapResult MapWrite(Bio bio)
    {
        // Array sectors are member sectors in a mirror: the regions are the bio's own.
        WriteIntentBitmap regions = Array.Regions;
        Bio carrier = _writes.Rent();
        return BeginWrite(carrier, carrier.ContextAs<R1Write>(), bio, regions.RegionOf(bio.Sector), regions.RegionOf(bio.Sector + (bio.Size >> Bio.SectorShift) - 1));
    }

    /// <summary>
    /// Sends the write to every writable leg (the bitmap bits are durable). Every clone is rented
    /// before the first is submitted, and a leg that completes inline (a memory device does the
    /// copy in <c>Submit</c>) is only noted, on this thread, with no locked instruction: a locked
    /// instruction waits for the non-temporal stores of the copy before it to reach memory, so one
    /// between two legs' copies serialises them (measured with a C probe here: two 4 KiB copies
    /// with a lock after each, 0.55 M/s; without, 1.0 M/s). The inline legs are settled once all
    /// are sent. The legs go through <see cref="BlockDevice.SubmitNow"/>: plain submission inside
    /// the array's own dispatch would only queue them, and they would complete after this method
    /// returned, each paying two locked instructions (a profile showed those as 23 % of a write).
    /// The legs defer their store fences (<see cref="BioFlags.DeferFence"/>) to one fence here,
    /// for the same reason: a fence per leg would make the second leg's copy wait for the first's.
    /// </summary>
    private void Issue(R1Write w)
    {
        Bio parent = w.Parent!;
        int disks = Array.RaidDisks;
        if (w.Clones.Length < disks) w.Clones = new Bio[disks];
        int n = 0;
        for (int i = 0; i < disks; i++)
        {
            MdMember m = Array.Slot(i);
            if (!m.Writable) continue;
            Bio clone = parent.Clone(_clones);
            clone.Iter.Sector += m.DataOffset;
            LegIo io = clone.ContextAs<LegIo>();
            io.Write = w;
            io.Leg = m;
            io.Index = n;
            clone.EndIo = s_legDone;
            // The legs' non-temporal copies drain together behind the one fence before Finish.
            clone.Flags |= BioFlags.DeferFence;
            w.Clones[n++] = clone;
        }
        // The issuer's hold plus one per leg, published before the first submission.
        Volatile.Write(ref w.Pending, n + 1);
        R1Write? outer = t_issuing;
        t_issuing = w;
        for (int i = 0; i < n; i++)
        {
            Bio clone = w.Clones[i];
            BlockDevice.SubmitNow(clone.ContextAs<LegIo>().Leg!.Device!, clone);
        }
        t_issuing = outer;
        SettleInline(w, n);
    }

    /// <summary>Releases the legs that completed inline and drops their holds and the issuer's: with every leg inline, nothing else ever saw the write, so no locked instruction is needed.</summary>
    private void SettleInline(R1Write w, int n)
    {
        int inline = 0;
        for (int i = 0; i < n; i++)
        {
            if ((w.InlineDone & (1L << i)) == 0) continue;
            inline++;
            Bio clone = w.Clones[i];
            LegIo io = clone.ContextAs<LegIo>();
            MdMember leg = io.Leg!;
            BlockStatus status = clone.Status;
            io.Write = null;
            io.Leg = null;
            clone.Release();
            if (status == BlockStatus.Ok) w.InlineSucceeded++;
            else Failed(w, leg, status);
        }
        // The legs deferred their store fences (BioFlags.DeferFence): one fence for all of them.
        if (inline > 0) PersistentMemory.Drain();
        if (inline == n) { w.Pending = 0; Finish(w); }
        else if (Interlocked.Add(ref w.Pending, -(inline + 1)) == 0) Finish(w);
    }

    private static void LegDone(Bio clone)
    {
        LegIo io = clone.ContextAs<LegIo>();
        R1Write w = io.Write!;
        if (t_issuing == w)
        {
            // Inline, inside Issue on this thread: noted; Issue settles it after the last leg is sent.
            w.InlineDone |= 1L << io.Index;
            return;
        }
        MdMember leg = io.Leg!;
        BlockStatus status = clone.Status;
        io.Write = null;
        io.Leg = null;
        clone.Release();
        PersistentMemory.Drain(); // the leg deferred its fence to its completion's receiver: here
        if (status == BlockStatus.Ok) Interlocked.Increment(ref w.Succeeded);
        else Failed(w, leg, status);
        if (Interlocked.Decrement(ref w.Pending) == 0) w.Owner.Finish(w);
    }

    private static void Failed(R1Write w, MdMember leg, BlockStatus status)
    {
        if (status.IsDeviceError())
        {
            w.LostMember = true;
            w.Owner.Array.MemberFailed(leg, status, "write");
        }
        else w.Error = status;
    }

    private void Finish(R1Write w) =>
        w.Finish(Array, w.Error != BlockStatus.Ok ? w.Error : Volatile.Read(ref w.Succeeded) + w.InlineSucceeded > 0 ? BlockStatus.Ok : BlockStatus.IoError);

    /// <summary>One array write: its legs still outstanding and how many succeeded.</summary>
    private sealed class R1Write(Raid1Target owner) : MdWrite
    {
        public readonly Raid1Target Owner = owner;
        /// <summary>Holds still out: one per leg sent plus the issuer's.</summary>
        public int Pending;
        /// <summary>Legs that succeeded on other threads (locked increments).</summary>
        public int Succeeded;
        /// <summary>Legs that succeeded inline (touched by the issuing thread only).</summary>
        public int InlineSucceeded;
        /// <summary>Bit i: leg clone i completed inline and waits for the issuer to settle it.</summary>
        public long InlineDone;
        /// <summary>This write's leg clones, by leg index (reused across writes).</summary>
        public Bio[] Clones = [];

        public override void Start(Bio carrier, Bio parent, int first, int last)
        {
            base.Start(carrier, parent, first, last);
            Succeeded = 0;
            InlineSucceeded = 0;
            InlineDone = 0;
        }

        public override void BitsDurable() => Owner.Issue(this);
    }

    /// <summary>A leg clone's context: its write and its leg.</summary>
    private sealed class LegIo
    {
        public R1Write? Write;
        public MdMember? Leg;
        /// <summary>Which of its write's clones this is (a bit of <see cref="R1Write.InlineDone"/>).</summary>
        public int Index;
    }

    // ---- sync ----------------------------------------------------------------------------------------

    internal override unsafe long SyncWindow(MdSyncAction action, MdMember? target, long sector, int sectors, MdSyncBuffers buffers)
    {
        int bytes = sectors << Bio.SectorShift;
        // The source: the primary for a resync or check (what reads of unsynced regions returned), any
        // other leg for a recovery; a source that fails the read is reported and the next one tried.
        int tried = action == MdSyncAction.Recovery ? 1 << target!.Slot : 0;
        MdMember? source = action == MdSyncAction.Recovery ? Choose(sector, sectors, tried) : Primary();
        while (source is not null && !Array.SyncRead(source, sector, buffers.Pfn(0), bytes))
        {
            tried |= 1 << source.Slot;
            source = Choose(sector, sectors, tried);
        }
        if (source is null) return -1;
        switch (action)
        {
            case MdSyncAction.Recovery:
                return Array.SyncIo(target!, BioOp.Write, sector, buffers.Pfn(0), bytes) ? 0 : -1;
            case MdSyncAction.Resync:
                for (int i = 0; i < Array.RaidDisks; i++)
                {
                    MdMember m = Array.Slot(i);
                    if (m != source && m.Writable) Array.SyncIo(m, BioOp.Write, sector, buffers.Pfn(0), bytes);
                }
                return 0;
            default:
                long mismatches = 0;
                for (int i = 0; i < Array.RaidDisks; i++)
                {
                    MdMember m = Array.Slot(i);
                    if (m == source || m.State != MdMemberState.InSync) continue;
                    if (!Array.SyncRead(m, sector, buffers.Pfn(1), bytes)) continue;
                    // md counts a mismatch per 4 KiB page that differs, in sectors.
                    for (int off = 0; off < bytes; off += 4096)
                    {
                        int n = Math.Min(4096, bytes - off);
                        if (!new ReadOnlySpan<byte>(buffers.Address(0) + off, n).SequenceEqual(new ReadOnlySpan<byte>(buffers.Address(1) + off, n)))
                            mismatches += n >> Bio.SectorShift;
                    }
                }
                return mismatches;
        }
    }

    internal override bool RepairWindow(MdMember bad, long sector, int sectors, MdSyncBuffers buffers)
    {
        int bytes = sectors << Bio.SectorShift;
        int tried = 1 << bad.Slot;
        MdMember? source = Choose(sector, sectors, tried);
        while (source is not null && !Array.SyncRead(source, sector, buffers.Pfn(0), bytes))
        {
            tried |= 1 << source.Slot;
            source = Choose(sector, sectors, tried);
        }
        if (source is null) return false;
        // Write the good copy back, then read it back: a leg that cannot keep it fails (md's r1_sync_page_io).
        return Array.SyncIo(bad, BioOp.Write, sector, buffers.Pfn(0), bytes) && Array.SyncIo(bad, BioOp.Read, sector, buffers.Pfn(1), bytes);
    }
}
