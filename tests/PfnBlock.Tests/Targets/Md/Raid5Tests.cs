using CsCheck;
using PfnBlock.Block;
using PfnBlock.Devices;
using PfnBlock.Targets.Md;

namespace PfnBlock.Tests.Targets.Md;

/// <summary>
/// RAID5: the left-symmetric mapping against a model of md's raid5_compute_sector; the XOR kernel
/// against a byte loop; random writes, discards and write-zeroes against a byte model with a
/// member failing and a replacement rebuilt, the members' parity checked by an independent XOR of
/// the raw members and by the check scrub; mismatches counted as md's mismatch_cnt; media
/// errors reconstructed and rewritten; degraded and dirty-degraded starts.
/// </summary>
public sealed unsafe class Raid5Tests : IDisposable
{
    private const long Chunk = 16 << 10; // small chunks: many stripes in a small array
    private readonly MdHarness _h = new();

    public void Dispose() => _h.Dispose();

    // ---- the layout ---------------------------------------------------------------------------------

    /// <summary>
    /// md's mapping for ALGORITHM_LEFT_SYMMETRIC as raid5_compute_sector writes it: chunk_number =
    /// sector / sectors_per_chunk; stripe = chunk_number / data_disks; dd_idx = chunk_number %
    /// data_disks; pd_idx = data_disks − stripe % raid_disks; dd_idx = (pd_idx + 1 + dd_idx) % raid_disks;
    /// new_sector = stripe × sectors_per_chunk + chunk_offset.
    /// </summary>
    private static (int Member, long MemberSector, int Parity) MdComputeSector(long sector, int raidDisks, long sectorsPerChunk)
    {
        int dataDisks = raidDisks - 1;
        long chunkOffset = sector % sectorsPerChunk;
        long chunkNumber = sector / sectorsPerChunk;
        long stripe = chunkNumber / dataDisks;
        int ddIdx = (int)(chunkNumber % dataDisks);
        int pdIdx = dataDisks - (int)(stripe % raidDisks);
        ddIdx = (pdIdx + 1 + ddIdx) % raidDisks;
        return (ddIdx, stripe * sectorsPerChunk + chunkOffset, pdIdx);
    }

    [Fact]
    public void TheLayoutIsMdsLeftSymmetric()
    {
        Gen.Select(Gen.Int[3, 16], Gen.Int[0, 7], Gen.Long[0, 1L << 40]).Sample((n, chunkLog, sector) =>
        {
            long chunk = 8L << chunkLog;
            var layout = new Raid5Layout(n, chunk);
            (long stripe, int dataIndex, int member, long memberSector, long left) = layout.Map(sector);
            (int mdMember, long mdSector, int mdParity) = MdComputeSector(sector, n, chunk);
            Assert.Equal(mdMember, member);
            Assert.Equal(mdSector, memberSector);
            Assert.Equal(mdParity, layout.ParityMember(stripe));
            Assert.Equal(chunk - sector % chunk, left);
            Assert.Equal(dataIndex, layout.DataIndexOf(stripe, member));
            Assert.Equal(-1, layout.DataIndexOf(stripe, mdParity));
            Assert.Equal(sector, layout.ArraySector(stripe, dataIndex, sector % chunk));
        });
        // The example md's documentation draws for 4 members.
        var four = new Raid5Layout(4, 8);
        Assert.Equal([3, 2, 1, 0, 3], Enumerable.Range(0, 5).Select(s => four.ParityMember(s)));
        Assert.Equal([0, 1, 2, 3, 0, 1, 2, 3, 0], Enumerable.Range(0, 9).Select(k => four.Map(k * 8L).Member));
    }

    [Fact]
    public void EveryMemberSectorHoldsExactlyOneArraySectorOrParity()
    {
        var layout = new Raid5Layout(5, 8);
        long stripes = 40, memberSectors = stripes * 8;
        var seen = new int[5, memberSectors];
        for (long s = 0; s < stripes * layout.StripeSectors; s++)
        {
            (_, _, int member, long memberSector, _) = layout.Map(s);
            seen[member, memberSector]++;
        }
        for (long ms = 0; ms < memberSectors; ms++)
            for (int m = 0; m < 5; m++)
                Assert.Equal(m == layout.ParityMember(ms / 8) ? 0 : 1, seen[m, ms]);
    }

    // ---- XOR ----------------------------------------------------------------------------------------

    [Fact]
    public void TheVectorXorMatchesAByteLoop()
    {
        Gen.Select(Gen.Int[0, 2000], Gen.Int[0, 63], Gen.Int[0, 63], Gen.Int).Sample((length, dstOff, srcOff, seed) =>
        {
            var rng = new Random(seed);
            var dst = new byte[length + dstOff];
            var src = new byte[length + srcOff];
            rng.NextBytes(dst);
            rng.NextBytes(src);
            byte[] expected = [.. dst];
            for (int i = 0; i < length; i++) expected[dstOff + i] ^= src[srcOff + i];
            fixed (byte* d = dst, s = src) Parity.Xor(d + dstOff, s + srcOff, (nuint)length);
            Assert.Equal(expected, dst);
        });
    }

    // ---- arrays -------------------------------------------------------------------------------------

    private (string[] Members, MdSuperblock Sb) NewArray(int members = 4)
    {
        string[] m = _h.Members(members);
        return (m, _h.Create(5, m, chunk: Chunk, bitmapChunk: 64 << 10));
    }

    private static string Faulty(string spec, string name) => $"[faulty:{DeviceSpec.Quote(spec)},name={name}]";

    /// <summary>Reads the members raw and checks every stripe: parity is the XOR of the data, and the data is <paramref name="model"/> where the layout puts it.</summary>
    internal static void AssertMembersHold(MdHarness h, string[] members, MdSuperblock sb, byte[] model)
    {
        var layout = new Raid5Layout(members.Length, (long)sb.ChunkSectors);
        long stripes = model.Length / (layout.StripeSectors << Bio.SectorShift);
        byte[][] raw = [.. members.Select(m => h.MemberData(m, (long)sb.DataOffset, stripes * layout.ChunkSectors))];
        int chunkBytes = (int)(layout.ChunkSectors << Bio.SectorShift);
        for (long s = 0; s < stripes; s++)
        {
            var parity = new byte[chunkBytes];
            for (int j = 0; j < members.Length; j++)
                for (int k = 0; k < chunkBytes; k++) parity[k] ^= raw[j][s * chunkBytes + k];
            Assert.True(parity.All(x => x == 0), $"stripe {s}: the members do not XOR to zero");
            for (int i = 0; i < layout.DataDisks; i++)
            {
                int member = layout.DataMember(s, i);
                long arrayByte = layout.ArraySector(s, i, 0) << Bio.SectorShift;
                Assert.True(model.AsSpan((int)arrayByte, chunkBytes).SequenceEqual(raw[member].AsSpan((int)(s * chunkBytes), chunkBytes)),
                    $"stripe {s} data chunk {i} on member {member} differs from the model");
            }
        }
    }

    private static Bio Ranged(BioOp op, long sector, int bytes)
    {
        Bio bio = new Bio().Init(op, sector);
        bio.Iter.Size = (uint)bytes;
        return bio;
    }

    /// <summary>0 write, 1 read, 2 write-zeroes, 3 discard, 4 fail a member, 5 replace it.</summary>
    private sealed record Op(int Kind, int Sector, int Sectors, int Member, byte Seed);

    private const int AreaSectors = 2048; // 1 MiB: 16 stripes of 64 KiB over 5 members, 21 of 48 KiB over 4

    private static readonly Gen<Op> s_op =
        Gen.Select(Gen.Frequency((10, Gen.Const(0)), (6, Gen.Const(1)), (1, Gen.Const(2)), (1, Gen.Const(3)), (1, Gen.Const(4)), (1, Gen.Const(5))),
            Gen.Int[0, AreaSectors - 1], Gen.Frequency((4, Gen.Int[1, 16]), (2, Gen.Int[1, 200]), (1, Gen.Const(96)), (1, Gen.Int[96, 400])), Gen.Int[0, 4], Gen.Byte,
            (kind, sector, sectors, member, seed) => new Op(kind, sector, Math.Min(sectors, AreaSectors - sector), member, seed));

    [Fact]
    public void WritesReadsAndZeroingMatchAModelThroughAFailureAndARebuildWithParityRightOnTheMembers()
    {
        var totals = new long[4];
        s_op.Array[30, 90].Sample(ops =>
        {
            using var h = new MdHarness();
            string[] m = h.Members(5); // 4 data chunks a stripe: single-chunk writes go read-modify-write
            MdSuperblock sb = h.Create(5, m, chunk: Chunk, bitmapChunk: 64 << 10);
            IBlockDevice md = h.Open(MdHarness.Spec(m));
            MdArray array = MdArray.Of(md)!;
            var model = new byte[AreaSectors * Bio.SectorSize];
            var current = (string[])m.Clone();
            foreach (Op op in ops)
            {
                int offset = op.Sector * Bio.SectorSize, length = op.Sectors * Bio.SectorSize;
                switch (op.Kind)
                {
                    case 0:
                        h.WriteToModel(md, model, offset, length, op.Seed);
                        break;
                    case 1:
                        h.AssertModel(md, model, offset, length, array);
                        break;
                    case 2 or 3:
                        Assert.Equal(BlockStatus.Ok, md.SubmitAndWait(Ranged(op.Kind == 2 ? BioOp.WriteZeroes : BioOp.Discard, op.Sector, length)));
                        model.AsSpan(offset, length).Clear();
                        break;
                    case 4 when array.Degraded == 0 && array.Sync.Action == MdSyncAction.Idle:
                        array.FailMember(op.Member);
                        break;
                    case 5 when array.Members.Any(s => s.State == MdMemberState.Faulty):
                        int slot = array.Members.First(s => s.State == MdMemberState.Faulty).Slot;
                        current[slot] = h.Members(1)[0];
                        array.AddReplacement(current[slot]);
                        break;
                }
            }
            Assert.True(array.WaitForSync(TimeSpan.FromSeconds(60)));
            Assert.True(model.AsSpan().SequenceEqual(h.Read(md, 0, model.Length)), "the array differs from the model");
            if (array.Degraded == 0)
            {
                array.StartCheck();
                Assert.True(array.WaitForSync(TimeSpan.FromSeconds(60)));
                Assert.Equal(0, array.MismatchCount);
            }
            var counts = ((Raid5Target)array.Personality).WriteCounts;
            Interlocked.Add(ref totals[0], counts.Full);
            Interlocked.Add(ref totals[1], counts.Rmw);
            Interlocked.Add(ref totals[2], counts.Rcw);
            Interlocked.Add(ref totals[3], counts.Degraded);
            bool whole = array.Degraded == 0;
            h.Reopen();
            if (whole) AssertMembersHold(h, current, sb, model);
        }, iter: 10, threads: 1);
        // Every way of writing a stripe ran.
        Assert.All(totals, t => Assert.True(t > 0, $"write kinds run: full {totals[0]}, rmw {totals[1]}, rcw {totals[2]}, degraded {totals[3]}"));
    }

    [Fact]
    public void AFullStripeWriteReadsNothingAndPartialWritesPickTheCheaperWay()
    {
        (string[] m, _) = NewArray(5); // 4 data chunks per stripe
        IBlockDevice md = _h.Open(MdHarness.Spec(m));
        var r5 = (Raid5Target)MdArray.Of(md)!.Personality;
        int stripeBytes = (int)(4 * Chunk);
        Assert.Equal(BlockStatus.Ok, _h.Write(md, stripeBytes, Stamp.Make(stripeBytes, stripeBytes, 1)));
        Assert.Equal((1L, 0L, 0L, 0L), r5.WriteCounts);
        // One chunk of four: read-modify-write reads 2 (old data, old parity), reconstruct-write 3.
        Assert.Equal(BlockStatus.Ok, _h.Write(md, 0, Stamp.Make(0, 4096, 2)));
        Assert.Equal((1L, 1L, 0L, 0L), r5.WriteCounts);
        // Three chunks of four: reconstruct-write reads 1, read-modify-write 4.
        Assert.Equal(BlockStatus.Ok, _h.Write(md, 0, Stamp.Make(0, (int)(3 * Chunk), 3)));
        Assert.Equal((1L, 1L, 1L, 0L), r5.WriteCounts);
    }

    [Fact]
    public void TheCheckCountsMismatchesAsMdsMismatchCnt()
    {
        (string[] m, MdSuperblock sb) = NewArray();
        IBlockDevice md = _h.Open(MdHarness.Spec(m));
        MdArray array = MdArray.Of(md)!;
        Assert.Equal(BlockStatus.Ok, _h.Write(md, 0, Stamp.Make(0, 1 << 20, 1)));
        array.StartCheck();
        Assert.True(array.WaitForSync(TimeSpan.FromSeconds(60)));
        Assert.Equal(0, array.MismatchCount);
        // Behind the array's back: one 4 KiB page of member 2 and two sectors in another page change.
        IBlockDevice raw = _h.Open(m[2]);
        Assert.Equal(BlockStatus.Ok, _h.Write(raw, ((long)sb.DataOffset << Bio.SectorShift) + 8192, new byte[4096]));
        Assert.Equal(BlockStatus.Ok, _h.Write(raw, ((long)sb.DataOffset << Bio.SectorShift) + 65536 + 512, new byte[1024]));
        array.StartCheck();
        Assert.True(array.WaitForSync(TimeSpan.FromSeconds(60)));
        Assert.Equal(16, array.MismatchCount); // two 4 KiB pages, counted in sectors
        Assert.Contains(array.Log, l => l.Contains("check done: mismatch_cnt 16", StringComparison.Ordinal));
    }

    [Fact]
    public void AMissingMemberIsReconstructedOnReadAndRebuiltOntoAReplacement()
    {
        (string[] m, MdSuperblock sb) = NewArray();
        byte[] model = Stamp.Make(0, AreaSectors * Bio.SectorSize, 4);
        IBlockDevice md = _h.Open(MdHarness.Spec(m));
        Assert.Equal(BlockStatus.Ok, _h.Write(md, 0, model));
        _h.Reopen();
        md = _h.Open(MdHarness.Spec([m[0], "missing", m[2], m[3]]));
        MdArray array = MdArray.Of(md)!;
        Assert.Equal("active raid5 [4/3] [U_UU] degraded", array.StatusLine);
        Assert.True(model.AsSpan().SequenceEqual(_h.Read(md, 0, model.Length)));
        Assert.True(((Raid5Target)array.Personality).ReconstructedReads > 0);
        // Written degraded: data on the missing member lives in parity only.
        byte[] update = Stamp.Make(20_000, 70_000, 5);
        Assert.Equal(BlockStatus.Ok, _h.Write(md, 20_000 & ~511, update.AsSpan(0, 70_000 & ~511)));
        update.AsSpan(0, 70_000 & ~511).CopyTo(model.AsSpan(20_000 & ~511));
        Assert.True(model.AsSpan().SequenceEqual(_h.Read(md, 0, model.Length)));
        string replacement = _h.Members(1)[0];
        array.AddReplacement(replacement);
        Assert.True(array.WaitForSync(TimeSpan.FromSeconds(60)));
        Assert.Equal("active raid5 [4/4] [UUUU]", array.StatusLine);
        Assert.True(model.AsSpan().SequenceEqual(_h.Read(md, 0, model.Length)));
        _h.Reopen();
        AssertMembersHold(_h, [m[0], replacement, m[2], m[3]], sb, model);
    }

    [Fact]
    public void AMediaErrorIsReconstructedAndRewrittenAndAFailedMemberDegradesWithoutLoss()
    {
        (string[] m, MdSuperblock sb) = NewArray();
        IBlockDevice md = _h.Open(MdHarness.Spec(m.Select((s, i) => Faulty(s, $"r5-{i}"))));
        MdArray array = MdArray.Of(md)!;
        byte[] model = Stamp.Make(0, AreaSectors * Bio.SectorSize, 6);
        Assert.Equal(BlockStatus.Ok, _h.Write(md, 0, model));
        FaultyDevice.Get("r5-1").MarkBad((long)sb.DataOffset + 3, 2);
        Assert.True(model.AsSpan().SequenceEqual(_h.Read(md, 0, model.Length)));
        Assert.True(SpinWait.SpinUntil(() => array.CorrectedSectors > 0, 10_000), string.Join(" | ", array.Log));
        Assert.Equal(0, FaultyDevice.Get("r5-1").BadSectors);
        Assert.Equal(MdMemberState.InSync, array.Members[1].State);

        // A member dies mid-workload: writes and reads go on, degraded.
        FaultyDevice.Get("r5-3").Die();
        for (int i = 0; i < 40; i++)
        {
            int off = (i * 37 % 200) * 4096;
            byte[] data = Stamp.Make(off, 8192, 100 + i);
            Assert.Equal(BlockStatus.Ok, _h.Write(md, off, data));
            data.CopyTo(model, off);
            Assert.True(model.AsSpan(off, 8192).SequenceEqual(_h.Read(md, off, 8192)));
        }
        Assert.Equal(MdMemberState.Faulty, array.Members[3].State);
        Assert.True(model.AsSpan().SequenceEqual(_h.Read(md, 0, model.Length)));
        // A second failure fails the array: errors, never wrong data.
        FaultyDevice.Get("r5-0").Die();
        _h.TryRead(md, 0, 1 << 20, out BlockStatus status);
        Assert.Equal(BlockStatus.IoError, status);
    }

    [Fact]
    public void ADirtyDegradedArrayStartsOnlyWhenToldAndTheWriteHoleShows()
    {
        (string[] m, MdSuperblock sb) = NewArray();
        byte[] model = Stamp.Make(0, 1 << 20, 1);
        IBlockDevice md = _h.Open(MdHarness.Spec(m));
        Assert.Equal(BlockStatus.Ok, _h.Write(md, 0, model));
        _h.Reopen();
        // A crash: a child writes through the array and is killed; the superblocks stay active.
        List<(long Version, int Block)> acks = MirrorCrashTests.RunAndKill(MdHarness.Spec(m), seed: 3, runMs: 100, blocks: 64);
        Assert.NotEmpty(acks);
        Assert.False(MdExamine.Examine(_h.Open(m[0])).Superblock.IsClean);
        _h.Reopen();
        var e = Assert.Throws<IOException>(() => _h.Open(MdHarness.Spec([m[0], m[1], m[2], "missing"])));
        Assert.Contains("cannot start dirty degraded RAID5", e.Message);
        Assert.Contains("start_dirty_degraded", e.Message);
        _h.Reopen();
        MdArray array = MdArray.Of(_h.Open(MdHarness.Spec([m[0], m[1], m[2], "missing"], ",start_dirty_degraded")))!;
        Assert.Contains(array.Log, l => l.Contains("data corruption possible", StringComparison.Ordinal));

        // The write hole made visible: a stripe whose data reached a member but whose parity did not.
        _h.Reopen();
        md = _h.Open(MdHarness.Spec(m));
        MdArray.Of(md)!.AddReplacement(m[3]); // left out as stale after the degraded run: rebuilt
        Assert.True(MdArray.Of(md)!.WaitForSync(TimeSpan.FromSeconds(60)));
        byte[] before = _h.Read(md, 0, (int)(3 * Chunk));
        _h.Reopen();
        var layout = new Raid5Layout(4, Chunk >> Bio.SectorShift);
        // Stripe 0: data chunk 0 on member 0, parity on member 3. Chunk 0 changes "mid-stripe" (the crash
        // came between the data write and the parity write); then member 1 is lost.
        Assert.Equal(0, layout.DataMember(0, 0));
        byte[] torn = Stamp.Make(0, 4096, 99);
        Assert.Equal(BlockStatus.Ok, _h.Write(_h.Open(m[0]), (long)sb.DataOffset << Bio.SectorShift, torn));
        _h.Reopen();
        md = _h.Open(MdHarness.Spec([m[0], "missing", m[2], m[3]]));
        byte[] after = _h.Read(md, 0, (int)(3 * Chunk));
        // Chunk 1 (member 1's, rebuilt from data and stale parity) comes back wrong where chunk 0 changed,
        // though nobody wrote it: without a journal the hole corrupts data the crash did not touch.
        int chunk1 = (int)Chunk;
        Assert.False(before.AsSpan(chunk1, 4096).SequenceEqual(after.AsSpan(chunk1, 4096)), "the reconstructed chunk should show the write hole");
        Assert.True(before.AsSpan(chunk1 + 4096, (int)Chunk - 4096).SequenceEqual(after.AsSpan(chunk1 + 4096, (int)Chunk - 4096)));
    }
}
