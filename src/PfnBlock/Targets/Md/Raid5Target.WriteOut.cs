using PfnBlock.Block;

namespace PfnBlock.Targets.Md;

/// <summary>
/// The RAID5 target's write-back write-out (md's r5c reclaim): workers that write the journal's
/// pending data records to the members, stripe by stripe, each worker owning a share of the
/// stripes.
/// </summary>
internal sealed unsafe partial class Raid5Target
{
    /// <summary>The most pending records one write-out merges (the rest of the stripe's wait for the next).</summary>
    private const int MaxMerge = 4096;
    /// <summary>
    /// A write-out reads and writes a data member's changed sectors run by run up to this many
    /// runs, else its whole window at once. A pmem member bio costs about what copying 4 KiB does
    /// (perf of a 4 KiB random write-out: the non-temporal copies to the members dominate), so
    /// runs win while the gaps between them are pages; many runs of a few sectors do not.
    /// </summary>
    private const int MaxRuns = 16;

    /// <summary>The write-out workers' stripe buffers: a set each, so no write-out waits for another's (or the front end's).</summary>
    private StripeBufferPool? _outPool;
    private int _outInFlight, _outInFlightMax; // stripe write-outs running now, and the most at once since assembly

    /// <summary>The most stripe write-outs that ran at once since assembly (on slow members, many should).</summary>
    internal int MaxWriteOutsInFlight => Volatile.Read(ref _outInFlightMax);

    /// <summary>
    /// One write-out worker (md's raid5 worker threads, <c>group_thread_cnt</c>): its thread and
    /// its scratch for one stripe at a time — its stripe buffers, the snapshot's ring slots, and
    /// per member a bitmap of the chunk sectors they change. It runs its stripe writes itself,
    /// with synchronous member I/O: on slow members the workers are many, so that many stripes
    /// are in flight at once (md's raid5 keeps its whole stripe cache busy).
    /// </summary>
    private sealed class WriteOutWorker
    {
        public WriteOutWorker(int index, int raidDisks, long chunkSectors, StripeBuffers set)
        {
            Index = index;
            Set = set;
            int words = (int)((chunkSectors + 63) / 64);
            Dirty = new ulong[raidDisks * words];
            Rows = new ulong[words];
            Trial = new ulong[words];
            Whole = new bool[raidDisks];
        }

        /// <summary>Which worker: it owns the stripes <see cref="Raid5Journal.OwnerOf"/> gives this index.</summary>
        public int Index { get; }
        public Thread Thread { get; set; } = null!;
        /// <summary>The stripe it writes out now (the write in flight carries the worker).</summary>
        public long Stripe;
        public readonly Bio Bio = new(1);
        public readonly Bio Read = new(1);
        public readonly int[] Slots = new int[MaxMerge];
        public readonly ulong[] Dirty;
        /// <summary>The rows (chunk sectors) the merged records change, and a record's tried on them.</summary>
        public readonly ulong[] Rows, Trial;
        public readonly Raid5JournalEntry[] Runs = new Raid5JournalEntry[Raid5JournalLayout.MaxMembers];
        /// <summary>Per data index: read and write the member's whole window, not run by run.</summary>
        public readonly bool[] Whole;
        /// <summary>Stripe write-outs this worker did.</summary>
        public long WriteOuts;
        /// <summary>Its stripe buffers.</summary>
        public readonly StripeBuffers Set;
        /// <summary>Set (and <c>_go</c> signalled) when its stripe write's bitmap bits are durable: it may run it.</summary>
        private volatile bool _ready;
        private readonly AutoResetEvent _go = new(false);

        /// <summary>The stripe write may run (its bitmap bits are durable): called from whatever thread saw them so, which must not block.</summary>
        public void Hand()
        {
            _ready = true;
            _go.Set();
        }

        /// <summary>Waits until <see cref="Hand"/> was called for the stripe write begun last.</summary>
        public void WaitHanded()
        {
            while (!_ready) _go.WaitOne();
            _ready = false;
        }

        public void Dispose() => _go.Dispose();
    }

    /// <summary>Starts the journal's write-out workers.</summary>
    private WriteOutWorker[] StartWriteOut(Raid5Journal journal)
    {
        var workers = new WriteOutWorker[journal.WriteOutWorkers];
        _outRunning = workers.Length;
        _outPool = new StripeBufferPool(workers.Length, Array.RaidDisks + 1, _chunkBytes, _space, $"md-{Array.Name}-r5c");
        for (int k = 0; k < workers.Length; k++)
        {
            _outPool.TryRent(out StripeBuffers set);
            WriteOutWorker worker = workers[k] = new WriteOutWorker(k, Array.RaidDisks, Array.ChunkSectors, set);
            worker.Thread = new Thread(() => WriteOutLoop(worker)) { IsBackground = true, Name = $"md-{Array.Name}-r5c{k}" };
        }
        foreach (WriteOutWorker worker in workers) worker.Thread.Start();
        return workers;
    }

    /// <summary>Frees the write-out workers' buffers and events (they have ended).</summary>
    private void DisposeWriteOut()
    {
        foreach (WriteOutWorker worker in _outWorkers) worker.Dispose();
        _outPool?.Dispose();
    }

    /// <summary>Stripe write-outs per write-out worker since assembly.</summary>
    internal long[] WriteOutsByWorker => [.. _outWorkers.Select(w => Interlocked.Read(ref w.WriteOuts))];

    /// <summary>
    /// One write-out worker's loop: writes the pending data records of the stripes it owns to the
    /// members a stripe at a time — the stripe of its oldest pending record, with every pending
    /// record of that stripe, as an array write through the bitmap (<see cref="WriteOutStripe"/>).
    /// The workers share nothing but the journal's lock: a stripe is one worker's, so its
    /// write-outs keep log order and its lock is never contended by another worker. Stops when the
    /// journal or the array fails: the records stay in the log for the next assembly.
    /// </summary>
    private void WriteOutLoop(WriteOutWorker worker)
    {
        Raid5Journal journal = _journal!;
        long lastSeen = -1;
        try
        {
            while (!_outStopping)
            {
                if (journal.Failed || Array.IsFailed || Array.IsReadOnly) return;
                if (journal.Paused(worker.Index) || !journal.WriteOutWanted(ref lastSeen) || !journal.NextWriteOutStripe(worker.Index, out long memberSector))
                {
                    journal.OutWake(worker.Index).WaitOne(50);
                    continue;
                }
                long stripe = worker.Stripe = memberSector >> _layout.ChunkShift;
                BlockStatus status;
                while (true)
                {
                    // The bio names the stripe's first array sector and carries nothing: the data comes from the log.
                    Bio bio = worker.Bio.Init(BioOp.Write, stripe * _layout.StripeSectors);
                    Bio? carrier;
                    while (!_writes.TryRent(out carrier)) Thread.Yield();
                    R5Write w = carrier.ContextAs<R5Write>();
                    w.Cached = false;
                    w.WriteOut = worker;
                    ValueTask<BlockStatus> done = bio.PrepareAwait();
                    WriteIntentBitmap regions = Array.Regions;
                    if (BeginWrite(carrier, w, bio, regions.RegionOf(memberSector), regions.RegionOf(memberSector + _layout.ChunkSectors - 1)) == MapResult.Requeue)
                    {
                        // A sync holds the region: try again shortly. The bio never started; completing it ends the await armed above.
                        bio.Complete(BlockStatus.Ok);
                        done.AsTask().GetAwaiter().GetResult();
                        Thread.Sleep(1);
                        continue;
                    }
                    // Its bits are durable now or once the bitmap's flush completes; then it runs here, on this worker's thread and buffers.
                    worker.WaitHanded();
                    int inFlight = Interlocked.Increment(ref _outInFlight);
                    for (int max = Volatile.Read(ref _outInFlightMax); inFlight > max; max = Volatile.Read(ref _outInFlightMax))
                        if (Interlocked.CompareExchange(ref _outInFlightMax, inFlight, max) == max) break;
                    Process(w, worker.Set);
                    Interlocked.Decrement(ref _outInFlight);
                    Finish(w);
                    status = done.IsCompleted ? done.Result : done.AsTask().GetAwaiter().GetResult();
                    break;
                }
                if (status != BlockStatus.Ok)
                {
                    Array.JournalFailed($"md: write-out of stripe {stripe} failed ({status}): its records stay in the journal for the next assembly");
                    return;
                }
            }
        }
        finally { Interlocked.Decrement(ref _outRunning); }
    }

    /// <summary>
    /// Writes out the stripe of <paramref name="worker"/> (<see cref="WriteOutWorker.Stripe"/>): its pending data records, oldest first, merged
    /// into one stripe write (md's r5c writes a cached stripe_head out with all its pages). The
    /// rows they change (chunk sectors any of them writes on any member) form at most
    /// <see cref="Raid5JournalLayout.MaxMembers"/> runs, the ranges one parity record names; a
    /// record that would make more waits for the next write-out. Over those rows the sectors no
    /// record changes are read from the members (with a data member unreadable, every other
    /// member's rows and the missing one's rebuilt from them), the records' data is read from the
    /// log over them, the parity computed, journalled as one parity record covering the records
    /// (their data is in the log already) and made durable; then the changed sectors and the
    /// parity go to the members and the records leave the index. Under the stripe lock: reads of
    /// the stripe lay the records over the members until then.
    /// </summary>
    private void WriteOutStripe(R5Write w, WriteOutWorker worker, StripeBuffers set)
    {
        Raid5Journal journal = _journal!;
        long stripe = worker.Stripe;
        int disks = Array.RaidDisks, data = _layout.DataDisks, pd = _layout.ParityMember(stripe), words = worker.Rows.Length;
        long memberBase = stripe << _layout.ChunkShift;
        ulong[] dirty = worker.Dirty;
        Span<ulong> rows = worker.Rows, trial = worker.Trial;
        Raid5JournalEntry[] runs = worker.Runs;
        int[] snapshot = worker.Slots;
        LockStripe(stripe);
        try
        {
            int count = journal.SnapshotStripe(memberBase, snapshot);
            if (count == 0) return;
            dirty.AsSpan().Clear();
            rows.Clear();
            int taken = 0;
            for (; taken < count; taken++)
            {
                // The record's rows added to the others': taken only while the runs still fit one header.
                rows.CopyTo(trial);
                foreach (Raid5JournalEntry e in journal.EntriesOf(snapshot[taken], out _)) SetBits(trial, e.First, e.First + e.Sectors);
                if (taken > 0 && CountRuns(trial) > Raid5JournalLayout.MaxMembers) break;
                trial.CopyTo(rows);
                foreach (Raid5JournalEntry e in journal.EntriesOf(snapshot[taken], out _)) SetBits(dirty.AsSpan(e.Slot * words, words), e.First, e.First + e.Sectors);
            }
            ReadOnlySpan<int> slots = snapshot.AsSpan(0, taken);
            long newest = journal.SeqOf(slots[^1]);
            int nRuns = 0;
            long lo = long.MaxValue, hi = 0;
            for (long s = NextSet(rows, 0, _layout.ChunkSectors), end; s < _layout.ChunkSectors; s = NextSet(rows, end, _layout.ChunkSectors))
            {
                end = NextClear(rows, s, _layout.ChunkSectors);
                runs[nRuns++] = new Raid5JournalEntry(pd, (int)s, (int)(end - s));
                lo = Math.Min(lo, s);
                hi = end;
            }
            ReadOnlySpan<Raid5JournalEntry> parity = runs.AsSpan(0, nRuns);
            bool[] wholeWindow = worker.Whole;
            for (int i = 0; i < data; i++) wholeWindow[i] = CountRuns(dirty.AsSpan(_layout.DataMember(stripe, i) * words, words)) > MaxRuns;
            int unreadable = -1;
            for (int j = 0; j < disks; j++)
                if (!Array.Slot(j).Readable(memberBase + lo, hi - lo))
                {
                    if (unreadable >= 0) { w.Error = BlockStatus.IoError; return; } // two gone: the array is failing
                    unreadable = j;
                }
            while (!ReadUnchanged(unreadable, parity))
            {
                // A member failed a read: treat it as the missing one, once.
                if (unreadable >= 0) { w.Error = BlockStatus.IoError; return; }
                unreadable = w.ReadFailedSlot;
            }
            // The records' data over it, oldest first, straight from the log into the member buffers.
            foreach (int r in slots)
            {
                ReadOnlySpan<Raid5JournalEntry> entries = journal.EntriesOf(r, out long block);
                foreach (Raid5JournalEntry e in entries)
                {
                    if (journal.ReadLog(worker.Read, block, set, e.Slot, (long)e.First << Bio.SectorShift, e.Sectors << Bio.SectorShift) != BlockStatus.Ok) { w.Error = BlockStatus.IoError; return; }
                    block += e.Sectors;
                }
            }
            foreach (Raid5JournalEntry run in parity)
                ComputeStripeParity(set, stripe, (long)run.First << Bio.SectorShift, run.Sectors << Bio.SectorShift);
            if (!journal.AppendParity(memberBase, parity, set, newest, slots, out long paritySeq))
            {
                w.Error = BlockStatus.IoError;
                return;
            }
            // The changed sectors of each data member, then the parity runs. A member with more than
            // MaxRuns runs gets its whole window in one write (its buffer holds what lies between the
            // runs as the member does: it was read whole).
            for (int i = 0; i < data; i++)
            {
                int slot = _layout.DataMember(stripe, i);
                ReadOnlySpan<ulong> mine = dirty.AsSpan(slot * words, words);
                if (wholeWindow[i]) WriteMember(w, set, slot, memberBase, NextSet(mine, lo, hi), LastSet(mine, lo, hi) + 1, BioFlags.None);
                else
                    for (long s = NextSet(mine, lo, hi), end; s < hi; s = NextSet(mine, end, hi))
                    {
                        end = NextClear(mine, s, hi);
                        WriteMember(w, set, slot, memberBase, s, end, BioFlags.None);
                    }
            }
            foreach (Raid5JournalEntry run in parity) WriteMember(w, set, pd, memberBase, run.First, run.First + run.Sectors, BioFlags.None);
            // Counted before the records leave the index: whoever sees them gone sees them counted.
            Interlocked.Increment(ref _writeOuts);
            Interlocked.Increment(ref worker.WriteOuts);
            Interlocked.Add(ref _mergedRecords, taken);
            journal.WrittenOut(slots, paritySeq);

            // What the records do not change of their rows: each data member's unchanged sectors there, or, with a data
            // member unreadable, every other member's rows and the missing one's rebuilt from them (parity included).
            bool ReadUnchanged(int missing, ReadOnlySpan<Raid5JournalEntry> rowRuns)
            {
                // A member the records change in many runs is read whole over the window, once (see the writes);
                // degraded, only the rows are read (and rebuilt), so every member is written run by run.
                if (missing >= 0 && missing != pd) wholeWindow.AsSpan().Clear();
                for (int i = 0; i < data; i++)
                    if (wholeWindow[i] && !ReadMember(w, set, _layout.DataMember(stripe, i), memberBase, lo, hi)) return false;
                foreach (Raid5JournalEntry run in rowRuns)
                {
                    long a = run.First, b = run.First + run.Sectors;
                    if (missing >= 0 && missing != pd)
                    {
                        for (int j = 0; j < disks; j++) if (j != missing && !ReadMember(w, set, j, memberBase, a, b)) return false;
                        long at = a << Bio.SectorShift, bytes = (b - a) << Bio.SectorShift;
                        byte* x = set.At(missing, at);
                        Buffer.MemoryCopy(set.At(pd, at), x, bytes, bytes);
                        for (int j = 0; j < disks; j++) if (j != missing && j != pd) Parity.Xor(x, set.At(j, at), (nuint)bytes);
                        continue;
                    }
                    for (int i = 0; i < data; i++)
                    {
                        int slot = _layout.DataMember(stripe, i);
                        if (wholeWindow[i]) continue;
                        ReadOnlySpan<ulong> mine = dirty.AsSpan(slot * words, words);
                        for (long s = NextClear(mine, a, b), end; s < b; s = NextClear(mine, end, b))
                        {
                            end = NextSet(mine, s, b);
                            if (!ReadMember(w, set, slot, memberBase, s, end)) return false;
                        }
                    }
                }
                if (missing >= 0 && missing != pd) Interlocked.Increment(ref _degradedWrites);
                return true;
            }
        }
        finally { UnlockStripe(stripe); }
    }

    /// <summary>The first set bit in [<paramref name="from"/>, <paramref name="to"/>), or <paramref name="to"/>: a word at a time (the run scans were a tenth of a write-out's time bit by bit).</summary>
    private static long NextSet(ReadOnlySpan<ulong> bits, long from, long to)
    {
        while (from < to)
        {
            int word = (int)(from >> 6);
            ulong rest = bits[word] >> (int)(from & 63);
            if (rest != 0) return Math.Min(to, from + System.Numerics.BitOperations.TrailingZeroCount(rest));
            from = (long)(word + 1) << 6;
        }
        return to;
    }

    /// <summary>The first clear bit in [<paramref name="from"/>, <paramref name="to"/>), or <paramref name="to"/>.</summary>
    private static long NextClear(ReadOnlySpan<ulong> bits, long from, long to)
    {
        while (from < to)
        {
            int word = (int)(from >> 6);
            ulong rest = ~bits[word] >> (int)(from & 63);
            if (rest != 0) return Math.Min(to, from + System.Numerics.BitOperations.TrailingZeroCount(rest));
            from = (long)(word + 1) << 6;
        }
        return to;
    }

    /// <summary>The last set bit in [<paramref name="from"/>, <paramref name="to"/>) (there is one).</summary>
    private static long LastSet(ReadOnlySpan<ulong> bits, long from, long to)
    {
        while (to > from && !IsSet(bits, to - 1)) to--;
        return to - 1;
    }

    private static bool IsSet(ReadOnlySpan<ulong> bits, long i) => (bits[(int)(i >> 6)] & (1UL << (int)(i & 63))) != 0;

    private static void SetBits(Span<ulong> bits, long from, long to)
    {
        for (long i = from; i < to; i++) bits[(int)(i >> 6)] |= 1UL << (int)(i & 63);
    }

    /// <summary>Runs of set bits (maximal ranges).</summary>
    private static int CountRuns(ReadOnlySpan<ulong> bits)
    {
        int runs = 0;
        bool carry = false; // the bit before this word's first was set
        foreach (ulong word in bits)
        {
            // A run starts at each set bit whose lower neighbour is clear.
            ulong starts = word & ~((word << 1) | (carry ? 1UL : 0));
            runs += System.Numerics.BitOperations.PopCount(starts);
            carry = (word >> 63) != 0;
        }
        return runs;
    }
}
