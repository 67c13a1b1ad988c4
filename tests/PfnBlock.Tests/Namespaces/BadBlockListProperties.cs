using CsCheck;
using PfnBlock.Namespaces;

namespace PfnBlock.Tests.Namespaces;

/// <summary>The bad-block list against a model: one flag per block, changed by injections, clears and writes.</summary>
public sealed class BadBlockListProperties
{
    // Blocks of the model's data area: enough for more than MaxRanges separate runs.
    private const int Blocks = 600;

    private readonly record struct Op(int Kind, int Start, int Count);

    private static readonly Gen<Op> GenOp = Gen.Select(Gen.Int[0, 2], Gen.Int[0, Blocks - 1], Gen.Frequency((4, Gen.Int[1, 8]), (1, Gen.Int[1, 200])),
        (kind, start, count) => new Op(kind, start, Math.Min(count, Blocks - start)));

    [Fact]
    public void MatchesAFlagPerBlockModel()
    {
        Gen.Frequency((3, GenOp.Array[1, 60]), (1, Gen.Select(Gen.Int[0, Blocks / 2 - 1], s => new Op(0, 2 * s, 1)).Array[200, 320])).Sample(ops =>
        {
            var model = new bool[Blocks];
            BadBlockList list = BadBlockList.Empty;
            byte[] table = new byte[BadBlockList.TableSize];
            foreach (Op op in ops)
            {
                if (op.Kind == 0)
                {
                    // An injection: refused, changing nothing, when the result needs more runs than the table holds.
                    bool[] next = (bool[])model.Clone();
                    Array.Fill(next, true, op.Start, op.Count);
                    if (Runs(next).Count > BadBlockList.MaxRanges)
                    {
                        Assert.Throws<ArgumentException>(() => list.Add(op.Start, op.Count));
                        continue;
                    }
                    list = list.Add(op.Start, op.Count);
                    model = next;
                }
                else
                {
                    // A clear, or a write of whole blocks: both forget what they cover.
                    list = list.Remove(op.Start, op.Count);
                    Array.Fill(model, false, op.Start, op.Count);
                }
                List<BadBlockRange> expected = Runs(model);
                Assert.Equal(expected, list.Ranges);
                Assert.Equal(model.Count(b => b), list.TotalBlocks);
                Assert.Equal(model.AsSpan(op.Start, op.Count).Contains(true), list.Overlaps(op.Start, op.Count));
                bool first = list.FirstOverlap(op.Start, op.Count, out BadBlockRange r);
                if (first) Assert.Equal(expected.First(x => x.End > op.Start && x.Start < op.Start + op.Count), r);
            }
            // What is stored reads back the same.
            list.Write(table);
            Assert.True(BadBlockList.TryParse(table, Blocks, out BadBlockList? back, out string? error), error);
            Assert.Equal(list, back);
        }, iter: 200);
    }

    [Fact]
    public void EveryStoredByteIsChecked()
    {
        BadBlockList list = BadBlockList.Empty.Add(5, 3).Add(100, 1).Add(500, 20);
        byte[] table = new byte[BadBlockList.TableSize];
        list.Write(table);
        // Flipping any bit of the table (header, runs, unused slots) is caught: magic, version or checksum.
        Gen.Int[0, BadBlockList.TableSize * 8 - 1].Sample(bit =>
        {
            byte[] t = (byte[])table.Clone();
            t[bit / 8] ^= (byte)(1 << (bit % 8));
            Assert.False(BadBlockList.TryParse(t, Blocks, out _, out string? error));
            Assert.StartsWith("bad-block table: ", error);
        }, iter: 2000);
    }

    [Fact]
    public void RunsOutsideTheDataAreaAreRefused()
    {
        byte[] table = new byte[BadBlockList.TableSize];
        BadBlockList.Empty.Add(590, 10).Write(table);
        Assert.True(BadBlockList.TryParse(table, 600, out _, out _));
        Assert.False(BadBlockList.TryParse(table, 599, out _, out string? error));
        Assert.Contains("outside the data area", error);
    }

    private static List<BadBlockRange> Runs(bool[] model)
    {
        var runs = new List<BadBlockRange>();
        for (int i = 0; i < model.Length; i++)
        {
            if (!model[i]) continue;
            int s = i;
            while (i < model.Length && model[i]) i++;
            runs.Add(new BadBlockRange(s, i - s));
        }
        return runs;
    }
}
