using CsCheck;
using PfnBlock.Block;

namespace PfnBlock.Tests.Block;

/// <summary>The bio cursor (BvecIter.Advance/Current, Bio.Segments) against the flattened-bytes model.</summary>
public sealed class BvecIterProperties
{
    internal static readonly Gen<(ulong, uint, uint)> GenVec =
        Gen.Select(Gen.ULong[1, 1UL << 40], Gen.UInt[0, 3 * 4096], Gen.Frequency(
            (3, Gen.UInt[1, 600]), (3, Gen.UInt[1, 3 * 4096]), (1, Gen.Const(4096u)), (1, Gen.Const(512u))));

    internal static readonly Gen<(ulong, uint, uint)[]> GenVecs = GenVec.Array[1, 12];

    [Fact]
    public void SegmentsOfAFreshBioAreItsVectors()
    {
        Gen.Select(GenVecs, Gen.Long[0, 1L << 40]).Sample((raw, sector) =>
        {
            BioVec[] vecs = BioModel.Vecs(raw);
            Bio bio = BioModel.Make(vecs, sector);
            Assert.Equal(vecs, BioModel.Segments(bio));
            Assert.Equal(vecs.Sum(v => (long)v.Length), bio.Size);
            Assert.Equal(sector, bio.Sector);
            Assert.Equal(BioModel.Flatten(vecs), BioModel.FlattenSegments(bio));
        });
    }

    [Fact]
    public void AdvanceMovesTheCursorLikeAPositionInTheFlattenedBytes()
    {
        Gen.Select(GenVecs, Gen.Long[0, 1L << 30], Gen.UInt[0, 9000].Array[1, 10]).Sample((raw, sector, steps) =>
        {
            BioVec[] vecs = BioModel.Vecs(raw);
            Bio bio = BioModel.Make(vecs, sector);
            long total = bio.Size, position = 0, modelSector = sector;
            List<BioModel.ByteRef> all = BioModel.Flatten(vecs);
            foreach (uint step in steps)
            {
                uint bytes = (uint)Math.Min(step, total - position);
                bio.Advance(bytes);
                position += bytes;
                modelSector += bytes >> Bio.SectorShift; // the kernel's rule: whole sectors of each advance
                Assert.Equal(total - position, bio.Size);
                Assert.Equal(modelSector, bio.Sector);
                Assert.Equal(BioModel.ExpectedSegments(vecs, position, total - position), BioModel.Segments(bio));
                Assert.Equal(all.GetRange((int)position, (int)(total - position)), BioModel.FlattenSegments(bio));
                if (bio.Size > 0)
                    Assert.Equal(BioModel.ExpectedSegments(vecs, position, total - position)[0], bio.Iter.Current(bio.Vecs));
            }
        });
    }

    [Fact]
    public void CurrentIsCappedAtTheCursorSize()
    {
        Gen.Select(GenVecs, Gen.Double[0, 1]).Sample((raw, fraction) =>
        {
            BioVec[] vecs = BioModel.Vecs(raw);
            var iter = new BvecIter { Size = (uint)Math.Max(1, (long)(vecs.Sum(v => (long)v.Length) * fraction)) };
            BioVec current = iter.Current(vecs);
            Assert.Equal(BioModel.ExpectedSegments(vecs, 0, iter.Size)[0], current);
        });
    }

    [Fact]
    public void AdvancingPastTheEndThrows()
    {
        GenVecs.Sample(raw =>
        {
            Bio bio = BioModel.Make(BioModel.Vecs(raw));
            uint size = bio.Size;
            Assert.Throws<InvalidOperationException>(() => bio.Advance(size + 1));
            Assert.Equal(size, bio.Size); // a refused advance leaves the cursor alone
            bio.Advance(size);
            Assert.Equal(0u, bio.Size);
            Assert.Empty(BioModel.Segments(bio));
        });
    }

    [Fact]
    public void SegmentsDoNotMoveTheCursor()
    {
        GenVecs.Sample(raw =>
        {
            Bio bio = BioModel.Make(BioModel.Vecs(raw), 77);
            BvecIter before = bio.Iter;
            _ = BioModel.Segments(bio);
            _ = BioModel.Segments(bio);
            Assert.Equal(before, bio.Iter);
        });
    }

    [Fact]
    public void AddVecRejectsEmptyVectorsAndOverfullBios()
    {
        var bio = new Bio(2).Init(BioOp.Write, 0);
        Assert.Throws<ArgumentOutOfRangeException>(() => bio.AddVec(new PfnBlock.Memory.Pfn(5), 0, 0));
        bio.AddVec(new PfnBlock.Memory.Pfn(5), 0, 512).AddVec(new PfnBlock.Memory.Pfn(6), 0, 512);
        Assert.Throws<InvalidOperationException>(() => bio.AddVec(new PfnBlock.Memory.Pfn(7), 0, 512));
        Assert.Equal(1024u, bio.Size);
    }
}
