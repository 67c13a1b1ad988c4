using PfnBlock.Block;
using PfnBlock.Devices;
using PfnBlock.Memory;
using PfnBlock.Targets.Md;

namespace PfnBlock.Tests.Targets.Md;

/// <summary>
/// The md mirror: assembly (degraded, stale, foreign and claimed members), leg failures in the
/// middle of a workload (writes go on, failed reads are retried on another leg, the superblocks
/// record the failure), rebuild onto a replacement, and legs identical afterwards.
/// </summary>
public sealed class MirrorTests : IDisposable
{
    private readonly MdHarness _h = new();

    public void Dispose() => _h.Dispose();

    private static string Faulty(string spec, string name) => $"[faulty:{DeviceSpec.Quote(spec)},name={name}]";

    private (string[] Members, MdSuperblock Sb) NewMirror(int legs = 2)
    {
        string[] members = _h.Members(legs);
        return (members, _h.Create(1, members));
    }

    private static byte[] Pattern(long offset, int length, int generation) => Stamp.Make(offset, length, generation);

    /// <summary>Reads the whole array back in 1 MiB pieces and compares it with <paramref name="expected"/>.</summary>
    private void AssertHolds(IBlockDevice md, byte[] expected)
    {
        for (int off = 0; off < expected.Length; off += 1 << 20)
        {
            int n = Math.Min(1 << 20, expected.Length - off);
            Assert.True(expected.AsSpan(off, n).SequenceEqual(_h.Read(md, off, n)), $"the array differs from what was written in the MiB at {off}");
        }
    }

    [Fact]
    public void AWriteFencesItsLegsCopiesOnceAfterTheLastAndBeforeItCompletes()
    {
        (string[] m, MdSuperblock sb) = NewMirror();
        IBlockDevice md = _h.Open(MdHarness.Spec(m));
        // The first write of a region makes its bitmap bit durable; the traced one is the steady state.
        Assert.Equal(BlockStatus.Ok, _h.Write(md, 8192, Pattern(8192, 4096, 1)));
        byte[] data = Pattern(8192, 4096, 2);
        var recorder = new PmemTraceRecorder();
        int atCompletion = -1;
        BlockStatus status = BlockStatus.IoError;
        using (PmemTrace.Record(recorder))
            _h.WriteObserved(md, 8192, data, b => { atCompletion = recorder.Events.Count; status = b.Status; });
        Assert.Equal(BlockStatus.Ok, status);

        List<PmemTraceEvent> before = [.. recorder.Events.Take(atCompletion)];
        int first = before.FindIndex(e => e.Kind is PmemTraceKind.Store or PmemTraceKind.NonTemporalStore);
        int last = before.FindLastIndex(e => e.Kind is PmemTraceKind.Store or PmemTraceKind.NonTemporalStore);
        Assert.True(first >= 0, "the legs' copies were not traced on the submitting thread");
        Assert.Equal(2 * 4096, before.Where(e => e.Kind == PmemTraceKind.NonTemporalStore).Sum(e => e.Length));
        // Durable when acknowledged: a fence after the last copy, before the completion.
        Assert.Contains(before.Skip(last + 1), e => e.Kind == PmemTraceKind.Fence);
        // And only one: the second leg's copy does not wait for the first's to drain.
        Assert.Equal(1, before.Skip(first).Count(e => e.Kind == PmemTraceKind.Fence));
        _h.Reopen();
        foreach (string leg in m)
            Assert.Equal(data, _h.MemberData(leg, (long)sb.DataOffset, (long)sb.Size).AsSpan(8192, 4096).ToArray());
    }

    [Fact]
    public void ACleanMirrorKeepsDataAcrossAStopAndBothLegsHoldIt()
    {
        (string[] m, MdSuperblock sb) = NewMirror();
        IBlockDevice md = _h.Open(MdHarness.Spec(m));
        MdArray array = MdArray.Of(md)!;
        Assert.Equal((long)sb.Size, md.CapacitySectors);
        Assert.Equal("active raid1 [2/2] [UU]", array.StatusLine);
        byte[] data = Pattern(1 << 20, 256 << 10, 1);
        Assert.Equal(BlockStatus.Ok, _h.Write(md, 1 << 20, data));
        Assert.Equal(data, _h.Read(md, 1 << 20, data.Length));
        ulong events = array.Events;
        _h.Reopen();

        foreach (string leg in m)
        {
            MdMemberInfo info = MdExamine.Examine(_h.Open(leg));
            Assert.True(info.Superblock.IsClean);
            Assert.True(info.Superblock.Events > events - 1);
            Assert.Equal(0, info.DirtyBits); // a clean stop clears the bitmap
            Assert.Equal(data, _h.MemberData(leg, (long)sb.DataOffset, (long)sb.Size).AsSpan(1 << 20, data.Length).ToArray());
        }
    }

    [Fact]
    public void ALegDyingMidWorkloadDegradesTheMirrorWithoutLosingAWrite()
    {
        (string[] m, MdSuperblock sb) = NewMirror();
        string[] wrapped = [Faulty(m[0], "leg0-die"), Faulty(m[1], "leg1-die")];
        IBlockDevice md = _h.Open(MdHarness.Spec(wrapped));
        MdArray array = MdArray.Of(md)!;
        long capacity = md.CapacityBytes;
        var shadow = new byte[capacity];
        int block = 4096, blocks = (int)(capacity / block);
        var gate = new object();
        MdHarness.OnThreads(2, t =>
        {
            var rng = new Random(100 + t);
            for (int i = 0; i < 600; i++)
            {
                if (t == 0 && i == 200) FaultyDevice.Get("leg0-die").Die();
                // Thread t owns the blocks b % 2 == t: no two threads write one block.
                int b = rng.Next(blocks / 2) * 2 + t;
                long off = (long)b * block;
                if (rng.Next(3) > 0)
                {
                    byte[] data = Pattern(off, block, i * 2 + t + 1);
                    Assert.Equal(BlockStatus.Ok, _h.Write(md, off, data));
                    lock (gate) data.CopyTo(shadow, off);
                }
                else
                {
                    byte[] expected;
                    lock (gate) expected = shadow.AsSpan((int)off, block).ToArray();
                    Assert.Equal(expected, _h.Read(md, off, block));
                }
            }
        });
        Assert.Equal(MdMemberState.Faulty, array.Members[0].State);
        Assert.Equal("active raid1 [2/1] [_U] degraded", array.StatusLine);
        Assert.Contains(array.Log, l => l.Contains("failed", StringComparison.Ordinal));
        // Everything acknowledged reads back from the surviving leg.
        AssertHolds(md, shadow);
        // The survivor's superblock records the failure.
        Assert.True(SpinWait.SpinUntil(() => MdExamine.Examine(_h.Open(m[1])).Superblock.DevRoles[0] == MdSuperblock.RoleFaulty, 5000));

        // Rebuild onto a replacement, then the legs are identical and hold the data.
        string replacement = _h.Members(1)[0];
        array.AddReplacement(replacement);
        Assert.True(array.WaitForSync(TimeSpan.FromSeconds(60)), "rebuild did not finish");
        Assert.Equal("active raid1 [2/2] [UU]", array.StatusLine);
        Assert.Equal(sb.Size, (ulong)array.RecoveredSectors);
        AssertHolds(md, shadow);
        _h.Reopen();
        byte[] survivor = _h.MemberData(m[1], (long)sb.DataOffset, (long)sb.Size);
        byte[] rebuilt = _h.MemberData(replacement, (long)sb.DataOffset, (long)sb.Size);
        Assert.True(survivor.AsSpan().SequenceEqual(rebuilt), "the rebuilt leg differs from the survivor");
        Assert.True(survivor.AsSpan().SequenceEqual(shadow), "the legs do not hold what was written");
        // The rebuilt array assembles from the survivor and the replacement, in sync.
        MdArray again = MdArray.Of(_h.Open(MdHarness.Spec([m[1], replacement])))!;
        Assert.True(again.StatusLine == "active raid1 [2/2] [UU]", again.StatusLine + ": " + string.Join(" | ", again.Log));
    }

    [Fact]
    public void ALegCompletingInlineAndOneCompletingOnAnotherThreadBothGetEveryWrite()
    {
        // A pmem leg completes inside Submit (settled by the issuer after every leg is sent); a
        // buffered file leg completes on an engine thread: the two ways a write ends, racing.
        string pmemLeg = _h.Members(1)[0];
        long legBytes = _h.Open(pmemLeg).CapacityBytes;
        _h.Reopen();
        string fileLeg = "file:" + _h.Scratch.NewSizedFile(Scratch.Directory, legBytes, "leg") + ",buffered";
        string[] m = [pmemLeg, fileLeg];
        MdSuperblock sb = _h.Create(1, m);
        IBlockDevice md = _h.Open(MdHarness.Spec(m));
        long capacity = md.CapacityBytes;
        var shadow = new byte[capacity];
        int block = 4096, blocks = (int)(capacity / block);
        var gate = new object();
        MdHarness.OnThreads(3, t =>
        {
            var rng = new Random(300 + t);
            for (int i = 0; i < 400; i++)
            {
                int b = rng.Next(blocks / 3) * 3 + t;
                long off = (long)b * block;
                byte[] data = Pattern(off, block, i * 3 + t + 1);
                Assert.Equal(BlockStatus.Ok, _h.Write(md, off, data));
                lock (gate) data.CopyTo(shadow, off);
            }
        });
        AssertHolds(md, shadow);
        var r1 = (Raid1Target?)MdArray.Of(md)!.Personality;
        Assert.Equal(0, r1!.Outstanding);
        _h.Reopen();
        foreach (string leg in m)
            Assert.True(_h.MemberData(leg, (long)sb.DataOffset, (long)sb.Size).AsSpan().SequenceEqual(shadow), $"leg {leg} does not hold every write");
    }

    [Fact]
    public void ALegThatKeepsFailingReadsIsRetriedOnTheOtherLegAndFailedAfterMdsLimit()
    {
        (string[] m, _) = NewMirror();
        IBlockDevice md = _h.Open(MdHarness.Spec([Faulty(m[0], "leg0-read"), Faulty(m[1], "leg1-read")]));
        MdArray array = MdArray.Of(md)!;
        byte[] data = Pattern(0, 64 << 10, 3);
        Assert.Equal(BlockStatus.Ok, _h.Write(md, 0, data));
        FaultyDevice.Get("leg0-read").FailReads = true;
        // Reads alternate between legs: each one landing on leg 0 fails there and is retried on leg 1,
        // and the rewrite of leg 0 cannot be read back, so leg 0 is failed.
        for (int i = 0; i < 8; i++) Assert.Equal(data, _h.Read(md, 0, data.Length));
        Assert.True(FaultyDevice.Get("leg0-read").FailedBios >= 1);
        Assert.True(SpinWait.SpinUntil(() => array.Members[0].State == MdMemberState.Faulty, 10_000), string.Join(" | ", array.Log));
        Assert.Equal(MdMemberState.InSync, array.Members[1].State);
        Assert.Equal(data, _h.Read(md, 0, data.Length));
    }

    [Fact]
    public void ABadSectorIsReadFromTheOtherLegAndRewrittenSoTheLegStaysInTheArray()
    {
        (string[] m, MdSuperblock sb) = NewMirror();
        IBlockDevice md = _h.Open(MdHarness.Spec([Faulty(m[0], "leg0-bad"), Faulty(m[1], "leg1-bad")]));
        MdArray array = MdArray.Of(md)!;
        byte[] data = Pattern(1 << 20, 64 << 10, 5);
        Assert.Equal(BlockStatus.Ok, _h.Write(md, 1 << 20, data));
        FaultyDevice leg0 = FaultyDevice.Get("leg0-bad");
        leg0.MarkBad((long)sb.DataOffset + (1 << 20 >> 9) + 17, 3); // a media error inside the data
        for (int i = 0; i < 4; i++) Assert.Equal(data, _h.Read(md, 1 << 20, data.Length));
        Assert.True(SpinWait.SpinUntil(() => array.CorrectedSectors > 0, 10_000), string.Join(" | ", array.Log));
        Assert.Contains(array.Log, l => l.Contains("read error corrected", StringComparison.Ordinal));
        Assert.Equal(MdMemberState.InSync, array.Members[0].State);
        long failed = leg0.FailedBios;
        // Rewritten: leg 0 serves its share of reads again without errors.
        for (int i = 0; i < 8; i++) Assert.Equal(data, _h.Read(md, 1 << 20, data.Length));
        Assert.Equal(failed, leg0.FailedBios);
        Assert.Equal("active raid1 [2/2] [UU]", array.StatusLine);
    }

    [Fact]
    public void WhenEveryLegIsGoneTheMirrorFailsIoInsteadOfReturningAnything()
    {
        (string[] m, _) = NewMirror();
        IBlockDevice md = _h.Open(MdHarness.Spec([Faulty(m[0], "leg0-all"), Faulty(m[1], "leg1-all")]));
        FaultyDevice.Get("leg0-all").Die();
        FaultyDevice.Get("leg1-all").Die();
        _h.TryRead(md, 0, 4096, out BlockStatus status);
        Assert.Equal(BlockStatus.IoError, status);
        Assert.Equal(BlockStatus.IoError, _h.Write(md, 0, new byte[4096]));
        Assert.True(MdArray.Of(md)!.IsFailed);
        Assert.StartsWith("FAILED", MdArray.Of(md)!.StatusLine, StringComparison.Ordinal);
    }

    [Fact]
    public void AMissingLegStartsTheMirrorDegradedAndARebuildBringsItBack()
    {
        (string[] m, MdSuperblock sb) = NewMirror();
        IBlockDevice md = _h.Open(MdHarness.Spec([m[0], "missing"]));
        MdArray array = MdArray.Of(md)!;
        Assert.Equal("active raid1 [2/1] [U_] degraded", array.StatusLine);
        Assert.Contains(array.Log, l => l.Contains("slot 1 has no member (missing): the array starts degraded", StringComparison.Ordinal));
        byte[] data = Pattern(4096, 128 << 10, 4);
        Assert.Equal(BlockStatus.Ok, _h.Write(md, 4096, data));
        array.AddReplacement(m[1]); // the old leg itself, rebuilt from scratch
        Assert.True(array.WaitForSync(TimeSpan.FromSeconds(60)));
        Assert.Equal(data, _h.Read(md, 4096, data.Length));
        _h.Reopen();
        Assert.Equal(_h.MemberData(m[0], (long)sb.DataOffset, (long)sb.Size), _h.MemberData(m[1], (long)sb.DataOffset, (long)sb.Size));
    }

    [Fact]
    public void AStaleLegIsLeftOutWithAMessage()
    {
        (string[] m, _) = NewMirror();
        // Run degraded on leg 0 alone: its events move on, leg 1's stay behind.
        IBlockDevice md = _h.Open(MdHarness.Spec([m[0], "missing"]));
        Assert.Equal(BlockStatus.Ok, _h.Write(md, 0, Pattern(0, 4096, 9)));
        _h.Reopen();
        md = _h.Open(MdHarness.Spec(m));
        MdArray array = MdArray.Of(md)!;
        Assert.Equal(MdMemberState.Missing, array.Members[1].State);
        Assert.Contains(array.Log, l => l.Contains($"member {m[1]} is stale", StringComparison.Ordinal));
        Assert.Equal(Pattern(0, 4096, 9), _h.Read(md, 0, 4096));
    }

    [Fact]
    public void MembersOfDifferentArraysAreRefused()
    {
        (string[] a, _) = NewMirror();
        (string[] b, _) = NewMirror();
        var e = Assert.Throws<IOException>(() => _h.Open(MdHarness.Spec([a[0], b[1]])));
        Assert.Contains("belongs to another array", e.Message);
    }

    [Fact]
    public void TwoArraysCannotClaimOneMember()
    {
        (string[] a, _) = NewMirror(3);
        _h.Open(MdHarness.Spec([a[0], a[1], "missing"]));
        var e = Assert.Throws<IOException>(() => _h.Open(MdHarness.Spec([a[0], a[2], "missing"], ",name=second")));
        Assert.Contains("already in use by md array", e.Message);
        // The refused assembly left the member it could claim free for others.
        _h.Reopen();
        _h.Open(MdHarness.Spec([a[2], a[1], "missing"]));
    }

    [Fact]
    public void TooFewMembersAndNonMembersAreRefused()
    {
        (string[] m, _) = NewMirror();
        var e = Assert.Throws<IOException>(() => _h.Open(MdHarness.Spec(["missing", "missing"])));
        Assert.Contains("no members given", e.Message);
        string plain = "pmem:" + _h.Scratch.NewNamespace(16 << 20);
        e = Assert.Throws<IOException>(() => _h.Open(MdHarness.Spec([m[0], plain])));
        Assert.Contains("no md superblock", e.Message);
    }

    [Fact]
    public void MembersAreSplitAtTopLevelPlusSigns()
    {
        Assert.Equal(["pmem:/a", "missing", "file:/b,buffered", "x:[c+d]"], MdArray.SplitMembers("pmem:/a+missing+[file:/b,buffered]+x:[c+d]"));
        Assert.Throws<FormatException>(() => MdArray.SplitMembers("pmem:/a++pmem:/b"));
        Assert.Throws<FormatException>(() => MdArray.SplitMembers("[pmem:/a"));
    }

    [Fact]
    public void TheMirrorAndRaid5KindsFormatBlankMembersOnceAndAssembleThemAfterwards()
    {
        string[] m = _h.Members(2);
        string spec = $"mirror:{DeviceSpec.Quote(string.Join('+', m))},bitmap_chunk=256K";
        IBlockDevice md = _h.Open(spec);
        Assert.Equal(BlockStatus.Ok, _h.Write(md, 8192, Pattern(8192, 4096, 1)));
        _h.Reopen();
        md = _h.Open(spec); // assembled, not formatted again
        Assert.Equal(Pattern(8192, 4096, 1), _h.Read(md, 8192, 4096));
        Assert.Equal("active raid1 [2/2] [UU]", MdArray.Of(md)!.StatusLine);
        _h.Reopen();
        var e = Assert.Throws<IOException>(() => _h.Open($"mirror:{DeviceSpec.Quote(string.Join('+', [.. m, _h.Members(1)[0]]))}"));
        Assert.Contains("refusing to overwrite", e.Message);
        e = Assert.Throws<IOException>(() => _h.Open($"raid5:{DeviceSpec.Quote(string.Join('+', m))}"));
        Assert.Contains("not RAID5", e.Message);
        string[] r = _h.Members(3);
        md = _h.Open($"raid5:{DeviceSpec.Quote(string.Join('+', r))},chunk=32K");
        Assert.Equal(64, MdArray.Of(md)!.ChunkSectors);
        Assert.Equal("active raid5 [3/3] [UUU]", MdArray.Of(md)!.StatusLine);
    }
}
