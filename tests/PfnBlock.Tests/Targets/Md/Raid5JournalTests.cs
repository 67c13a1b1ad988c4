using System.Buffers.Binary;
using CsCheck;
using PfnBlock.Block;
using PfnBlock.Devices;
using PfnBlock.Targets.Md;

namespace PfnBlock.Tests.Targets.Md;

/// <summary>
/// The RAID5 write journal (write-through): the write hole of a crash plus a lost member closed by
/// replay, SIGKILLed writers whose acknowledged writes survive reassembly, random writes and
/// crash points against a model, the journal's format (torn records ignored, a damaged
/// superblock or another array's journal refused), and a missing journal.
/// </summary>
public sealed class Raid5JournalTests : IDisposable
{
    private const long Chunk = 16 << 10;
    private const int Blocks = 64;
    private readonly MdHarness _h = new();

    public void Dispose() => _h.Dispose();

    private (string[] Members, string Journal, MdSuperblock Sb) NewArray(long journalBytes = 4 << 20) =>
        _h.NewJournalledRaid5(Chunk, journalBytes, Raid5JournalMode.WriteThrough, "j");

    private Raid5JournalSuperblock JournalSuperblock(string journal)
    {
        IBlockDevice dev = _h.Open(journal);
        using var io = new MdMetadataIo(dev.AddressSpace);
        return Raid5Journal.ReadSuperblock(dev, io);
    }

    [Fact]
    public void WritesGoThroughTheJournalAndAStopEmptiesIt()
    {
        (string[] m, string j, MdSuperblock sb) = NewArray();
        Assert.NotEqual(0u, sb.FeatureMap & MdSuperblock.FeatureJournal);
        IBlockDevice md = _h.Open(MdHarness.JournalSpec(m, j));
        MdArray array = MdArray.Of(md)!;
        var model = new byte[1 << 20];
        var rnd = new Random(5);
        for (int i = 0; i < 200; i++)
        {
            int off = rnd.Next(0, (1 << 20) / 512 - 64) * 512;
            _h.WriteToModel(md, model, off, rnd.Next(1, 64) * 512, i + 1);
        }
        // A full-stripe write and a write over two stripes, too.
        _h.WriteToModel(md, model, (int)(3 * Chunk), (int)(3 * Chunk), 900);
        _h.WriteToModel(md, model, (int)(3 * Chunk) - 4096, (int)(3 * Chunk), 901);
        _h.AssertModel(md, model, 0, model.Length, array);
        Raid5JournalStatus status = array.JournalStatus!;
        Assert.True(status.Records >= 202, $"{status.Records} records");
        Assert.True(status.UsedBlocks > 0);
        Assert.False(status.Failed);
        _h.Reopen();
        Raid5JournalSuperblock jsb = JournalSuperblock(j);
        Assert.True(jsb.IsClean);
        Assert.Empty(_h.JournalRecords(j));
        _h.Reopen();
        md = _h.Open(MdHarness.JournalSpec(m, j));
        _h.AssertModel(md, model, 0, model.Length, MdArray.Of(md)!);
        Assert.Equal(0, MdArray.Of(md)!.JournalStatus!.Replayed);
    }

    [Fact]
    public void TheRaid5KindFormatsItsJournalOnFirstOpen()
    {
        string[] m = _h.Members(4);
        string j = "pmem:" + _h.Scratch.NewNamespace(4 << 20);
        string spec = $"raid5:{DeviceSpec.Quote(string.Join('+', m))},chunk=16K,journal={DeviceSpec.Quote(j)}";
        IBlockDevice md = _h.Open(spec);
        Assert.Equal(Raid5JournalMode.WriteThrough, MdArray.Of(md)!.JournalStatus!.Mode);
        byte[] data = Stamp.Make(4096, 3 * 4096, 3);
        Assert.Equal(BlockStatus.Ok, _h.Write(md, 4096, data));
        _h.Reopen();
        md = _h.Open(spec); // assembled now, not formatted again
        Assert.True(data.AsSpan().SequenceEqual(_h.Read(md, 4096, data.Length)));
        _h.Reopen();
        string[] m2 = _h.Members(4);
        string j2 = "pmem:" + _h.Scratch.NewNamespace(4 << 20);
        // Write-back needs room for four of the largest records (512 KiB chunks by default): 4 MiB is too small.
        var e = Assert.Throws<ArgumentException>(() => _h.Open($"raid5:{DeviceSpec.Quote(string.Join('+', m2))},journal={DeviceSpec.Quote(j2)},journal_mode=write-back"));
        Assert.Contains("needs at least", e.Message);
        _h.Reopen();
        md = _h.Open($"raid5:{DeviceSpec.Quote(string.Join('+', m2))},chunk=16K,journal={DeviceSpec.Quote(j2)},journal_mode=write-back");
        Assert.Equal(Raid5JournalMode.WriteBack, MdArray.Of(md)!.JournalStatus!.Mode);
    }

    [Fact]
    public void AFullLogWaitsForReclaimAndWraps()
    {
        // The smallest journal this array takes: two full-stripe records. Writes wrap it many times.
        (string[] m, string j, _) = NewArray(journalBytes: 1 << 20); // the smallest namespace: room for ~7 full-stripe records
        IBlockDevice md = _h.Open(MdHarness.JournalSpec(m, j));
        MdArray array = MdArray.Of(md)!;
        var model = new byte[40 * 3 * Chunk];
        MdHarness.OnThreads(2, t =>
        {
            var rnd = new Random(9 + t);
            for (int i = 0; i < 150; i++)
            {
                int stripe = rnd.Next(0, 20) * 2 + t; // threads write different stripes
                int off = (int)(stripe * 3 * Chunk) + rnd.Next(0, (int)(3 * Chunk) / 4096 - 4) * 4096;
                byte[] data = Stamp.Make(off, 8192, i * 2 + t);
                Assert.Equal(BlockStatus.Ok, _h.Write(md, off, data));
                lock (model) data.CopyTo(model, off);
            }
        });
        _h.AssertModel(md, model, 0, model.Length, array);
        Assert.True(array.JournalStatus!.Reclaims > 3, $"{array.JournalStatus.Reclaims} reclaims");
    }

    /// <summary>
    /// The write hole, and the journal closing it: a writer is SIGKILLed; the last stripe it wrote
    /// lost its parity on the member (the crash came between data and parity); then a member that
    /// stripe did not write is lost. Without the journal (read-only, start_dirty_degraded) the lost
    /// chunk is rebuilt from stale parity and comes back wrong; with it the record is replayed
    /// first and the chunk comes back right, and every acknowledged write is there.
    /// </summary>
    [Fact]
    public void ACrashThenALostMemberReadsRightWithTheJournal()
    {
        (string[] m, string j, MdSuperblock sb) = NewArray();
        IBlockDevice md = _h.Open(MdHarness.JournalSpec(m, j));
        Assert.Equal(BlockStatus.Ok, _h.Write(md, 0, Stamp.Make(0, 1 << 20, 1)));
        _h.Reopen();
        List<(long Version, int Block)> acks = MirrorCrashTests.RunAndKill(MdHarness.JournalSpec(m, j), seed: 11, runMs: 100, blocks: Blocks);
        Assert.NotEmpty(acks);
        Assert.False(MdExamine.Examine(_h.Open(m[0])).Superblock.IsClean);

        Raid5Journal.Record last = _h.JournalRecords(j)[^1];
        var layout = new Raid5Layout(4, Chunk >> Bio.SectorShift);
        long stripe = last.MemberSector / (Chunk >> Bio.SectorShift);
        int pd = layout.ParityMember(stripe);
        Raid5JournalEntry parity = last.Entries.Single(e => e.Slot == pd);
        int lost = Enumerable.Range(0, 4).First(s => last.Entries.All(e => e.Slot != s));
        long rowByte = ((long)sb.DataOffset + last.MemberSector + parity.First) << Bio.SectorShift;
        int rowBytes = parity.Sectors << Bio.SectorShift;
        // What the lost member holds there (no record touched it since its last write completed).
        byte[] truth = _h.Read(_h.Open(m[lost]), rowByte, rowBytes);
        // The tear: the parity never reached its member.
        Assert.Equal(BlockStatus.Ok, _h.Write(_h.Open(m[pd]), rowByte, Stamp.Make(0, rowBytes, 77)));
        _h.Reopen();
        string[] degraded = [.. m.Select((s, i) => i == lost ? "missing" : s)];
        long arrayByte = layout.ArraySector(stripe, layout.DataIndexOf(stripe, lost), parity.First) << Bio.SectorShift;

        // Without the journal: read-only and dirty-degraded by request; the hole shows.
        IBlockDevice bare = _h.Open(MdHarness.Spec(degraded, ",journal_missing,start_dirty_degraded"));
        Assert.True(MdArray.Of(bare)!.IsReadOnly);
        Assert.NotEqual(BlockStatus.Ok, _h.Write(bare, 0, new byte[4096]));
        Assert.False(truth.AsSpan().SequenceEqual(_h.Read(bare, arrayByte, rowBytes)), "without the journal the rebuilt chunk should be wrong");
        _h.Reopen();

        // With it: no start_dirty_degraded needed, the record is replayed, the chunk is right.
        md = _h.Open(MdHarness.JournalSpec(degraded, j));
        MdArray array = MdArray.Of(md)!;
        Assert.Contains(array.Log, l => l.Contains("replayed", StringComparison.Ordinal) && l.Contains("no resync", StringComparison.Ordinal));
        Assert.True(truth.AsSpan().SequenceEqual(_h.Read(md, arrayByte, rowBytes)), "the journal should have closed the write hole");
        Assert.Equal(0, array.ResyncedSectors);
        _h.AssertAcknowledged(md, acks, Blocks, seed: 11);
    }

    /// <summary>SIGKILLed writers, three times over the same array: after each replay every acknowledged write is there and the parity checks clean.</summary>
    [Fact]
    public void KilledWritersLoseNoAcknowledgedWrite()
    {
        (string[] m, string j, _) = NewArray();
        for (int round = 0; round < 3; round++)
        {
            int seed = 20 + round;
            List<(long Version, int Block)> acks = MirrorCrashTests.RunAndKill(MdHarness.JournalSpec(m, j), seed, runMs: 60 + 40 * round, blocks: Blocks);
            Assert.NotEmpty(acks);
            _h.Reopen();
            IBlockDevice md = _h.Open(MdHarness.JournalSpec(m, j));
            MdArray array = MdArray.Of(md)!;
            Assert.True(array.JournalStatus!.Replayed > 0);
            _h.AssertAcknowledged(md, acks, Blocks, seed);
            array.StartCheck();
            Assert.True(array.WaitForSync(TimeSpan.FromSeconds(60)));
            Assert.Equal(0, array.MismatchCount);
            _h.Reopen();
        }
    }

    /// <summary>
    /// Random stripe writes, then a crash at a random point of a random stripe write (the record
    /// written, then any subset of the members' writes lost), then a random member lost: after
    /// replay the degraded array reads as the model of every write, the crashed one included.
    /// </summary>
    [Fact]
    public void CrashPointsAndALostMemberReadAsTheModel()
    {
        (string[] m, string j, MdSuperblock sb) = NewArray();
        const int Area = 256 << 10;
        var write = Gen.Select(Gen.Int[0, Area / 512 - 1], Gen.Int[1, 96]);
        Gen.Select(write.Array[1, 12], Gen.Int[0, 15], Gen.Int[0, 3], Gen.Int[1, 1000]).Sample((writes, tornMask, lostSlot, seed) =>
        {
            _h.Reopen();
            var model = new byte[Area];
            IBlockDevice md = _h.Open(MdHarness.JournalSpec(m, j));
            MdArray array = MdArray.Of(md)!;
            _h.Read(md, 0, Area).CopyTo(model, 0); // the array starts from what the last sample left
            foreach ((int sector, int sectors) in writes)
            {
                int n = Math.Min(sectors, Area / 512 - sector);
                _h.WriteToModel(md, model, sector * 512, n * 512, seed++);
            }
            // The crash: the members lose the last record's writes on the slots in tornMask (the
            // journal holds them); the array is left without a clean stop (its members' superblocks dirty).
            array.Journal!.LeaveLogOnStop = true;
            _h.Reopen();
            Raid5Journal.Record last = _h.JournalRecords(j)[^1];
            foreach (Raid5JournalEntry e in last.Entries)
                if ((tornMask & (1 << e.Slot)) != 0)
                {
                    long at = ((long)sb.DataOffset + last.MemberSector + e.First) << Bio.SectorShift;
                    Assert.Equal(BlockStatus.Ok, _h.Write(_h.Open(m[e.Slot]), at, Stamp.Make(0, e.Sectors << Bio.SectorShift, seed)));
                }
            _h.MarkDirty(m);
            _h.Reopen();
            string[] degraded = [.. m.Select((s, i) => i == lostSlot ? "missing" : s)];
            md = _h.Open(MdHarness.JournalSpec(degraded, j));
            _h.AssertModel(md, model, 0, Area, MdArray.Of(md)!);
            // Put the member back: rebuilt, the next sample starts whole.
            MdArray.Of(md)!.AddReplacement(m[lostSlot]);
            Assert.True(MdArray.Of(md)!.WaitForSync(TimeSpan.FromSeconds(60)));
        }, iter: 12, threads: 1);
    }

    /// <summary>Flips the bits of the byte at <paramref name="offset"/> of <paramref name="dev"/> (read and written as a whole block).</summary>
    private void Damage(IBlockDevice dev, long offset)
    {
        long block = offset & ~4095L;
        byte[] data = _h.Read(dev, block, 4096);
        data[offset - block] ^= 0xFF;
        Assert.Equal(BlockStatus.Ok, _h.Write(dev, block, data));
    }

    [Fact]
    public void ATornRecordIsIgnoredAndADamagedSuperblockCopyIsSurvived()
    {
        (string[] m, string j, _) = NewArray();
        List<(long Version, int Block)> acks = MirrorCrashTests.RunAndKill(MdHarness.JournalSpec(m, j), seed: 31, runMs: 50, blocks: Blocks, minAcks: 2);
        List<Raid5Journal.Record> records = _h.JournalRecords(j);
        Assert.True(records.Count >= 2);
        Raid5Journal.Record last = records[^1];
        // A record torn while it was written (so its members were never touched): its header made,
        // its payload not all there. With the payload's checksum right it would count; torn, it is ignored.
        IBlockDevice jdev = _h.Open(j);
        Raid5JournalSuperblock jsb = JournalSuperblock(j);
        // Where the writer puts the next record (a header block and 8 of payload): after the last one, or at
        // the log's start when it no longer fits before its end (the child may have filled the log that far).
        const int Size = 1 + 8;
        long at = last.Block + 1 + last.PayloadBlocks;
        if (at + Size > jsb.Blocks)
        {
            at = Raid5JournalLayout.LogStart;
            Assert.True(records[0].Block >= at + Size, "the live records leave no room for a record at the log's start");
        }
        byte[] payload = Stamp.Make(0, 4096, 5);
        Raid5JournalEntry[] entries = [new(last.Entries[0].Slot, 0, 8)];
        var header = new byte[Raid5JournalLayout.BlockBytes];
        Raid5JournalRecord.EncodeHeader(header, last.Seq + 1, at, last.MemberSector, entries, 8, Crc32C.Lanes.Of(jsb.RecordSeed, payload), jsb.RecordSeed);
        Assert.Equal(BlockStatus.Ok, _h.Write(jdev, at * Raid5JournalLayout.BlockBytes, [.. header, .. payload]));
        Assert.Equal(records.Count + 1, _h.JournalRecords(j).Count);
        Damage(jdev, (at + 1) * Raid5JournalLayout.BlockBytes + 100);
        Assert.Equal(records.Count, _h.JournalRecords(j).Count);
        // The older superblock copy damaged (as a torn update of it would be): the current one is used.
        Damage(jdev, (long)((jsb.Generation + 1) % 2) * Raid5JournalLayout.BlockBytes + 200);
        Assert.Equal(jsb.Generation, JournalSuperblock(j).Generation);
        _h.Reopen();
        IBlockDevice md = _h.Open(MdHarness.JournalSpec(m, j));
        Assert.Equal(records.Count, MdArray.Of(md)!.JournalStatus!.Replayed);
        _h.AssertAcknowledged(md, acks, Blocks, seed: 31);
    }

    /// <summary>Format 2.0 fields: a 1.x superblock (4 KiB blocks), a later major, a bad magic or checksum, and more members than a record header names are refused with what is wrong.</summary>
    [Fact]
    public void OtherFormatVersionsAndGeometriesAreRefusedClearly()
    {
        var sb = new Raid5JournalSuperblock { Generation = 1, Blocks = 8192, TailBlock = Raid5JournalLayout.LogStart, TailSeq = 1, RaidDisks = 4, ChunkSectors = 32 };
        var block = new byte[Raid5JournalLayout.BlockBytes];
        sb.Encode(block);
        Assert.NotNull(Raid5JournalSuperblock.Decode(block, 8192, out string? error));
        Assert.Null(error);

        byte[] v1 = [.. block];
        BinaryPrimitives.WriteUInt16LittleEndian(v1.AsSpan(8), 1);
        Assert.Null(Raid5JournalSuperblock.Decode(v1, 8192, out error));
        Assert.Contains("format 1.x", error);
        Assert.Contains("stop it cleanly", error);

        byte[] v3 = [.. block];
        BinaryPrimitives.WriteUInt16LittleEndian(v3.AsSpan(8), 3);
        Assert.Null(Raid5JournalSuperblock.Decode(v3, 8192, out error));
        Assert.Contains("checksum mismatch", error); // the version is under the checksum
        Reseal(v3);
        Assert.Null(Raid5JournalSuperblock.Decode(v3, 8192, out error));
        Assert.Contains("version 3 is not supported", error);

        byte[] magic = [.. block];
        magic[0] ^= 1;
        Assert.Null(Raid5JournalSuperblock.Decode(magic, 8192, out error));
        Assert.Contains("bad magic", error);

        sb.RaidDisks = Raid5JournalLayout.MaxMembers + 1;
        sb.Encode(block);
        Assert.Null(Raid5JournalSuperblock.Decode(block, 8192, out error));
        Assert.Contains("geometry", error);
        IBlockDevice dev = _h.Open("pmem:" + _h.Scratch.NewNamespace(4 << 20));
        var e = Assert.Throws<ArgumentException>(() => Raid5Journal.Format(dev, "j", new byte[16], Raid5JournalLayout.MaxMembers + 1, 32, Raid5JournalMode.WriteBack));
        Assert.Contains($"at most {Raid5JournalLayout.MaxMembers} members", e.Message);

        static void Reseal(byte[] b)
        {
            BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(Raid5JournalSuperblock.ChecksumOffset), 0);
            BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(Raid5JournalSuperblock.ChecksumOffset), Crc32C.Compute(0, b));
        }
    }

    [Fact]
    public void BadJournalsAreRefusedClearly()
    {
        (string[] m, string j, _) = NewArray();
        // Missing: refused, or read-only by request.
        var e = Assert.Throws<IOException>(() => _h.Open(MdHarness.Spec(m)));
        Assert.Contains("has a write journal but none was given", e.Message);
        _h.Reopen();
        Assert.True(MdArray.Of(_h.Open(MdHarness.Spec(m, ",journal_missing")))!.IsReadOnly);
        _h.Reopen();

        // Another array's journal.
        (string[] m2, string j2, _) = NewArray();
        e = Assert.Throws<IOException>(() => _h.Open(MdHarness.JournalSpec(m, j2)));
        Assert.Contains("belongs to another array", e.Message);
        _h.Reopen();

        // Both superblock copies damaged.
        IBlockDevice jdev = _h.Open(j);
        Damage(jdev, 100);
        Damage(jdev, Raid5JournalLayout.BlockBytes + 100);
        _h.Reopen();
        e = Assert.Throws<IOException>(() => _h.Open(MdHarness.JournalSpec(m, j)));
        Assert.Contains("checksum mismatch", e.Message);
        _h.Reopen();
        // The members are untouched by the refusals: the other array still opens with its journal.
        Assert.NotNull(MdArray.Of(_h.Open(MdHarness.JournalSpec(m2, j2))));
        _h.Reopen();

        // Too small for two full-stripe records; a journal for a mirror; a journal for an array without one.
        string tiny = "pmem:" + _h.Scratch.NewNamespace(1 << 20);
        var ae = Assert.Throws<ArgumentException>(() => MdCreate.Create(_h.Members(4), new MdCreateOptions { Level = 5, ChunkBytes = 512 << 10, Journal = tiny }, _h.Set));
        Assert.Contains("needs at least", ae.Message);
        ae = Assert.Throws<ArgumentException>(() => MdCreate.Create(_h.Members(2), new MdCreateOptions { Level = 1, Journal = tiny }, _h.Set));
        Assert.Contains("RAID5 arrays only", ae.Message);
        string[] plain = _h.Members(3);
        _h.Create(5, plain);
        e = Assert.Throws<IOException>(() => _h.Open(MdHarness.JournalSpec(plain, tiny)));
        Assert.Contains("has no write journal", e.Message);
    }
}
