using CsCheck;
using PfnBlock.TestHelper;
using PfnBlock.Namespaces.Btt;
using BlockTranslationTable = PfnBlock.Namespaces.Btt.Btt;

namespace PfnBlock.Tests.Btt;

/// <summary>
/// Property tests of the map/flog logic against a reference model: random sequences of writes,
/// zeroes, error marks, reopens and writes crashed at each step of the write path (including
/// between the two 8-byte halves of the flog entry — a torn flog write).
/// </summary>
public sealed unsafe class BttModelTests
{
    private const long MediaSize = 16L << 20;
    private const int Lbas = 24;

    private sealed class CrashException : Exception;

    /// <summary>0 write, 1 zero, 2 error, 3 crashed write, 4 reopen; Step: where a crashed write stops.</summary>
    private readonly record struct Op(int Kind, int Lba, int Step);

    private static readonly Gen<Op> GenOp = Gen.Select(Gen.Frequency((12, Gen.Const(0)), (2, Gen.Const(1)), (1, Gen.Const(2)), (3, Gen.Const(3)), (1, Gen.Const(4))),
        Gen.Int[0, Lbas - 1], Gen.Int[0, 2], (k, l, s) => new Op(k, l, s));

    [Theory]
    [InlineData(BttFlavor.Kernel, 4096u)]
    [InlineData(BttFlavor.Kernel, 512u)]
    [InlineData(BttFlavor.Pmemblk, 4096u)]
    public void RandomOperationsWithCrashesMatchTheModel(BttFlavor flavor, uint lbaSize)
    {
        Gen.Select(GenOp.Array[1, 60], Gen.Int[1, 4]).Sample(t => Run(flavor, lbaSize, t.Item1, t.Item2), iter: 60, threads: 1);
    }

    private static void Run(BttFlavor flavor, uint lbaSize, Op[] ops, int lanes)
    {
        using var mem = new MemoryMedia(MediaSize);
        var options = new BttOptions { LbaSize = lbaSize, Flavor = flavor, ParentUuid = Guid.NewGuid(), Lanes = lanes };
        BlockTranslationTable.Format(mem.Media, options);
        BlockTranslationTable btt = BlockTranslationTable.Open(mem.Media, options);
        long last = btt.ExternalNlba - 1;
        // Model: LBA -> version (0 = zeros), or -1 for the error state.
        var model = new Dictionary<long, long>();
        long version = 0;
        byte[] buf = new byte[lbaSize];
        foreach (Op op in ops)
        {
            long lba = op.Lba == Lbas - 1 ? last : op.Lba; // the last LBA too, at the arena's end
            switch (op.Kind)
            {
                case 0:
                    SectorPattern.Fill(buf, lba, ++version);
                    fixed (byte* p = buf) Assert.Equal(BttStatus.Ok, btt.Write(lba, p));
                    model[lba] = version;
                    break;
                case 1:
                    Assert.Equal(BttStatus.Ok, btt.SetZero(lba));
                    model[lba] = 0;
                    break;
                case 2:
                    Assert.Equal(BttStatus.Ok, btt.SetError(lba));
                    model[lba] = -1;
                    break;
                case 3:
                    var stop = (BttWriteStep)op.Step;
                    btt.StepHook = s => { if (s == stop) throw new CrashException(); };
                    SectorPattern.Fill(buf, lba, ++version);
                    BlockTranslationTable crashing = btt;
                    Assert.Throws<CrashException>(() => { fixed (byte* p = buf) crashing.Write(lba, p); });
                    btt = BlockTranslationTable.Open(mem.Media, options);
                    // Until the flog seq lands the old contents stay; once it has, open completes the write.
                    if (stop == BttWriteStep.FlogWritten)
                    {
                        Assert.Equal(1, btt.RecoveredWrites);
                        model[lba] = version;
                    }
                    else Assert.Equal(0, btt.RecoveredWrites);
                    AssertConsistent(mem, options);
                    break;
                case 4:
                    btt = BlockTranslationTable.Open(mem.Media, options);
                    Assert.Equal(0, btt.RecoveredWrites);
                    break;
            }
            AssertMatches(btt, model, lbaSize);
        }
        AssertConsistent(mem, options);
    }

    private static void AssertMatches(BlockTranslationTable btt, Dictionary<long, long> model, uint lbaSize)
    {
        byte[] buf = new byte[lbaSize];
        foreach ((long lba, long expected) in model)
        {
            BttStatus status;
            fixed (byte* p = buf) status = btt.Read(lba, p);
            if (expected < 0) { Assert.Equal(BttStatus.MediaError, status); continue; }
            Assert.Equal(BttStatus.Ok, status);
            Assert.Equal(expected, SectorPattern.Decode(buf, lba));
        }
    }

    private static void AssertConsistent(MemoryMedia mem, BttOptions options)
    {
        BttCheckReport report = BttCheck.CheckMedia(mem.Media, options);
        Assert.True(report.Consistent, string.Join("\n", report.Findings.Select(f => f.Message)));
    }

    /// <summary>
    /// A lane's flog pair written many times, with the last write possibly torn after its first
    /// 8-byte half: the current entry is always the last complete one.
    /// </summary>
    [Fact]
    public void TornFlogWritesNeverBecomeCurrent()
    {
        Gen.Select(Gen.UInt.Array[3, 3].Array[1, 40], Gen.Bool).Sample((writes, torn) =>
        {
            var pair = new FlogEntry[2];
            pair[0] = new FlogEntry(0, 100, 100, 1);
            int next = 1;
            FlogEntry current = pair[0];
            for (int i = 0; i < writes.Length; i++)
            {
                uint[] w = writes[i];
                var entry = new FlogEntry(w[0], w[1], w[2], FlogEntry.NextSeq(current.Seq));
                bool tear = torn && i == writes.Length - 1;
                // First half: lba and old_map; the second half (new_map, seq) only if not torn.
                pair[next] = tear ? pair[next] with { Lba = entry.Lba, OldMap = entry.OldMap } : entry;
                int cur = LogGroup.Current(pair[0], pair[1], out string? error);
                Assert.Null(error);
                if (!tear) { current = entry; next ^= 1; }
                Assert.Equal(current, pair[cur]);
            }
        }, iter: 500);
    }

    [Theory]
    [InlineData(0u, 0u)]
    [InlineData(2u, 2u)]
    [InlineData(4u, 1u)]
    [InlineData(1u, 7u)]
    public void ImpossibleSequencePairsAreRejected(uint s0, uint s1)
    {
        Assert.Equal(-1, LogGroup.Current(new FlogEntry(0, 0, 0, s0), new FlogEntry(0, 0, 0, s1), out string? error));
        Assert.NotNull(error);
    }

    [Fact]
    public void SequenceNumbersCycleOneTwoThree()
    {
        Assert.Equal(2u, FlogEntry.NextSeq(1));
        Assert.Equal(3u, FlogEntry.NextSeq(2));
        Assert.Equal(1u, FlogEntry.NextSeq(3));
    }
}
