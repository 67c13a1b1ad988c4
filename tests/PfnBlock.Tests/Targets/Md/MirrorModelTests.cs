using CsCheck;
using PfnBlock.Block;
using PfnBlock.Devices;
using PfnBlock.Targets.Md;

namespace PfnBlock.Tests.Targets.Md;

/// <summary>
/// The mirror against a byte-array model: random writes and reads interleaved with random leg
/// failures, media errors on a leg, and replacements rebuilt in the background while I/O goes
/// on. Every read returns what the model holds; at the end the in-sync legs are identical.
/// </summary>
public sealed class MirrorModelTests
{
    private const int Legs = 3;
    private const int AreaSectors = 4096; // the ops touch the first 2 MiB

    /// <summary>0 write, 1 read, 2 fail a leg, 3 a media error on leg 0, 4 add a replacement.</summary>
    private sealed record Op(int Kind, int Sector, int Sectors, int Leg, byte Seed);

    private static readonly Gen<Op> s_op =
        Gen.Select(Gen.Frequency((8, Gen.Const(0)), (8, Gen.Const(1)), (1, Gen.Const(2)), (1, Gen.Const(3)), (1, Gen.Const(4))),
            Gen.Int[0, AreaSectors - 1], Gen.Int[1, 256], Gen.Int[0, Legs - 1], Gen.Byte,
            (kind, sector, sectors, leg, seed) => new Op(kind, sector, Math.Min(sectors, AreaSectors - sector), leg, seed));

    [Fact]
    public void ReadsMatchTheModelThroughFailuresMediaErrorsAndRebuilds()
    {
        s_op.Array[30, 80].Sample(ops =>
        {
            using var h = new MdHarness();
            string[] m = h.Members(Legs);
            MdSuperblock sb = h.Create(1, m, bitmapChunk: 64 << 10);
            string tag = Guid.NewGuid().ToString("N")[..8];
            IBlockDevice md = h.Open(MdHarness.Spec(m.Select((s, i) => $"[faulty:{DeviceSpec.Quote(s)},name={tag}-{i}]")));
            MdArray array = MdArray.Of(md)!;
            FaultyDevice leg0 = FaultyDevice.Get($"{tag}-0");
            var model = new byte[AreaSectors * Bio.SectorSize];
            foreach (Op op in ops)
            {
                int offset = op.Sector * Bio.SectorSize, length = op.Sectors * Bio.SectorSize;
                int inSync = array.Members.Count(s => s.State == MdMemberState.InSync);
                switch (op.Kind)
                {
                    case 0:
                        h.WriteToModel(md, model, offset, length, op.Seed);
                        break;
                    case 1:
                        h.AssertModel(md, model, offset, length, array);
                        break;
                    // A failure that would leave leg 0 with uncured media errors as the only copy would
                    // make those sectors unreadable (rightly): the model run does not go there.
                    case 2 when inSync >= 2 && array.Members[op.Leg].State == MdMemberState.InSync
                        && (op.Leg == 0 || inSync >= 3 || leg0.BadSectors == 0 || array.Members[0].State != MdMemberState.InSync):
                        array.FailMember(op.Leg);
                        break;
                    case 3 when array.Members[0].State == MdMemberState.InSync && array.Members[0].Spec.Contains("faulty", StringComparison.Ordinal) && inSync >= 2:
                        leg0.MarkBad((long)sb.DataOffset + op.Sector, Math.Min(op.Sectors, 8));
                        break;
                    case 4 when array.Members.Any(s => s.State is MdMemberState.Faulty or MdMemberState.Missing):
                        array.AddReplacement(h.Members(1)[0]);
                        break;
                }
            }
            Assert.True(array.WaitForSync(TimeSpan.FromSeconds(60)), "the rebuilds did not finish");
            Assert.False(array.IsFailed);
            Assert.True(model.AsSpan().SequenceEqual(h.Read(md, 0, model.Length)), "the array differs from the model");
            string[] inSyncLegs = [.. array.Members.Where(s => s.State == MdMemberState.InSync).Select(s => s.Spec)];
            h.Reopen();
            byte[]? first = null;
            foreach (string leg in inSyncLegs)
            {
                // A wrapped leg's data is its lower namespace's.
                string raw = leg.StartsWith("faulty:", StringComparison.Ordinal) ? m[int.Parse(leg[(leg.LastIndexOf('-') + 1)..])] : leg;
                byte[] data = h.MemberData(raw, (long)sb.DataOffset, AreaSectors);
                if (first is null) first = data;
                else Assert.True(first.AsSpan().SequenceEqual(data), $"leg {leg} differs from the first in-sync leg");
                Assert.True(model.AsSpan().SequenceEqual(data), $"leg {leg} differs from the model");
            }
        }, iter: 12);
    }
}
