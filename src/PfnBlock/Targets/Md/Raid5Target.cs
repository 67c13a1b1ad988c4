using System.Runtime.CompilerServices;
using PfnBlock.Block;
using PfnBlock.Devices.Pmem;
using PfnBlock.Memory;

namespace PfnBlock.Targets.Md;

/// <summary>
/// The RAID5 personality (md's raid5, left-symmetric, <see cref="Raid5Layout"/>). Reads go
/// straight to the member holding the chunk (split at chunk boundaries); a chunk whose member is
/// missing or failed the read is reconstructed from the others (XOR of the stripe's other
/// chunks and parity). Writes update data and parity per stripe under a stripe lock: a
/// full-stripe write computes parity from the new data alone; a partial one picks, per request,
/// read-modify-write (read old data and parity) or reconstruct-write (read the untouched data),
/// whichever reads less, as md's handle_stripe_dirtying does; a degraded stripe is written by
/// reconstructing its missing chunk first.
/// </summary>
/// <remarks>
/// <para>Stripe work is synchronous member I/O on stripe buffers from a fixed pool. When every
/// member completes bios synchronously (pmem) it runs on the submitting thread; otherwise, or
/// when the pool is empty, on the target's own thread (md's raid5d), so <see cref="MapWrite"/> never
/// blocks on a slow member.</para>
/// <para>With a write-back journal (<see cref="Raid5Journal.WriteBack"/>) a write only puts its
/// new data in the journal and completes; the write-out workers (md's r5c reclaim, one per core,
/// each owning a share of the stripes) later write the stripes out, each worker the stripe of its
/// oldest pending record first, with all its pending records merged into one stripe write
/// (<see cref="WriteOutStripe"/>), and reads of a stripe with records not yet written out lay them
/// over what the members hold.</para>
/// <para>Discard and write-zeroes become writes of zeros (parity stays right), except that a
/// discard of whole stripes goes down as discards when every member guarantees discarded sectors
/// read back as zeros (md's devices_handle_discard_safely): zero data has zero parity.</para>
/// </remarks>
internal sealed unsafe partial class Raid5Target : MdTarget
{
    private const int LockSlots = 4096;
    private const int ReadFailed = -2;

    private readonly Raid5Layout _layout;
    private readonly int _chunkBytes;
    private readonly BioPool _splits;
    private readonly BioPool _writes;
    private readonly StripeBufferPool _pool;
    private readonly StripeBuffers _workerBuffers;
    private readonly StripeBufferPool _workerPool;
    private readonly int[] _locks = new int[LockSlots * 16];
    private readonly PhysicalAddressSpace _space;
    private readonly Queue<Job> _queue = new();
    private readonly Lock _queueLock = new();
    private readonly AutoResetEvent _wake = new(false);
    private readonly Thread _thread;
    private readonly Raid5Journal? _journal;
    private readonly WriteOutWorker[] _outWorkers = []; // write-back: they write data records out to the members (Raid5Target.WriteOut.cs)
    private long _writeOuts, _mergedRecords;
    private volatile bool _stopping;
    private volatile bool _outStopping;
    private int _outRunning;                 // write-out workers not yet ended
    private long _fullStripeWrites, _rmwWrites, _rcwWrites, _degradedWrites, _reconstructedReads, _directWrites;

    public Raid5Target(MdArray array, IBlockDevice[] devices) : base(array, devices)
    {
        _layout = new Raid5Layout(array.RaidDisks, array.ChunkSectors);
        _journal = array.Journal;
        _chunkBytes = checked((int)(array.ChunkSectors << Bio.SectorShift));
        _space = devices[0].AddressSpace;
        _splits = new BioPool(new BioPoolOptions { Name = $"md-{array.Name}-r5-parts", MaxVecs = 1 });
        _writes = new BioPool(new BioPoolOptions { Name = $"md-{array.Name}-r5-writes", MaxVecs = 1, Context = _ => new R5Write(this) });
        _pool = new StripeBufferPool(Math.Min(64, Environment.ProcessorCount + 2), array.RaidDisks + 1, _chunkBytes, _space, $"md-{array.Name}-stripes");
        _workerPool = new StripeBufferPool(1, array.RaidDisks + 1, _chunkBytes, _space, $"md-{array.Name}-raid5d");
        _workerPool.TryRent(out _workerBuffers);
        _thread = new Thread(Worker) { IsBackground = true, Name = $"md-{array.Name}-raid5d" };
        _thread.Start();
        if (_journal is { WriteBack: true } j) _outWorkers = StartWriteOut(j);
    }

    /// <summary>RAID5 passes a volatile cache, FUA and read-only on; it is not synchronous (a write may wait for the bitmap).</summary>
    public override DeviceFeatures PassesThrough => DeviceFeatures.WriteCache | DeviceFeatures.Fua | DeviceFeatures.ReadOnly;

    /// <summary>Discard and write-zeroes are always honoured (as writes of zeros where they cannot go down), and a discarded range reads back as zeros.</summary>
    public override DeviceFeatures Adds => DeviceFeatures.Discard | DeviceFeatures.DiscardZeroesData | DeviceFeatures.WriteZeroes;

    /// <summary>The layout.</summary>
    internal Raid5Layout Layout => _layout;

    /// <summary>Stripe writes by kind since assembly: full-stripe, read-modify-write, reconstruct-write, degraded.</summary>
    public (long Full, long Rmw, long Rcw, long Degraded) WriteCounts =>
        (Interlocked.Read(ref _fullStripeWrites), Interlocked.Read(ref _rmwWrites), Interlocked.Read(ref _rcwWrites), Interlocked.Read(ref _degradedWrites));

    /// <summary>
    /// Stripe writes since assembly that took the direct path: a full stripe written from the bio's
    /// frames, or a one-chunk write whose member reads were direct-access loads (also counted by kind above).
    /// </summary>
    public long DirectWrites => Interlocked.Read(ref _directWrites);

    /// <summary>Write-back: stripe write-outs since assembly, and the data records they wrote out (merged: several per stripe).</summary>
    public (long Stripes, long Records) WriteOutCounts => (Interlocked.Read(ref _writeOuts), Interlocked.Read(ref _mergedRecords));

    /// <summary>Chunk pieces read by reconstruction (a member missing or failing the read).</summary>
    public long ReconstructedReads => Interlocked.Read(ref _reconstructedReads);

    /// <summary>True when every member completes bios on the submitting thread (stripe work may then run inline).</summary>
    private bool MembersSynchronous() => _journal is not { Synchronous: false } && Array.MembersSynchronous();

    // ---- reads -----------------------------------------------------------------------------------------

    /// <inheritdoc/>
    protected override MapResult MapRead(Bio bio, out IBlockDevice? lower)
    {
        while (true)
        {
            (_, _, int member, long memberSector, long left) = _layout.Map(bio.Sector);
            long sectors = bio.Size >> Bio.SectorShift;
            bool last = sectors <= left;
            Bio part = bio;
            if (!last)
            {
                part = bio.Split((int)left, _splits);
                part.Chain(bio);
            }
            MdMember m = Array.Slot(member);
            if (_journal is { WriteBack: true } j && j.HasPending(memberSector & ~(_layout.ChunkSectors - 1)))
            {
                // Write-back data not yet on the members: read under the stripe lock and lay it over.
                Reconstruct(part, member, memberSector, overlay: true);
                if (last)
                {
                    lower = null;
                    return MapResult.Submitted;
                }
                continue;
            }
            if (m.Readable(memberSector, last ? sectors : left))
            {
                part.Iter.Sector = memberSector + m.DataOffset;
                part.PushEndIo(m.ReadHook ??= new R5ReadHook(this, m));
                if (last)
                {
                    lower = m.Device;
                    return MapResult.Remapped;
                }
                m.Device!.Submit(part);
                continue;
            }
            Reconstruct(part, member, memberSector);
            if (last)
            {
                lower = null;
                return MapResult.Submitted;
            }
        }
    }

    /// <summary>
    /// Reconstructs the chunk piece <paramref name="part"/> (member sectors from <paramref name="memberSector"/>
    /// of slot <paramref name="slot"/>), or with <paramref name="overlay"/> reads it with the journal's
    /// pending data laid over, and completes it: here, or on the worker.
    /// </summary>
    private void Reconstruct(Bio part, int slot, long memberSector, bool overlay = false)
    {
        if (MembersSynchronous() && _pool.TryRent(out StripeBuffers set))
        {
            BlockStatus status;
            try { status = overlay ? OverlayRead(part, slot, memberSector, set) : ReconstructRead(part, slot, memberSector, set); }
            finally { _pool.Return(set); }
            part.Complete(status);
            return;
        }
        Enqueue(new Job(part, null, slot, memberSector) { Overlay = overlay });
    }

    /// <summary>
    /// Reads the piece from its member (or by reconstruction) into the stripe buffer, lays the
    /// journal's pending data records of the stripe over it, and copies it into the bio; under the
    /// stripe lock, so no record is written out meanwhile.
    /// </summary>
    private BlockStatus OverlayRead(Bio part, int slot, long memberSector, StripeBuffers set)
    {
        int bytes = (int)part.Size;
        long stripe = memberSector >> _layout.ChunkShift;
        long inChunk = memberSector & (_layout.ChunkSectors - 1);
        long offset = inChunk << Bio.SectorShift;
        LockStripe(stripe);
        try
        {
            MdMember m = Array.Slot(slot);
            int buffer = slot;
            if (!m.Readable(memberSector, bytes >> Bio.SectorShift) || MemberIo(m, BioOp.Read, memberSector, set, slot, offset, bytes, BioFlags.None) != BlockStatus.Ok)
            {
                if (m.Readable(memberSector, bytes >> Bio.SectorShift)) Array.ReadError(m, memberSector, bytes >> Bio.SectorShift);
                BlockStatus r = ReconstructInto(slot, memberSector, bytes, offset, set);
                if (r != BlockStatus.Ok) return r;
                buffer = Array.RaidDisks;
            }
            if (!_journal!.Overlay(stripe << _layout.ChunkShift, slot, inChunk, inChunk + (bytes >> Bio.SectorShift), set, buffer)) return BlockStatus.IoError;
            return CopyBio(part, 0, set.At(buffer, offset), bytes, toBio: true) ? BlockStatus.Ok : BlockStatus.Invalid;
        }
        finally { UnlockStripe(stripe); }
    }

    /// <summary>Sees a member read complete; a failed one is reported and the piece reconstructed from the others.</summary>
    private sealed class R5ReadHook(Raid5Target owner, MdMember member) : IBioEndIo
    {
        public EndIoResult EndIo(Bio bio, ref BlockStatus status)
        {
            if (!status.IsDeviceError()) return EndIoResult.Done;
            long memberSector = bio.Iter.Sector - member.DataOffset;
            owner.Array.ReadError(member, memberSector, (int)(bio.Size >> Bio.SectorShift));
            // The worker reconstructs it and completes it again (md retries a failed read through the stripe cache).
            owner.Enqueue(new Job(bio, null, member.Slot, memberSector) { Retry = true });
            return EndIoResult.Incomplete;
        }
    }

    /// <summary>Reads the piece by XOR of every other member's same sectors, under the stripe lock, into the bio's memory.</summary>
    private BlockStatus ReconstructRead(Bio part, int slot, long memberSector, StripeBuffers set)
    {
        int bytes = (int)part.Size;
        long stripe = memberSector >> _layout.ChunkShift;
        long offset = (memberSector & (_layout.ChunkSectors - 1)) << Bio.SectorShift;
        LockStripe(stripe);
        try
        {
            BlockStatus r = ReconstructInto(slot, memberSector, bytes, offset, set);
            if (r != BlockStatus.Ok) return r;
            return CopyBio(part, 0, set.At(Array.RaidDisks, offset), bytes, toBio: true) ? BlockStatus.Ok : BlockStatus.Invalid;
        }
        finally { UnlockStripe(stripe); }
    }

    /// <summary>Rebuilds slot <paramref name="slot"/>'s member sectors from <paramref name="memberSector"/> into the spare buffer at <paramref name="offset"/>; the caller holds the stripe lock.</summary>
    private BlockStatus ReconstructInto(int slot, long memberSector, int bytes, long offset, StripeBuffers set)
    {
        byte* acc = set.At(Array.RaidDisks, offset);
        bool first = true;
        for (int j = 0; j < Array.RaidDisks; j++)
        {
            if (j == slot) continue;
            MdMember m = Array.Slot(j);
            if (!m.Readable(memberSector, bytes >> Bio.SectorShift)) return BlockStatus.IoError; // a second member is gone
            if (MemberIo(m, BioOp.Read, memberSector, set, first ? Array.RaidDisks : j, offset, bytes, BioFlags.None) != BlockStatus.Ok)
            {
                Array.ReadError(m, memberSector, bytes >> Bio.SectorShift);
                return BlockStatus.IoError;
            }
            if (!first) Parity.Xor(acc, set.At(j, offset), (nuint)bytes);
            first = false;
        }
        Interlocked.Increment(ref _reconstructedReads);
        return BlockStatus.Ok;
    }

    // ---- writes ----------------------------------------------------------------------------------------

    /// <summary>Write-back: an array flush also makes the journal's records durable (data records of writes without FUA are written without it), once per array flush.</summary>
    protected override MapResult MapFlush(Bio bio, out IBlockDevice? lower)
    {
        if (bio.TargetBioNumber == 0 && _journal is { WriteBack: true } j && !j.Persist())
        {
            lower = null;
            bio.Complete(BlockStatus.IoError);
            return MapResult.Submitted;
        }
        return base.MapFlush(bio, out lower);
    }

    /// <inheritdoc/>
    protected override MapResult MapWrite(Bio bio)
    {
        // An array whose journal is missing or failed is read-only (md's behaviour): no write may bypass it.
        if (Array.IsReadOnly || _journal is { Failed: true })
        {
            bio.Complete(BlockStatus.IoError);
            return MapResult.Submitted;
        }
        if (!_writes.TryRent(out Bio? carrier)) return MapResult.Requeue;
        R5Write w = carrier.ContextAs<R5Write>();
        w.WriteOut = null;
        w.Cached = _journal is { WriteBack: true };
        if (w.Cached)
        {
            // Write-back: the data goes to the journal only, so no member region becomes dirty (the write-out counts itself in).
            w.Start(carrier, bio, 0, -1);
            Dispatch(w);
            return MapResult.Submitted;
        }
        // The regions of the member sectors of every stripe the write touches (parity included).
        long first = bio.Sector / _layout.StripeSectors, last = (bio.Sector + (bio.Size >> Bio.SectorShift) - 1) / _layout.StripeSectors;
        WriteIntentBitmap regions = Array.Regions;
        return BeginWrite(carrier, w, bio, regions.RegionOf(first << _layout.ChunkShift), regions.RegionOf(((last + 1) << _layout.ChunkShift) - 1));
    }

    /// <summary>
    /// Runs the write here when the members are synchronous and a stripe buffer set is free, else on
    /// the worker. A write-back data record touches the journal alone, so it runs here whenever the
    /// journal completes on this thread, whatever the members are (on slow members it would
    /// otherwise queue behind the worker's member I/O). A write-out goes back to its own write-out
    /// worker, which runs it with its own buffers (<see cref="WriteOutWorker.Hand"/>).
    /// </summary>
    private void Dispatch(R5Write w)
    {
        if (w.WriteOut is { } worker)
        {
            worker.Hand();
            return;
        }
        if ((w.Cached ? _journal!.Synchronous : MembersSynchronous()) && _pool.TryRent(out StripeBuffers set))
        {
            try { Process(w, set); }
            finally { _pool.Return(set); }
            Finish(w);
            return;
        }
        Enqueue(new Job(null, w, -1, 0));
    }

    /// <summary>Writes the bio stripe by stripe; records the outcome in <paramref name="w"/>.</summary>
    private void Process(R5Write w, StripeBuffers set)
    {
        Bio bio = w.Parent!;
        if (w.WriteOut is { } worker)
        {
            WriteOutStripe(w, worker, set);
            return;
        }
        // A write-back data record of a preflush write is made durable with every record before it: nothing more to flush.
        if ((bio.Flags & BioFlags.Preflush) != 0 && !w.Cached)
            for (int j = 0; j < Array.RaidDisks; j++)
            {
                MdMember m = Array.Slot(j);
                if (m.Writable && (m.Device!.Features & DeviceFeatures.WriteCache) != 0 && m.Device.SubmitAndWait(set.Bio.Init(BioOp.Flush, 0)) != BlockStatus.Ok)
                    MemberWriteFailed(w, m);
            }
        long sector = bio.Sector, end = sector + (bio.Size >> Bio.SectorShift);
        long bioByte = 0;
        while (sector < end && w.Error == BlockStatus.Ok)
        {
            long stripe = sector / _layout.StripeSectors;
            long stripeStart = stripe * _layout.StripeSectors;
            long n = Math.Min(end, stripeStart + _layout.StripeSectors) - sector;
            // A write-back data record takes no stripe lock: it waits for room while the write-out holds one.
            if (w.Cached) WriteStripe(w, stripe, sector - stripeStart, n, bioByte, set);
            else
            {
                LockStripe(stripe);
                try { WriteStripe(w, stripe, sector - stripeStart, n, bioByte, set); }
                finally { UnlockStripe(stripe); }
            }
            bioByte += n << Bio.SectorShift;
            sector += n;
        }
    }

    /// <summary>
    /// Writes stripe data sectors [<paramref name="off"/>, +<paramref name="n"/>) (relative to the
    /// stripe's data) from byte <paramref name="bioByte"/> of the bio, and the stripe's parity.
    /// </summary>
    private void WriteStripe(R5Write w, long stripe, long off, long n, long bioByte, StripeBuffers set)
    {
        Bio bio = w.Parent!;
        int disks = Array.RaidDisks, data = _layout.DataDisks, pd = _layout.ParityMember(stripe);
        long c = _layout.ChunkSectors;
        long memberBase = stripe << _layout.ChunkShift;
        // Per data chunk i: the touched sectors [a[i], b[i]) within the chunk (empty when a == b).
        long[] a = set.From, b = set.To;
        int touched = 0;
        for (int i = 0; i < data; i++)
        {
            long lo = Math.Max(off, i * c), hi = Math.Min(off + n, (i + 1) * c);
            if (lo < hi) { a[i] = lo - i * c; b[i] = hi - i * c; touched++; }
            else a[i] = b[i] = 0;
        }
        // The row window [lo, hi) of every member this stripe write covers.
        long rowLo = long.MaxValue, rowHi = 0;
        for (int i = 0; i < data; i++)
            if (a[i] < b[i]) { rowLo = Math.Min(rowLo, a[i]); rowHi = Math.Max(rowHi, b[i]); }
        long rowSectors = rowHi - rowLo;
        int rowBytes = (int)(rowSectors << Bio.SectorShift);
        long rowByte = rowLo << Bio.SectorShift;

        if (w.Cached)
        {
            // Write-back: the new data alone, in array order, as one data record; parity waits for the write-out.
            Raid5JournalEntry[] cached = set.JournalEntries;
            int k = 0;
            for (int i = 0; i < data; i++)
                if (a[i] < b[i])
                {
                    if (!FillNew(i)) { w.Error = BlockStatus.Invalid; return; }
                    cached[k++] = new Raid5JournalEntry(SlotOfData(i), (int)a[i], (int)(b[i] - a[i]));
                }
            bool durable = (bio.Flags & (BioFlags.Fua | BioFlags.Preflush)) != 0;
            if (!_journal!.AppendData(memberBase, cached.AsSpan(0, k), set, durable, out _)) w.Error = BlockStatus.IoError;
            return;
        }

        // The direct path's member writes defer their store fences to one Drain after the last
        // (BioFlags.DeferFence, as the mirror's legs do): a fence per member write would make the
        // parity's copy wait for the data's to drain. Only where every member completes on this
        // thread (the fence orders this thread's stores), and not with FUA (its persist follows the data).
        BioFlags directFlags = (bio.Flags & BioFlags.Fua) != 0 || !MembersSynchronous() ? bio.Flags & BioFlags.Fua : BioFlags.DeferFence;

        bool fullStripe = touched == data && rowLo == 0 && rowHi == c;
        for (int i = 0; i < data && fullStripe; i++) fullStripe = a[i] == 0 && b[i] == c;

        // (Not with a journal: its records hold member contents, and a discard has none to replay.)
        if (fullStripe && bio.Op == BioOp.Discard && DiscardsZero() && _journal is null)
        {
            // Zero data has zero parity: every member discards its chunk.
            for (int j = 0; j < disks; j++)
            {
                MdMember m = Array.Slot(j);
                if (!m.Writable) continue;
                Bio discard = set.Bio.Init(BioOp.Discard, m.DataOffset + memberBase);
                discard.Iter.Size = (uint)_chunkBytes;
                if (m.Device!.SubmitAndWait(discard) != BlockStatus.Ok) MemberWriteFailed(w, m);
            }
            Interlocked.Increment(ref _fullStripeWrites);
            return;
        }

        // The member that cannot be read in this window (missing, failed, not yet rebuilt), if any.
        int unreadable = -1;
        for (int j = 0; j < disks; j++)
            if (!Array.Slot(j).Readable(memberBase + rowLo, rowSectors))
            {
                if (unreadable >= 0) { w.Error = BlockStatus.IoError; return; } // two gone: the array is failing
                unreadable = j;
            }

        for (int attempt = 0; attempt < 2; attempt++)
        {
            int failed = fullStripe ? Full()
                : unreadable < 0 ? Partial()
                : unreadable == pd ? DataOnly()
                : Degraded(unreadable);
            if (failed != ReadFailed) return;
            // A member failed a read: treat it as the missing one and do the stripe again.
            if (unreadable >= 0) { w.Error = BlockStatus.IoError; return; }
            unreadable = w.ReadFailedSlot;
        }
        w.Error = BlockStatus.IoError;

        // New data of chunk i into its buffer, at its place in the chunk.
        bool FillNew(int i)
        {
            long chunkByte = a[i] << Bio.SectorShift;
            long fromBio = bioByte + ((i * c + a[i] - off) << Bio.SectorShift);
            int len = (int)((b[i] - a[i]) << Bio.SectorShift);
            byte* dst = set.At(SlotOfData(i), chunkByte);
            if (bio.Op is BioOp.Discard or BioOp.WriteZeroes)
            {
                new Span<byte>(dst, len).Clear();
                return true;
            }
            return CopyBio(bio, fromBio, dst, len, toBio: false);
        }

        int SlotOfData(int i) => _layout.DataMember(stripe, i);

        void ComputeParity() => ComputeStripeParity(set, stripe, rowByte, rowBytes);

        bool Read(int slot, long chunkLo, long chunkHi) => ReadMember(w, set, slot, memberBase, chunkLo, chunkHi);

        void Write(int slot, long chunkLo, long chunkHi) => WriteMember(w, set, slot, memberBase, chunkLo, chunkHi, bio.Flags & BioFlags.Fua);

        // New data of chunk i straight from the bio's frames to its member.
        void WriteNew(int i) => WriteMemberFromBio(w, set, SlotOfData(i), memberBase, a[i], b[i], bio, bioByte + ((i * c + a[i] - off) << Bio.SectorShift), directFlags);

        // The parity of the direct path, then the one fence its member writes deferred.
        void WriteParityAndDrain(long chunkLo, long chunkHi)
        {
            WriteMember(w, set, pd, memberBase, chunkLo, chunkHi, directFlags);
            if (directFlags == BioFlags.DeferFence) PersistentMemory.Drain();
        }

        void WriteTouchedAndParity(bool parity)
        {
            long seq = 0;
            if (_journal is not null)
            {
                // Write-through: the new data and parity are durable in the journal before any member changes.
                Raid5JournalEntry[] entries = set.JournalEntries;
                int n = 0;
                for (int i = 0; i < data; i++)
                    if (a[i] < b[i]) entries[n++] = new Raid5JournalEntry(SlotOfData(i), (int)a[i], (int)(b[i] - a[i]));
                if (parity) entries[n++] = new Raid5JournalEntry(pd, (int)rowLo, (int)rowSectors);
                if (!_journal.Append(memberBase, entries.AsSpan(0, n), set, out seq))
                {
                    w.Error = BlockStatus.IoError;
                    return;
                }
            }
            for (int i = 0; i < data; i++) Write(SlotOfData(i), a[i], b[i]);
            if (parity) Write(pd, rowLo, rowHi);
            _journal?.Done(seq);
        }

        int Full()
        {
            // Without a journal (whose records are read from the stripe buffers) the data is not
            // copied into the buffers: parity is computed from the bio's memory and the members
            // write the bio's frames (one non-temporal copy of the data instead of two copies).
            if (_journal is null && bio.Op == BioOp.Write)
            {
                byte* p = set.At(pd, 0);
                // Each chunk in one vector of the bio (the usual case): parity in one pass over three of them.
                bool runs = data >= 3;
                for (int i = 0; i < data && runs; i++) runs = BioRun(bio, bioByte + (long)i * _chunkBytes, _chunkBytes) != null;
                if (runs)
                {
                    Parity.Xor3(p, BioRun(bio, bioByte, _chunkBytes), BioRun(bio, bioByte + _chunkBytes, _chunkBytes), BioRun(bio, bioByte + 2L * _chunkBytes, _chunkBytes), (nuint)_chunkBytes);
                    for (int i = 3; i < data; i++) Parity.Xor(p, BioRun(bio, bioByte + (long)i * _chunkBytes, _chunkBytes), (nuint)_chunkBytes);
                }
                else
                    for (int i = 0; i < data; i++)
                    {
                        long from = bioByte + (long)i * _chunkBytes;
                        if (!(i == 0 ? CopyBio(bio, from, p, _chunkBytes, toBio: false) : XorFromBio(bio, from, p, null, null, _chunkBytes))) return Invalid();
                    }
                Interlocked.Increment(ref _fullStripeWrites); // before the member writes: after them, it would wait for their non-temporal stores
                Interlocked.Increment(ref _directWrites);
                for (int i = 0; i < data; i++) WriteNew(i);
                WriteParityAndDrain(0, c);
                return 0;
            }
            for (int i = 0; i < data; i++) if (!FillNew(i)) return Invalid();
            ComputeParity();
            Interlocked.Increment(ref _fullStripeWrites); // before the member writes: after them, it would wait for their non-temporal stores
            WriteTouchedAndParity(true);
            return 0;
        }

        int Partial()
        {
            // md's choice: count the member reads each way; read-modify-write only when strictly fewer.
            int rmw = touched + 1, rcw = 0;
            for (int i = 0; i < data; i++) if (!(a[i] <= rowLo && b[i] >= rowHi)) rcw++;
            // One chunk touched and two member ranges to read either way (old data and old parity, or
            // the other two data chunks of a four-member array): the direct path, when it can map them.
            if (touched == 1 && (rmw < rcw || rcw == 2) && _journal is null && bio.Op == BioOp.Write && OneChunkDirect(rmw < rcw)) return 0;
            if (rmw < rcw)
            {
                // Old data and old parity out, new data in: P ^= old ^ new over each touched range.
                if (!Read(pd, rowLo, rowHi)) return ReadFailed;
                byte* p = set.At(pd, 0);
                for (int i = 0; i < data; i++)
                {
                    if (a[i] >= b[i]) continue;
                    int slot = SlotOfData(i);
                    if (!Read(slot, a[i], b[i])) return ReadFailed;
                    long s = a[i] << Bio.SectorShift;
                    nuint len = (nuint)((b[i] - a[i]) << Bio.SectorShift);
                    Parity.Xor(p + s, set.At(slot, s), len);
                    if (!FillNew(i)) return Invalid();
                    Parity.Xor(p + s, set.At(slot, s), len);
                }
                Interlocked.Increment(ref _rmwWrites); // before the member writes: after them, it would wait for their non-temporal stores
                WriteTouchedAndParity(true);
                return 0;
            }
            // Reconstruct-write: what the write leaves of each chunk's row window is read, then parity from scratch.
            for (int i = 0; i < data; i++)
            {
                int slot = SlotOfData(i);
                if (a[i] >= b[i]) { if (!Read(slot, rowLo, rowHi)) return ReadFailed; }
                else
                {
                    if (!Read(slot, rowLo, a[i]) || !Read(slot, b[i], rowHi)) return ReadFailed;
                    if (!FillNew(i)) return Invalid();
                }
            }
            ComputeParity();
            Interlocked.Increment(ref _rcwWrites); // before the member writes: after them, it would wait for their non-temporal stores
            WriteTouchedAndParity(true);
            return 0;
        }

        // One chunk i touched, two member ranges to read, members with direct access: the two
        // (old parity and old data for read-modify-write, the other two data chunks for
        // reconstruct-write) are loaded where they lie, with no member read bios and no copies
        // into the buffers, together with the new data in one pass into the parity buffer, so
        // their cache misses overlap; the new data goes to its member from the bio's frames.
        // False (nothing done) when a member cannot map its range: the buffered path then reads
        // it through a bio (and sees a bad block fail).
        bool OneChunkDirect(bool readModify)
        {
            int i = 0;
            while (a[i] >= b[i]) i++;
            int slot = SlotOfData(i), len = (int)((b[i] - a[i]) << Bio.SectorShift);
            long fromBio = bioByte + ((i * c + a[i] - off) << Bio.SectorShift);
            int first = readModify ? pd : SlotOfData(i == 0 ? 1 : 0), second = readModify ? slot : SlotOfData(i == 2 ? 1 : 2);
            if (!TryMapMember(first, memberBase + a[i], len, out DaxRange firstRange, out byte* x)) return false;
            if (!TryMapMember(second, memberBase + a[i], len, out DaxRange secondRange, out byte* y))
            {
                firstRange.Unpin();
                return false;
            }
            bool ok;
            // Unpinned before the member writes: a locked instruction after them would wait for their non-temporal stores.
            try { ok = XorFromBio(bio, fromBio, set.At(pd, a[i] << Bio.SectorShift), x, y, len); }
            finally
            {
                secondRange.Unpin();
                firstRange.Unpin();
            }
            if (!ok)
            {
                Invalid();
                return true;
            }
            Interlocked.Increment(ref readModify ? ref _rmwWrites : ref _rcwWrites);
            Interlocked.Increment(ref _directWrites);
            WriteNew(i);
            WriteParityAndDrain(a[i], b[i]);
            return true;
        }

        int DataOnly()
        {
            // The parity member is gone: the data is all there is to write.
            for (int i = 0; i < data; i++) if (a[i] < b[i] && !FillNew(i)) return Invalid();
            Interlocked.Increment(ref _degradedWrites); // before the member writes: after them, it would wait for their non-temporal stores
            WriteTouchedAndParity(false);
            return 0;
        }

        int Degraded(int missing)
        {
            // Read the row window of every other member, rebuild the missing chunk's, lay the new data
            // over it all, and write what is there to write (the missing chunk lives on in the parity).
            for (int j = 0; j < disks; j++) if (j != missing && !Read(j, rowLo, rowHi)) return ReadFailed;
            byte* x = set.At(missing, rowByte);
            Buffer.MemoryCopy(set.At(pd, rowByte), x, rowBytes, rowBytes);
            for (int j = 0; j < disks; j++) if (j != missing && j != pd) Parity.Xor(x, set.At(j, rowByte), (nuint)rowBytes);
            for (int i = 0; i < data; i++) if (a[i] < b[i] && !FillNew(i)) return Invalid();
            ComputeParity();
            Interlocked.Increment(ref _degradedWrites); // before the member writes: after them, it would wait for their non-temporal stores
            WriteTouchedAndParity(true);
            return 0;
        }

        int Invalid()
        {
            w.Error = BlockStatus.Invalid;
            return 0;
        }
    }

    /// <summary>Parity of the row window [<paramref name="rowByte"/>, +<paramref name="rowBytes"/>) = XOR of every data chunk's buffer over it.</summary>
    private void ComputeStripeParity(StripeBuffers set, long stripe, long rowByte, int rowBytes)
    {
        byte* p = set.At(_layout.ParityMember(stripe), rowByte);
        for (int i = 0; i < _layout.DataDisks; i++)
        {
            byte* d = set.At(_layout.DataMember(stripe, i), rowByte);
            if (i == 0) Buffer.MemoryCopy(d, p, rowBytes, rowBytes);
            else Parity.Xor(p, d, (nuint)rowBytes);
        }
    }

    /// <summary>Reads chunk sectors [<paramref name="chunkLo"/>, <paramref name="chunkHi"/>) of slot <paramref name="slot"/> into its buffer; a failure is reported and named in <paramref name="w"/>.</summary>
    private bool ReadMember(R5Write w, StripeBuffers set, int slot, long memberBase, long chunkLo, long chunkHi)
    {
        if (chunkLo >= chunkHi) return true;
        MdMember m = Array.Slot(slot);
        long s = chunkLo << Bio.SectorShift;
        if (MemberIo(m, BioOp.Read, memberBase + chunkLo, set, slot, s, (int)((chunkHi - chunkLo) << Bio.SectorShift), BioFlags.None) == BlockStatus.Ok) return true;
        Array.ReadError(m, memberBase + chunkLo, (int)(chunkHi - chunkLo));
        w.ReadFailedSlot = slot;
        return false;
    }

    /// <summary>Writes chunk sectors [<paramref name="chunkLo"/>, <paramref name="chunkHi"/>) of slot <paramref name="slot"/> from its buffer, unless the member is gone or not rebuilt that far.</summary>
    private void WriteMember(R5Write w, StripeBuffers set, int slot, long memberBase, long chunkLo, long chunkHi, BioFlags flags)
    {
        if (chunkLo >= chunkHi) return;
        MdMember m = Array.Slot(slot);
        if (!MayWrite(m, memberBase + chunkLo, chunkHi - chunkLo)) return;
        if (MemberIo(m, BioOp.Write, memberBase + chunkLo, set, slot, chunkLo << Bio.SectorShift, (int)((chunkHi - chunkLo) << Bio.SectorShift), flags) != BlockStatus.Ok)
            MemberWriteFailed(w, m);
    }

    /// <summary>False when the member is gone, or not rebuilt as far as these sectors yet (the rebuild writes them from the others).</summary>
    private static bool MayWrite(MdMember m, long memberSector, long sectors) =>
        m.Writable && (m.Readable(memberSector, sectors) || m.State != MdMemberState.Recovering);

    /// <summary>
    /// Writes chunk sectors [<paramref name="chunkLo"/>, <paramref name="chunkHi"/>) of slot
    /// <paramref name="slot"/> from the array bio's memory (from byte <paramref name="fromBio"/> of
    /// its data): the member bio's vectors are the array bio's frames, so the data is copied once,
    /// by the member. A range that needs more vectors than <see cref="StripeBuffers.Direct"/> holds
    /// goes through the slot's buffer.
    /// </summary>
    private void WriteMemberFromBio(R5Write w, StripeBuffers set, int slot, long memberBase, long chunkLo, long chunkHi, Bio bio, long fromBio, BioFlags flags)
    {
        if (chunkLo >= chunkHi) return;
        MdMember m = Array.Slot(slot);
        if (!MayWrite(m, memberBase + chunkLo, chunkHi - chunkLo)) return;
        int bytes = (int)((chunkHi - chunkLo) << Bio.SectorShift);
        Bio direct = set.Direct.Init(BioOp.Write, m.DataOffset + memberBase + chunkLo, flags);
        if (!AddBioRange(direct, bio, fromBio, bytes))
        {
            if (!CopyBio(bio, fromBio, set.At(slot, chunkLo << Bio.SectorShift), bytes, toBio: false)) w.Error = BlockStatus.Invalid;
            else WriteMember(w, set, slot, memberBase, chunkLo, chunkHi, flags);
            return;
        }
        if (m.Device!.SubmitAndWait(direct) != BlockStatus.Ok) MemberWriteFailed(w, m);
    }

    /// <summary>Appends the vectors of <paramref name="length"/> bytes of <paramref name="bio"/>'s data from byte <paramref name="skip"/> to <paramref name="to"/>; false when they do not fit.</summary>
    private static bool AddBioRange(Bio to, Bio bio, long skip, int length)
    {
        foreach (BioVec seg in bio.Segments)
        {
            if (length == 0) break;
            if (skip >= seg.Length)
            {
                skip -= seg.Length;
                continue;
            }
            if (to.VecCount == to.MaxVecCount) return false;
            uint n = (uint)Math.Min(seg.Length - skip, length);
            to.AddVec(seg.Pfn, seg.Offset + (uint)skip, n);
            length -= (int)n;
            skip = 0;
        }
        return length == 0;
    }

    /// <summary>
    /// Maps member sectors from <paramref name="memberSector"/> of slot <paramref name="slot"/> for
    /// loads without a bio (direct access; pinned until <paramref name="range"/> is unpinned), when
    /// the member is memory that grants the whole range at once. False otherwise (not a DAX device,
    /// a bad block in the range, a discard of it pending, a page that may be a hole): the caller reads through a bio.
    /// </summary>
    private bool TryMapMember(int slot, long memberSector, int bytes, out DaxRange range, out byte* address)
    {
        range = default;
        address = null;
        MdMember m = Array.Slot(slot);
        if (m.Device is not IDaxDevice dax || (m.Device.Features & DeviceFeatures.Dax) == 0) return false;
        long at = (m.DataOffset + memberSector) << Bio.SectorShift;
        // A page that may be a punched hole is not loaded through the mapping (on tmpfs the load would
        // allocate it, and raise SIGBUS when full): the member's read bio zero-fills it instead.
        if (m.Device is PmemDevice pmem && pmem.MayHaveHoles(at, bytes)) return false;
        long inPage = at & (Pfn.PageSize - 1);
        long pages = (inPage + bytes + Pfn.PageSize - 1) >> Pfn.PageShift;
        if (dax.DirectAccess(at >> Pfn.PageShift, pages, out range) != pages)
        {
            range.Unpin();
            range = default;
            return false;
        }
        address = range.Address + inPage;
        return true;
    }

    /// <summary>True when every member guarantees that discarded sectors read back as zeros (md's devices_handle_discard_safely).</summary>
    private bool DiscardsZero()
    {
        for (int j = 0; j < Array.RaidDisks; j++)
        {
            MdMember m = Array.Slot(j);
            if (m.Device is not null && (m.Device.Features & (DeviceFeatures.Discard | DeviceFeatures.DiscardZeroesData)) != (DeviceFeatures.Discard | DeviceFeatures.DiscardZeroesData))
                return false;
        }
        return true;
    }

    private void MemberWriteFailed(R5Write w, MdMember m)
    {
        w.LostMember = true;
        Array.MemberFailed(m, BlockStatus.IoError, "write");
    }

    private void Finish(R5Write w)
    {
        BlockStatus status = w.Error != BlockStatus.Ok ? w.Error : Array.IsFailed ? BlockStatus.IoError : BlockStatus.Ok;
        if (!w.Cached)
        {
            w.Finish(Array, status);
            return;
        }
        // A write-back data record counted in no region and changed no member.
        w.Result = status;
        w.CompleteDeferred();
    }

    /// <summary>One array write; which member failed a read during it.</summary>
    private sealed class R5Write(Raid5Target owner) : MdWrite
    {
        public int ReadFailedSlot;
        /// <summary>Write-back: this write only appends data records (no region, no member).</summary>
        public bool Cached;
        /// <summary>Write-back: the write-out worker whose stripe (<see cref="WriteOutWorker.Stripe"/>) this write writes out; null for an array write.</summary>
        public WriteOutWorker? WriteOut;

        public override void BitsDurable() => owner.Dispatch(this);
    }

    // ---- member I/O, bio memory, stripe locks ----------------------------------------------------------

    /// <summary>Synchronous I/O of member sectors from <paramref name="memberSector"/> to or from buffer <paramref name="buffer"/> at <paramref name="offset"/>.</summary>
    private static BlockStatus MemberIo(MdMember m, BioOp op, long memberSector, StripeBuffers set, int buffer, long offset, int bytes, BioFlags flags)
    {
        (Pfn pfn, uint inFrame) = set.FrameOf(buffer, offset);
        return m.Device!.SubmitAndWait(set.Bio.Init(op, m.DataOffset + memberSector, flags).AddVec(pfn, inFrame, (uint)bytes));
    }

    /// <summary>
    /// XORs <paramref name="length"/> bytes of the bio's memory (from byte <paramref name="skip"/> of
    /// its data) onto <paramref name="buffer"/>; with <paramref name="x"/> and <paramref name="y"/>,
    /// sets the buffer to their XOR with the bio's bytes instead (a one-chunk write's new parity,
    /// in one pass).
    /// </summary>
    private bool XorFromBio(Bio bio, long skip, byte* buffer, byte* x, byte* y, int length) =>
        WalkBio(bio, skip, buffer, length, x == null ? BioBytes.Xor : BioBytes.Xor3, x, y);

    /// <summary>The CPU address of <paramref name="length"/> bytes of the bio's data from byte <paramref name="skip"/> when they lie in one vector; null when they do not (or cannot be mapped).</summary>
    private byte* BioRun(Bio bio, long skip, int length)
    {
        foreach (BioVec seg in bio.Segments)
        {
            if (skip >= seg.Length)
            {
                skip -= seg.Length;
                continue;
            }
            return seg.Length - skip >= length ? _space.TryKmap(seg.Pfn, seg.Offset + (uint)skip, (uint)length) : null;
        }
        return null;
    }

    /// <summary>Copies <paramref name="length"/> bytes between the bio's memory (from byte <paramref name="skip"/> of its data) and <paramref name="buffer"/>.</summary>
    private bool CopyBio(Bio bio, long skip, byte* buffer, int length, bool toBio) =>
        WalkBio(bio, skip, buffer, length, toBio ? BioBytes.ToBio : BioBytes.FromBio, null, null);

    /// <summary>What <see cref="WalkBio"/> does with each piece of the bio's memory.</summary>
    private enum BioBytes { ToBio, FromBio, Xor, Xor3 }

    /// <summary>
    /// Walks <paramref name="length"/> bytes of the bio's memory from byte <paramref name="skip"/>
    /// of its data vector by vector, against <paramref name="buffer"/> (and, for
    /// <see cref="BioBytes.Xor3"/>, <paramref name="x"/> and <paramref name="y"/>) at the same
    /// offsets; false when the bio is shorter or a frame cannot be mapped.
    /// </summary>
    private bool WalkBio(Bio bio, long skip, byte* buffer, int length, BioBytes op, byte* x, byte* y)
    {
        long at = 0;
        foreach (BioVec seg in bio.Segments)
        {
            if (length == 0) break;
            if (skip >= seg.Length)
            {
                skip -= seg.Length;
                continue;
            }
            uint n = (uint)Math.Min(seg.Length - skip, length);
            byte* mem = _space.TryKmap(seg.Pfn, seg.Offset + (uint)skip, n);
            if (mem == null) return false;
            switch (op)
            {
                case BioBytes.ToBio: Buffer.MemoryCopy(buffer + at, mem, n, n); break;
                case BioBytes.FromBio: Buffer.MemoryCopy(mem, buffer + at, n, n); break;
                case BioBytes.Xor: Parity.Xor(buffer + at, mem, n); break;
                default: Parity.Xor3(buffer + at, x + at, y + at, mem, n); break;
            }
            at += n;
            length -= (int)n;
            skip = 0;
        }
        return length == 0;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private ref int LockOf(long stripe) => ref _locks[(int)((ulong)stripe % LockSlots) * 16];

    /// <summary>Takes the stripe's lock (a hashed spin lock: held only for one stripe's synchronous member I/O).</summary>
    private void LockStripe(long stripe)
    {
        ref int l = ref LockOf(stripe);
        var spin = new SpinWait();
        while (Interlocked.CompareExchange(ref l, 1, 0) != 0) spin.SpinOnce(sleep1Threshold: -1);
    }

    private void UnlockStripe(long stripe) => Volatile.Write(ref LockOf(stripe), 0);

    // ---- the worker (raid5d) ---------------------------------------------------------------------------

    private readonly record struct Job(Bio? Read, R5Write? Write, int Slot, long MemberSector)
    {
        public bool Retry { get; init; }
        /// <summary>A read of a stripe with pending write-back data (<see cref="OverlayRead"/>).</summary>
        public bool Overlay { get; init; }
    }

    private void Enqueue(Job job)
    {
        lock (_queueLock) _queue.Enqueue(job);
        _wake.Set();
    }

    private void Worker()
    {
        while (!_stopping)
        {
            _wake.WaitOne(100);
            while (true)
            {
                Job job;
                lock (_queueLock)
                    if (!_queue.TryDequeue(out job)) break;
                if (job.Write is { } w)
                {
                    Process(w, _workerBuffers);
                    Finish(w);
                    continue;
                }
                Bio part = job.Read!;
                BlockStatus status = job.Overlay ? OverlayRead(part, job.Slot, job.MemberSector, _workerBuffers)
                    : ReconstructRead(part, job.Slot, job.MemberSector, _workerBuffers);
                // A bio that came back from a member's end_io hook completes again from where the hook left it.
                if (job.Retry) part.PrepareSubmit();
                part.Complete(status);
            }
        }
    }

    // ---- sync ------------------------------------------------------------------------------------------

    internal override long SyncWindow(MdSyncAction action, MdMember? target, long sector, int sectors, MdSyncBuffers buffers)
    {
        int bytes = sectors << Bio.SectorShift, disks = Array.RaidDisks;
        int skip = action == MdSyncAction.Recovery ? target!.Slot : -1;
        for (int j = 0; j < disks; j++)
        {
            if (j == skip) continue;
            MdMember m = Array.Slot(j);
            if (!m.Readable(sector, sectors) || !Array.SyncRead(m, sector, buffers.Pfn(j), bytes)) return -1;
        }
        byte* acc = buffers.Address(disks);
        switch (action)
        {
            case MdSyncAction.Recovery:
                // The new member's sectors are the XOR of everyone else's.
                XorAllBut(skip, acc, 0, bytes, buffers);
                Buffer.MemoryCopy(acc, buffers.Address(skip), bytes, bytes);
                return Array.SyncIo(target!, BioOp.Write, sector, buffers.Pfn(skip), bytes) ? 0 : -1;
            case MdSyncAction.Resync:
                // Parity recomputed from the data, stripe by stripe (each stripe's parity is on another member).
                for (long s = sector; s < sector + sectors;)
                {
                    long stripe = s >> _layout.ChunkShift;
                    long n = Math.Min(sector + sectors, (stripe + 1) << _layout.ChunkShift) - s;
                    int pd = _layout.ParityMember(stripe);
                    long at = (s - sector) << Bio.SectorShift;
                    XorAllBut(pd, acc, at, (int)(n << Bio.SectorShift), buffers);
                    if (!new ReadOnlySpan<byte>(acc + at, (int)(n << Bio.SectorShift)).SequenceEqual(new ReadOnlySpan<byte>(buffers.Address(pd) + at, (int)(n << Bio.SectorShift))))
                    {
                        Buffer.MemoryCopy(acc + at, buffers.Address(pd) + at, n << Bio.SectorShift, n << Bio.SectorShift);
                        (Pfn pfn, uint inFrame) = buffers.FrameOf(pd, at);
                        var bio = new Bio(1).Init(BioOp.Write, Array.Slot(pd).DataOffset + s).AddVec(pfn, inFrame, (uint)(n << Bio.SectorShift));
                        if (Array.Slot(pd).Device!.SubmitAndWait(bio) != BlockStatus.Ok) { Array.MemberFailed(Array.Slot(pd), BlockStatus.IoError, "resync write"); return -1; }
                    }
                    s += n;
                }
                return 0;
            default:
                // Check: data XOR parity is zero on a consistent stripe; md counts a mismatch per 4 KiB (8 sectors).
                XorAllBut(-1, acc, 0, bytes, buffers);
                long mismatches = 0;
                for (int off = 0; off < bytes; off += 4096)
                    if (!Parity.IsZero(acc + off, (nuint)Math.Min(4096, bytes - off))) mismatches += Math.Min(4096, bytes - off) >> Bio.SectorShift;
                return mismatches;
        }
    }

    /// <summary>acc[at..+bytes) = XOR of every member's window buffer except <paramref name="except"/>'s.</summary>
    private void XorAllBut(int except, byte* acc, long at, int bytes, MdSyncBuffers buffers)
    {
        bool first = true;
        for (int j = 0; j < Array.RaidDisks; j++)
        {
            if (j == except) continue;
            if (first) Buffer.MemoryCopy(buffers.Address(j) + at, acc + at, bytes, bytes);
            else Parity.Xor(acc + at, buffers.Address(j) + at, (nuint)bytes);
            first = false;
        }
    }

    internal override bool RepairWindow(MdMember bad, long sector, int sectors, MdSyncBuffers buffers)
    {
        int bytes = sectors << Bio.SectorShift, disks = Array.RaidDisks;
        for (int j = 0; j < disks; j++)
        {
            if (j == bad.Slot) continue;
            MdMember m = Array.Slot(j);
            if (!m.Readable(sector, sectors) || !Array.SyncRead(m, sector, buffers.Pfn(j), bytes)) return false;
        }
        XorAllBut(bad.Slot, buffers.Address(bad.Slot), 0, bytes, buffers);
        return Array.SyncIo(bad, BioOp.Write, sector, buffers.Pfn(bad.Slot), bytes) && Array.SyncIo(bad, BioOp.Read, sector, buffers.Pfn(disks), bytes);
    }

    public override void Dispose()
    {
        // Write-back: a clean stop writes every pending data record out first (unless a test leaves the log as a crash would).
        if (_journal is { WriteBack: true, LeaveLogOnStop: false } j) j.WaitWrittenOut(() => Volatile.Read(ref _outRunning) == _outWorkers.Length);
        _outStopping = true;
        foreach (WriteOutWorker worker in _outWorkers) worker.Thread.Join();
        base.Dispose(); // stops the array first: no more syncs or writes
        _stopping = true;
        _wake.Set();
        _thread.Join();
        _pool.Dispose();
        _workerPool.Dispose();
        DisposeWriteOut();
    }
}
