using PfnBlock.Block;
using PfnBlock.Targets.Md;

namespace PfnBlock.Tests.Targets.Md;

/// <summary>
/// The write-back journal's write-out by several workers, each owning the stripes
/// <see cref="Raid5Journal.OwnerOf"/> gives it: a stripe's records reach the members in log order
/// while writes go on, the log's tail waits for the slowest worker (a writer waits for room while
/// the other worker has written out everything of its own), two write-outs torn by a crash are
/// both replayed, and stopping the array while the workers run loses nothing.
/// </summary>
public sealed class Raid5JournalParallelWriteOutTests : IDisposable
{
    private const long Chunk = 16 << 10;
    private const int StripeBytes = 3 * (int)Chunk; // four members: three data chunks a stripe
    private readonly MdHarness _h = new();

    public void Dispose() => _h.Dispose();

    private (string[] Members, string Journal, MdSuperblock Sb) NewArray(long journalBytes) =>
        _h.NewJournalledRaid5(Chunk, journalBytes, Raid5JournalMode.WriteBack, "par");

    private static void WaitWrittenOut(Raid5Journal j)
    {
        j.PauseWriteOut = false;
        j.PausedWorkers = 0;
        j.WakeWriteOut();
        Assert.True(SpinWait.SpinUntil(() => j.Pending == 0 || j.Failed, TimeSpan.FromSeconds(60)), $"{j.Pending} record(s) were never written out");
    }

    private static void AssertParityClean(MdArray array)
    {
        array.StartCheck();
        Assert.True(array.WaitForSync(TimeSpan.FromSeconds(60)));
        Assert.Equal(0, array.MismatchCount);
    }

    /// <summary>Assembles the array again (replaying its journal): it reads as the model before and after everything is written out, and its parity checks clean.</summary>
    private void AssembleAndCheck(string[] members, string journal, byte[] model)
    {
        IBlockDevice md = _h.Open(MdHarness.JournalSpec(members, journal));
        MdArray array = MdArray.Of(md)!;
        _h.AssertModel(md, model, 0, model.Length, array);
        WaitWrittenOut(array.Journal!);
        _h.AssertModel(md, model, 0, model.Length, array);
        AssertParityClean(array);
    }

    /// <summary>
    /// Overlapping writes over eight stripes with a small log, so the workers write out while
    /// writes go on: reads always equal the model, every worker that owns one of the stripes wrote
    /// some out, parity checks clean, and in the log each stripe's parity records cover its data
    /// records in order (each covers more than the one before it); a replay of that log reads as the model.
    /// </summary>
    [Fact]
    public void EachStripeIsWrittenOutByItsWorkerInLogOrderWhileWritesGoOn()
    {
        (string[] m, string j, _) = NewArray(2 << 20); // past a quarter of it, the workers start
        IBlockDevice md = _h.Open(MdHarness.JournalSpec(m, j));
        MdArray array = MdArray.Of(md)!;
        Raid5Journal journal = array.Journal!;
        Raid5Target target = (Raid5Target)((MappedDevice)md).Table[0].Target;
        Assert.True(journal.WriteOutWorkers >= 2);
        const int Stripes = 8, Area = Stripes * StripeBytes;
        var model = new byte[Area];
        var rnd = new Random(5);
        for (int i = 0; i < 1500; i++)
        {
            int off = rnd.Next(0, Area / 512 - 16) * 512;
            _h.WriteToModel(md, model, off, rnd.Next(1, 17) * 512, i + 1);
            if (i % 100 == 0) _h.AssertModel(md, model, 0, Area, array);
        }
        _h.AssertModel(md, model, 0, Area, array);
        WaitWrittenOut(journal);
        _h.AssertModel(md, model, 0, Area, array);
        long[] byWorker = target.WriteOutsByWorker;
        for (int k = 0; k < Math.Min(Stripes, journal.WriteOutWorkers); k++) Assert.True(byWorker[k] > 0, $"worker {k} wrote nothing out: {string.Join(", ", byWorker)}");
        Assert.True(array.JournalStatus!.Reclaims > 0, "the log never wrapped: the workers never ran alongside the writes");
        AssertParityClean(array);

        // What is left of the log: per stripe, each parity record covers more of its stripe's records than the one before.
        journal.PauseWriteOut = true;
        for (int s = 0; s < Stripes; s++) _h.WriteToModel(md, model, s * StripeBytes + 4096, 4096, 5000 + s); // left pending in the log
        journal.LeaveLogOnStop = true;
        _h.Reopen();
        Assert.Contains(_h.JournalRecords(j), r => r.Kind == Raid5JournalRecordKind.Parity);
        _h.AssertParityRecordsInLogOrder(j);
        _h.MarkDirty(m);
        _h.Reopen();
        AssembleAndCheck(m, j, model);
    }

    /// <summary>
    /// The tail is the oldest record any worker has not written out: with worker 1 paused on one
    /// record of its stripe, worker 0 writes out everything of stripe 0, yet a writer of stripe 0
    /// alone ends up waiting for room (the log cannot be reclaimed past worker 1's record); once
    /// worker 1 goes on, the writer proceeds.
    /// </summary>
    [Fact]
    public void TheTailWaitsForTheSlowestWorker()
    {
        long minBytes = Raid5JournalLayout.MinBlocks(4, Chunk >> Bio.SectorShift, Raid5JournalMode.WriteBack) * Raid5JournalLayout.BlockBytes;
        (string[] m, string j, _) = NewArray(Math.Max(1 << 20, minBytes));
        IBlockDevice md = _h.Open(MdHarness.JournalSpec(m, j));
        MdArray array = MdArray.Of(md)!;
        Raid5Journal journal = array.Journal!;
        Assert.Equal(0, journal.OwnerOf(0));
        Assert.Equal(1, journal.OwnerOf(Chunk >> Bio.SectorShift)); // stripe 1's first member sector
        journal.PausedWorkers = 1 << 1;
        var model = new byte[2 * StripeBytes];
        long first = journal.MemTailSeq;
        _h.WriteToModel(md, model, StripeBytes + 8192, 4096, 1); // stripe 1: worker 1's
        int written = 0;
        var writer = new Thread(() =>
        {
            var rnd = new Random(6);
            for (int i = 0; i < 400; i++) // 400 × (4 KiB + a header) is more than the log holds
            {
                _h.WriteToModel(md, model, rnd.Next(0, StripeBytes / 4096) * 4096, 4096, i + 10); // stripe 0: worker 0's
                Interlocked.Increment(ref written);
            }
        }) { IsBackground = true };
        writer.Start();
        // Worker 0 keeps up with stripe 0 (one record at most left), yet the writer waits: the space is behind worker 1's record.
        Assert.True(SpinWait.SpinUntil(() => journal.Waiters > 0 && journal.Pending <= 2, TimeSpan.FromSeconds(60)),
            $"no writer waited for room with worker 0 done ({journal.Pending} pending, {journal.Waiters} waiting)");
        Assert.Equal(first, journal.MemTailSeq);
        Assert.True(writer.IsAlive);
        Assert.True(Volatile.Read(ref written) < 400); // (no read now: the harness serialises its I/O, and the writer is in it)
        journal.PausedWorkers = 0;
        journal.WakeWriteOut();
        Assert.True(writer.Join(TimeSpan.FromSeconds(120)), "the writer never proceeded");
        Assert.Equal(400, written);
        WaitWrittenOut(journal);
        Assert.True(journal.MemTailSeq > first);
        _h.AssertModel(md, model, 0, model.Length, array);
        AssertParityClean(array);
    }

    /// <summary>
    /// A crash during two write-outs at once (stripes of two workers): each one's member writes
    /// (its parity runs and the data of the records it covers) are torn on every member, and any
    /// one member is lost; assembly replays both from the log and the array reads as the model.
    /// </summary>
    [Theory]
    [InlineData(-1)]
    [InlineData(0)]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    public void TwoTornWriteOutsAreBothReplayed(int lostSlot)
    {
        (string[] m, string j, MdSuperblock sb) = NewArray(4 << 20);
        IBlockDevice md = _h.Open(MdHarness.JournalSpec(m, j));
        MdArray array = MdArray.Of(md)!;
        Raid5Journal journal = array.Journal!;
        const int Area = 4 * StripeBytes;
        var model = new byte[Area];
        _h.WriteToModel(md, model, 0, Area, 1);
        WaitWrittenOut(journal);
        journal.PauseWriteOut = true;
        _h.WriteToModel(md, model, 5 * 4096, 4096, 2);                     // stripe 0: worker 0's
        _h.WriteToModel(md, model, StripeBytes + 14 * 1024, 4096, 3);       // stripe 1: worker 1's, across two members
        _h.WriteToModel(md, model, StripeBytes + 40 * 1024, 1024, 4);
        WaitWrittenOut(journal);
        journal.LeaveLogOnStop = true;
        _h.Reopen();

        List<Raid5Journal.Record> records = _h.JournalRecords(j);
        long[] stripes = [0, Chunk >> Bio.SectorShift];
        foreach (long stripe in stripes)
        {
            Raid5Journal.Record p = records.Last(r => r.Kind == Raid5JournalRecordKind.Parity && r.MemberSector == stripe);
            IEnumerable<Raid5Journal.Record> covered = records.Where(r => r.Kind == Raid5JournalRecordKind.Data && r.MemberSector == stripe && r.Seq <= p.Seq - p.WritesOut);
            foreach (Raid5JournalEntry e in p.Entries.Concat(covered.SelectMany(r => r.Entries)))
            {
                long at = ((long)sb.DataOffset + p.MemberSector + e.First) << Bio.SectorShift;
                Assert.Equal(BlockStatus.Ok, _h.Write(_h.Open(m[e.Slot]), at, Stamp.Make(0, e.Sectors << Bio.SectorShift, 99)));
            }
        }
        _h.MarkDirty(m);
        _h.Reopen();
        string[] members = [.. m.Select((s, i) => i == lostSlot ? "missing" : s)];
        md = _h.Open(MdHarness.JournalSpec(members, j));
        array = MdArray.Of(md)!;
        _h.AssertModel(md, model, 0, Area, array);
        if (lostSlot >= 0)
        {
            array.AddReplacement(m[lostSlot]);
            Assert.True(array.WaitForSync(TimeSpan.FromSeconds(60)));
        }
        _h.AssertModel(md, model, 0, Area, array);
        AssertParityClean(array);
    }

    /// <summary>
    /// Stopping the array while the workers write out a backlog: a clean stop waits for both and
    /// leaves the journal clean; a stop that leaves the log as a crash would (the workers stopped
    /// mid-backlog) loses nothing either — assembly replays what they had not written out.
    /// </summary>
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void StoppingWhileTheWorkersRunLosesNothing(bool crash)
    {
        (string[] m, string j, _) = NewArray(8 << 20);
        IBlockDevice md = _h.Open(MdHarness.JournalSpec(m, j));
        MdArray array = MdArray.Of(md)!;
        Raid5Journal journal = array.Journal!;
        const int Area = 16 * StripeBytes;
        var model = new byte[Area];
        journal.PauseWriteOut = true;
        var rnd = new Random(crash ? 8 : 7);
        for (int i = 0; i < 300; i++) _h.WriteToModel(md, model, rnd.Next(0, Area / 4096) * 4096, 4096, i + 1);
        Assert.True(journal.Pending > 100);
        journal.LeaveLogOnStop = crash;
        journal.PauseWriteOut = false;
        journal.WakeWriteOut();
        _h.Reopen(); // while both workers write the backlog out
        if (!crash)
        {
            IBlockDevice jdev = _h.Open(j);
            using (var io = new MdMetadataIo(jdev.AddressSpace)) Assert.True(Raid5Journal.ReadSuperblock(jdev, io).IsClean);
            _h.Reopen();
        }
        AssembleAndCheck(m, j, model);
    }
}
