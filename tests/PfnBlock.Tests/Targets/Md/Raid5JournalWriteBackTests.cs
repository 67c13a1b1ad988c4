using System.Diagnostics;
using CsCheck;
using PfnBlock.Block;
using PfnBlock.Devices;
using PfnBlock.Targets.Flakey;
using PfnBlock.Targets.Md;

namespace PfnBlock.Tests.Targets.Md;

/// <summary>
/// The RAID5 journal in write-back mode: writes complete in the journal and reach the members
/// later, reads see what is not written out yet, a full log makes writers wait, crashes (in
/// process and SIGKILLed writers) plus a lost member lose no acknowledged write, the write hole
/// stays closed during write-out; and a failing journal device in either mode.
/// </summary>
public sealed class Raid5JournalWriteBackTests : IDisposable
{
    private const long Chunk = 16 << 10;
    private const int Blocks = 64;
    private readonly MdHarness _h = new();

    public void Dispose() => _h.Dispose();

    private (string[] Members, string Journal, MdSuperblock Sb) NewArray(long journalBytes = 4 << 20, Raid5JournalMode mode = Raid5JournalMode.WriteBack, string? journal = null) =>
        _h.NewJournalledRaid5(Chunk, journalBytes, mode, "wb", journal);

    private static void WaitWrittenOut(Raid5Journal j)
    {
        j.PauseWriteOut = false;
        j.WakeWriteOut();
        Assert.True(SpinWait.SpinUntil(() => j.Pending == 0 || j.Failed, TimeSpan.FromSeconds(60)), $"{j.Pending} record(s) were never written out");
    }

    [Fact]
    public void WritesCompleteInTheJournalReadsSeeThemAndWriteOutReachesTheMembers()
    {
        (string[] m, string j, _) = NewArray(journalBytes: 8 << 20); // room for every write below while write-out is paused
        // A member says its array has a journal (raid examine).
        Assert.Contains("Journal", MdExamine.Format(m[0], MdExamine.Examine(_h.Open(m[0]))), StringComparison.Ordinal);
        IBlockDevice md = _h.Open(MdHarness.JournalSpec(m, j));
        MdArray array = MdArray.Of(md)!;
        Raid5Journal journal = array.Journal!;
        Assert.True(journal.WriteBack);
        journal.PauseWriteOut = true;
        Raid5Target target = (Raid5Target)((MappedDevice)md).Table[0].Target;
        var model = new byte[1 << 20];
        var rnd = new Random(3);
        for (int i = 0; i < 40; i++)
        {
            int off = rnd.Next(0, (1 << 20) / 512 - 64) * 512;
            _h.WriteToModel(md, model, off, rnd.Next(1, 64) * 512, i + 1);
        }
        _h.WriteToModel(md, model, (int)(3 * Chunk), (int)(3 * Chunk), 500); // a full stripe
        // Nothing reached the members: no stripe write ran, yet every read returns the new data.
        Assert.True(journal.Pending >= 41, $"{journal.Pending} pending");
        Assert.Equal((0L, 0L, 0L, 0L), target.WriteCounts);
        _h.AssertModel(md, model, 0, model.Length, array);
        WaitWrittenOut(journal);
        // Written out a stripe at a time, the records of a stripe merged: fewer stripe writes than records.
        (long stripes, long records) = target.WriteOutCounts;
        Assert.True(records >= 41, $"{records} records written out");
        Assert.True(stripes < records, $"{stripes} stripe write-outs for {records} records: none merged");
        Assert.Equal(0, journal.Pending);
        _h.AssertModel(md, model, 0, model.Length, array);
        array.StartCheck();
        Assert.True(array.WaitForSync(TimeSpan.FromSeconds(60)));
        Assert.Equal(0, array.MismatchCount);
        Assert.True(array.JournalStatus!.WrittenOut >= 41);

        // A clean stop with records pending writes them all out first: the journal is left clean.
        journal.PauseWriteOut = true;
        _h.WriteToModel(md, model, 8192, 20000 & ~511, 900);
        Assert.True(journal.Pending > 0);
        journal.PauseWriteOut = false;
        _h.Reopen();
        IBlockDevice jdev = _h.Open(j);
        using (var io = new MdMetadataIo(jdev.AddressSpace)) Assert.True(Raid5Journal.ReadSuperblock(jdev, io).IsClean);
        _h.Reopen();
        md = _h.Open(MdHarness.JournalSpec(m, j));
        _h.AssertModel(md, model, 0, model.Length, MdArray.Of(md)!);
        Assert.Equal(0, MdArray.Of(md)!.JournalStatus!.Pending);
    }

    /// <summary>
    /// Records whose rows form more runs than one parity record names (29) are written out in more
    /// than one merged write-out of their stripe, oldest first; the array reads as the model and
    /// its parity checks clean.
    /// </summary>
    [Fact]
    public void AStripeWithMoreRowRunsThanAParityRecordNamesIsWrittenOutInParts()
    {
        const long Big = 64 << 10; // 128 rows per chunk
        (string[] m, string j, _) = _h.NewJournalledRaid5(Big, 8 << 20, Raid5JournalMode.WriteBack, "runs");
        IBlockDevice md = _h.Open(MdHarness.JournalSpec(m, j));
        MdArray array = MdArray.Of(md)!;
        Raid5Journal journal = array.Journal!;
        Raid5Target target = (Raid5Target)((MappedDevice)md).Table[0].Target;
        var model = new byte[3 * Big];
        _h.WriteToModel(md, model, 0, model.Length, 1); // one full stripe
        WaitWrittenOut(journal);
        (long stripesBefore, _) = target.WriteOutCounts;
        journal.PauseWriteOut = true;
        // 40 one-sector writes three rows apart in the first chunk: 40 runs of rows.
        for (int i = 0; i < 40; i++) _h.WriteToModel(md, model, i * 3 * 512, 512, 100 + i);
        _h.AssertModel(md, model, 0, model.Length, array);
        WaitWrittenOut(journal);
        (long stripes, long records) = target.WriteOutCounts;
        Assert.Equal(2, stripes - stripesBefore); // 29 runs, then the other 11
        Assert.True(records >= 41);
        _h.AssertModel(md, model, 0, model.Length, array);
        array.StartCheck();
        Assert.True(array.WaitForSync(TimeSpan.FromSeconds(60)));
        Assert.Equal(0, array.MismatchCount);
    }

    [Fact]
    public void AFullLogMakesWritersWaitForWriteOutThenTheyProceed()
    {
        // The smallest write-back journal this geometry takes, a little over: four largest records.
        long minBytes = Raid5JournalLayout.MinBlocks(4, Chunk >> Bio.SectorShift, Raid5JournalMode.WriteBack) * Raid5JournalLayout.BlockBytes;
        (string[] m, string j, _) = NewArray(journalBytes: Math.Max(1 << 20, minBytes));
        IBlockDevice md = _h.Open(MdHarness.JournalSpec(m, j));
        MdArray array = MdArray.Of(md)!;
        Raid5Journal journal = array.Journal!;
        journal.PauseWriteOut = true;
        var model = new byte[2 << 20];
        int written = 0;
        var writer = new Thread(() =>
        {
            var rnd = new Random(4);
            for (int i = 0; i < 400; i++) // 400 × (4 KiB + a header) is more than the log holds
            {
                int off = rnd.Next(0, model.Length / 4096) * 4096;
                _h.WriteToModel(md, model, off, 4096, i + 7);
                Interlocked.Increment(ref written);
            }
        }) { IsBackground = true };
        writer.Start();
        Assert.True(SpinWait.SpinUntil(() => journal.Waiters > 0, TimeSpan.FromSeconds(60)), "no writer waited for room");
        int before = Volatile.Read(ref written);
        Assert.True(before < 400);
        Assert.True(writer.IsAlive);
        Assert.False(journal.Failed);
        journal.PauseWriteOut = false;
        journal.WakeWriteOut();
        Assert.True(writer.Join(TimeSpan.FromSeconds(120)), "the writer never proceeded");
        Assert.Equal(400, written);
        _h.AssertModel(md, model, 0, model.Length, array);
        Assert.True(array.JournalStatus!.Reclaims > 0);
    }

    /// <summary>
    /// Any writes, write-out progress and crashes: reads always equal the model; a crash (the log
    /// left as it was, the last write-out record's member writes torn on any subset of slots) plus
    /// any member lost keeps every acknowledged write — each completes only once durable in the journal.
    /// </summary>
    [Fact]
    public void WritesWriteOutAndCrashesReadAsTheModel()
    {
        (string[] m, string j, MdSuperblock sb) = NewArray(journalBytes: 16 << 20); // room for 24 writes with write-out paused
        const int Area = 256 << 10;
        var op = Gen.OneOf(
            Gen.Select(Gen.Int[0, Area / 512 - 1], Gen.Int[1, 96]).Select(w => (Kind: 0, w.Item1, w.Item2)),
            Gen.Int[0, 8].Select(k => (Kind: 1, k, 0)),   // let write-out run until at most k records are pending
            Gen.Const((Kind: 2, 0, 0)));                  // a flush
        Gen.Select(op.Array[1, 24], Gen.Int[0, 15], Gen.Int[-1, 3], Gen.Int[1, 1000]).Sample((ops, tornMask, lostSlot, seed) =>
        {
            _h.Reopen();
            var model = new byte[Area];
            IBlockDevice md = _h.Open(MdHarness.JournalSpec(m, j));
            MdArray array = MdArray.Of(md)!;
            Raid5Journal journal = array.Journal!;
            _h.Read(md, 0, Area).CopyTo(model, 0); // the array starts from what the last sample left
            journal.PauseWriteOut = true;
            foreach ((int kind, int a, int b) in ops)
            {
                if (kind == 0) _h.WriteToModel(md, model, a * 512, Math.Min(b, Area / 512 - a) * 512, seed++);
                else if (kind == 2) Assert.Equal(BlockStatus.Ok, md.SubmitAndWait(new Bio().Init(BioOp.Flush, 0)));
                else
                {
                    journal.PauseWriteOut = false;
                    journal.WakeWriteOut();
                    Assert.True(SpinWait.SpinUntil(() => journal.Pending <= a, TimeSpan.FromSeconds(60)));
                    journal.PauseWriteOut = true;
                }
                _h.AssertModel(md, model, 0, Area, array);
            }
            // The crash: the log stays; the last write-out's member writes (its parity and the data of the
            // records it covers) are lost on the slots in tornMask.
            journal.LeaveLogOnStop = true;
            _h.Reopen();
            List<Raid5Journal.Record> records = _h.JournalRecords(j);
            Raid5Journal.Record? last = records.Where(r => r.Kind == Raid5JournalRecordKind.Parity).Select(r => (Raid5Journal.Record?)r).LastOrDefault();
            if (last is { } l)
                foreach (Raid5JournalEntry e in l.Entries.Concat(CoveredBy(records, l).SelectMany(r => r.Entries)))
                    if ((tornMask & (1 << e.Slot)) != 0)
                    {
                        long at = ((long)sb.DataOffset + l.MemberSector + e.First) << Bio.SectorShift;
                        Assert.Equal(BlockStatus.Ok, _h.Write(_h.Open(m[e.Slot]), at, Stamp.Make(0, e.Sectors << Bio.SectorShift, seed)));
                    }
            _h.Reopen();
            string[] members = [.. m.Select((s, i) => i == lostSlot ? "missing" : s)];
            md = _h.Open(MdHarness.JournalSpec(members, j));
            array = MdArray.Of(md)!;
            _h.AssertModel(md, model, 0, Area, array);
            WaitWrittenOut(array.Journal!);
            _h.AssertModel(md, model, 0, Area, array);
            if (lostSlot >= 0)
            {
                array.AddReplacement(m[lostSlot]);
                Assert.True(array.WaitForSync(TimeSpan.FromSeconds(60)));
            }
            array.StartCheck();
            Assert.True(array.WaitForSync(TimeSpan.FromSeconds(60)));
            Assert.Equal(0, array.MismatchCount);
        }, iter: 12, threads: 1);
    }

    /// <summary>
    /// The write hole during write-out: the records are written out, the array crashes with the
    /// last write-out's parity not on its member, and a member that stripe write did not touch is
    /// lost. Without the journal the rebuilt chunk is wrong; with it the write-out record (data and
    /// parity) is replayed first and the whole array reads as the model.
    /// </summary>
    [Fact]
    public void TheWriteHoleStaysClosedDuringWriteOut()
    {
        (string[] m, string j, MdSuperblock sb) = NewArray();
        IBlockDevice md = _h.Open(MdHarness.JournalSpec(m, j));
        MdArray array = MdArray.Of(md)!;
        const int Area = 512 << 10;
        var model = new byte[Area];
        _h.WriteToModel(md, model, 0, Area, 1);
        WaitWrittenOut(array.Journal!);
        array.Journal!.PauseWriteOut = true;
        _h.WriteToModel(md, model, 5 * 4096, 4096, 2); // a small write into a stripe whose other chunks hold data
        WaitWrittenOut(array.Journal!);
        array.Journal!.LeaveLogOnStop = true;
        _h.Reopen();

        List<Raid5Journal.Record> records = _h.JournalRecords(j);
        Raid5Journal.Record last = records.Last(r => r.Kind == Raid5JournalRecordKind.Parity);
        Assert.NotEqual(0u, last.WritesOut);
        var layout = new Raid5Layout(4, Chunk >> Bio.SectorShift);
        long stripe = last.MemberSector / (Chunk >> Bio.SectorShift);
        int pd = layout.ParityMember(stripe);
        Raid5JournalEntry parity = last.Entries.Single(e => e.Slot == pd);
        // A member the small write did not touch (the data records this write-out covers and no earlier one did).
        long before = records.Where(r => r.Kind == Raid5JournalRecordKind.Parity && r.MemberSector == last.MemberSector && r.Seq < last.Seq)
            .Select(r => r.Seq - r.WritesOut).DefaultIfEmpty(0).Max();
        HashSet<int> touched = [.. CoveredBy(records, last).Where(r => r.Seq > before).SelectMany(r => r.Entries).Select(e => e.Slot)];
        Assert.NotEmpty(touched);
        int lost = Enumerable.Range(0, 4).First(s => s != pd && !touched.Contains(s));
        long rowByte = ((long)sb.DataOffset + last.MemberSector + parity.First) << Bio.SectorShift;
        int rowBytes = parity.Sectors << Bio.SectorShift;
        Assert.Equal(BlockStatus.Ok, _h.Write(_h.Open(m[pd]), rowByte, Stamp.Make(0, rowBytes, 77))); // the tear
        _h.MarkDirty(m);
        _h.Reopen();
        string[] degraded = [.. m.Select((s, i) => i == lost ? "missing" : s)];
        int arrayByte = (int)(layout.ArraySector(stripe, layout.DataIndexOf(stripe, lost), parity.First) << Bio.SectorShift);

        IBlockDevice bare = _h.Open(MdHarness.Spec(degraded, ",journal_missing,start_dirty_degraded"));
        Assert.False(model.AsSpan(arrayByte, rowBytes).SequenceEqual(_h.Read(bare, arrayByte, rowBytes)), "without the journal the rebuilt chunk should be wrong");
        _h.Reopen();

        md = _h.Open(MdHarness.JournalSpec(degraded, j));
        _h.AssertModel(md, model, 0, Area, MdArray.Of(md)!);
    }

    /// <summary>The data records of its stripe a parity record covers (every one up to seq − writes_out) that are still in the log.</summary>
    private static IEnumerable<Raid5Journal.Record> CoveredBy(List<Raid5Journal.Record> records, Raid5Journal.Record parity) =>
        records.Where(r => r.Kind == Raid5JournalRecordKind.Data && r.MemberSector == parity.MemberSector && r.Seq <= parity.Seq - parity.WritesOut);

    /// <summary>
    /// Real SIGKILLs of a writer (each write FUA or followed by a flush), write-through and
    /// write-back, then reassembly with a member missing: every acknowledged write is there. Then
    /// the member is rebuilt and the parity checks clean.
    /// </summary>
    [Theory]
    [InlineData(Raid5JournalMode.WriteThrough)]
    [InlineData(Raid5JournalMode.WriteBack)]
    public void KilledWritersThenALostMemberLoseNoAcknowledgedWrite(Raid5JournalMode mode)
    {
        (string[] m, string j, _) = NewArray(mode: mode);
        for (int round = 0; round < 2; round++)
        {
            int seed = 40 + round + (int)mode * 10, lost = (round * 3 + (int)mode) % 4;
            List<(long Version, int Block)> acks = MirrorCrashTests.RunAndKill(MdHarness.JournalSpec(m, j), seed, runMs: 60 + 60 * round, blocks: Blocks);
            Assert.NotEmpty(acks);
            _h.Reopen();
            string[] degraded = [.. m.Select((s, i) => i == lost ? "missing" : s)];
            IBlockDevice md = _h.Open(MdHarness.JournalSpec(degraded, j));
            MdArray array = MdArray.Of(md)!;
            _h.AssertAcknowledged(md, acks, Blocks, seed);
            if (array.Journal!.WriteBack) WaitWrittenOut(array.Journal);
            _h.AssertAcknowledged(md, acks, Blocks, seed);
            array.AddReplacement(m[lost]);
            Assert.True(array.WaitForSync(TimeSpan.FromSeconds(60)));
            array.StartCheck();
            Assert.True(array.WaitForSync(TimeSpan.FromSeconds(60)));
            Assert.Equal(0, array.MismatchCount);
            _h.Reopen();
        }
    }

    /// <summary>
    /// The journal device fails (a flakey target under it starts failing writes): the write that
    /// met the failure fails with an I/O error, later writes are refused (the array is read-only,
    /// as md makes it), reads keep returning every acknowledged write — in write-back mode too,
    /// from the journal — and once the journal works again a reassembly writes everything out.
    /// </summary>
    [Theory]
    [InlineData(Raid5JournalMode.WriteThrough)]
    [InlineData(Raid5JournalMode.WriteBack)]
    public void AFailingJournalRefusesWritesAndLosesNoAcknowledgedWrite(Raid5JournalMode mode)
    {
        string ns = "pmem:" + _h.Scratch.NewNamespace(4 << 20);
        long sectors = _h.Open(ns).CapacitySectors;
        string table = _h.Scratch.NewPath("journal.table");
        File.WriteAllText(table, $"0 {sectors} flakey {ns} 0 3600 3600 1 error_writes\n");
        _h.Reopen();
        (string[] m, string j, _) = NewArray(mode: mode, journal: "table:" + table);
        IBlockDevice md = _h.Open(MdHarness.JournalSpec(m, j));
        MdArray array = MdArray.Of(md)!;
        Raid5Journal journal = array.Journal!;
        journal.PauseWriteOut = mode == Raid5JournalMode.WriteBack; // records stay in the journal alone
        var model = new byte[512 << 10];
        for (int i = 0; i < 40; i++) _h.WriteToModel(md, model, (i * 37 % 120) * 4096, 8192, i + 1);

        var flakey = (FlakeyTarget)((MappedDevice)journal.Device).Table[0].Target;
        flakey.ForcedDown = true;
        Assert.Equal(BlockStatus.IoError, _h.Write(md, 0, Stamp.Make(0, 4096, 99)));
        Assert.True(journal.Failed);
        Assert.Contains(array.Log, l => l.Contains("failed (record write)", StringComparison.Ordinal) && l.Contains("read-only", StringComparison.Ordinal));
        Assert.Equal(BlockStatus.IoError, _h.Write(md, 8192, Stamp.Make(0, 4096, 98)));
        _h.AssertModel(md, model, 0, model.Length, array);
        Assert.True(array.JournalStatus!.Failed);

        // The device is back: the next assembly replays (write-back: writes out) what the journal holds.
        flakey.ForcedDown = false;
        _h.Reopen();
        md = _h.Open(MdHarness.JournalSpec(m, j));
        array = MdArray.Of(md)!;
        if (mode == Raid5JournalMode.WriteBack)
        {
            Assert.True(array.JournalStatus!.Pending > 0 || array.JournalStatus.WrittenOut > 0);
            WaitWrittenOut(array.Journal!);
        }
        _h.AssertModel(md, model, 0, model.Length, array);
        Assert.Equal(BlockStatus.Ok, _h.Write(md, 0, Stamp.Make(0, 4096, 97)));
    }

    [Fact]
    public void BadWriteBackInputIsRefusedClearly()
    {
        // Too small for write-back (four largest records), though big enough for write-through.
        long wt = Raid5JournalLayout.MinBlocks(4, Chunk >> Bio.SectorShift) * Raid5JournalLayout.BlockBytes;
        string small = "pmem:" + _h.Scratch.NewNamespace(Math.Max(1 << 20, wt));
        var e = Assert.Throws<ArgumentException>(() => MdCreate.Create(_h.Members(4), new MdCreateOptions { Level = 5, ChunkBytes = 256 << 10, Journal = small, JournalMode = Raid5JournalMode.WriteBack }, _h.Set));
        Assert.Contains("needs at least", e.Message);

        // A write-back journal with records pending cannot start read-only: they would be invisible.
        (string[] m, string j, _) = NewArray();
        IBlockDevice md = _h.Open(MdHarness.JournalSpec(m, j));
        MdArray.Of(md)!.Journal!.PauseWriteOut = true;
        Assert.Equal(BlockStatus.Ok, _h.Write(md, 0, Stamp.Make(0, 4096, 1)));
        MdArray.Of(md)!.Journal!.LeaveLogOnStop = true;
        _h.Reopen();
        using (var readOnly = new DeviceSet(readOnly: true))
        {
            var io = Assert.Throws<IOException>(() => readOnly.Open(MdHarness.JournalSpec(m, j)));
            Assert.Contains("read-write", io.Message);
        }
        _h.Reopen();
        // Read-write, it writes the record out.
        md = _h.Open(MdHarness.JournalSpec(m, j));
        WaitWrittenOut(MdArray.Of(md)!.Journal!);
        Assert.True(Stamp.Make(0, 4096, 1).AsSpan().SequenceEqual(_h.Read(md, 0, 4096)));
    }

    /// <summary>
    /// <c>serve --config</c> with a raid5 whose write-back journal is declared in the YAML: qemu-io
    /// writes through NBD, the server is SIGKILLed, and the array reassembled here from the same
    /// namespaces holds the data (replayed or written out from the journal).
    /// </summary>
    [Fact]
    public void ServeConfigRunsAJournalledRaid5()
    {
        string dir = _h.Scratch.NewDirectory("cfg");
        string[] r = [.. Enumerable.Range(0, 4).Select(i => _h.Scratch.NewPath($"r{i}"))];
        string j = _h.Scratch.NewPath("j");
        string socket = Path.Combine(dir, "nbd.sock"), file = Path.Combine(dir, "stack.yaml");
        File.WriteAllText(file, $$"""
            namespaces:
            {{string.Concat(r.Select(p => $"  - {{ path: {p}, size: 16M }}\n"))}}  - { path: {{j}}, size: 16M }
            devices:
              array: "raid5:{{string.Join('+', r.Select(p => "pmem:" + p))}},chunk=16K,journal=pmem:{{j}},journal_mode=write-back"
            exports:
              - { name: r5, device: "@array" }
            listen: [ "unix:{{socket}}" ]
            """);
        using Process serve = ChildProcess.Start(ChildProcess.CliDll, "serve", "--config", file);
        try
        {
            Assert.True(SpinWait.SpinUntil(() => File.Exists(socket), TimeSpan.FromSeconds(30)), "the server never listened");
            string uri = $"nbd+unix:///r5?socket={socket}";
            (int w, _, string werr) = ChildProcess.RunTool("qemu-io", "-f", "raw", "-c", "write -P 0x5a 102400 65536", "-c", "flush", uri);
            Assert.True(w == 0, werr);
            (int rd, string rout, string rerr) = ChildProcess.RunTool("qemu-io", "-f", "raw", "-c", "read -P 0x5a 102400 65536", uri);
            Assert.True(rd == 0 && !rout.Contains("Pattern verification failed"), rout + rerr);
        }
        finally
        {
            serve.Kill(entireProcessTree: true); // SIGKILL: no clean stop
            serve.WaitForExit();
        }
        IBlockDevice md = _h.Open(MdHarness.JournalSpec(r.Select(p => "pmem:" + p), "pmem:" + j));
        MdArray array = MdArray.Of(md)!;
        Assert.Equal(Raid5JournalMode.WriteBack, array.JournalStatus!.Mode);
        byte[] expected = new byte[65536];
        Array.Fill(expected, (byte)0x5a);
        Assert.True(expected.AsSpan().SequenceEqual(_h.Read(md, 102400, 65536)), string.Join(" | ", array.Log));
        WaitWrittenOut(array.Journal!);
        Assert.True(expected.AsSpan().SequenceEqual(_h.Read(md, 102400, 65536)));
    }
}
