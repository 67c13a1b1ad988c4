using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using CsCheck;
using PfnBlock.Block;

namespace PfnBlock.Tests.Block;

/// <summary>Split and clone against the flattened-bytes model.</summary>
public sealed class BioSplitCloneProperties
{
    private static readonly Gen<(ulong, uint, uint)[]> GenSplittable =
        BvecIterProperties.GenVecs.Where(v => v.Sum(x => (long)x.Item3) > 2 * Bio.SectorSize);

    private static bool SharesVectors(Bio a, Bio b) =>
        Unsafe.AreSame(ref MemoryMarshal.GetReference(a.Vecs), ref MemoryMarshal.GetReference(b.Vecs));

    [Fact]
    public void SplitPartsCoverExactlyTheOriginalInOrderAndShareVectors()
    {
        Gen.Select(GenSplittable, Gen.Long[0, 1L << 30], Gen.UInt[0, 700], Gen.Double[0, 1], Gen.Int[0, 3])
            .Sample((raw, sector, skip, fraction, flagBits) =>
        {
            BioFlags flags = (BioFlags)flagBits; // none, FUA, PREFLUSH, both
            Bio bio = BioModel.Make(BioModel.Vecs(raw), sector, BioOp.Write, flags);
            bio.Advance(Math.Min(skip, bio.Size - 2 * Bio.SectorSize)); // split from a cursor inside a vector too
            List<BioModel.ByteRef> before = BioModel.FlattenSegments(bio);
            long startSector = bio.Sector;
            uint size = bio.Size;
            int maxSectors = (int)((size - 1) >> Bio.SectorShift); // the split must leave at least one byte
            int sectors = 1 + (int)(fraction * (maxSectors - 1));

            Bio first = bio.Split(sectors, new BioPool());

            uint bytes = (uint)sectors << Bio.SectorShift;
            Assert.Equal(startSector, first.Sector);
            Assert.Equal(bytes, first.Size);
            Assert.Equal(startSector + sectors, bio.Sector);
            Assert.Equal(size - bytes, bio.Size);
            Assert.Equal(before, [.. BioModel.FlattenSegments(first), .. BioModel.FlattenSegments(bio)]);
            Assert.True(SharesVectors(first, bio), "split must share the vector array");
            Assert.Equal(BioOp.Write, first.Op);
            // PREFLUSH must precede all the data, so only the first part keeps it; both keep FUA.
            Assert.Equal(flags, first.Flags);
            Assert.Equal(flags & ~BioFlags.Preflush, bio.Flags);
        });
    }

    [Fact]
    public void RepeatedSplitsConcatenateToTheOriginal()
    {
        Gen.Select(GenSplittable, Gen.Int[1, 9].Array[1, 8]).Sample((raw, cuts) =>
        {
            Bio bio = BioModel.Make(BioModel.Vecs(raw), 1000);
            List<BioModel.ByteRef> before = BioModel.FlattenSegments(bio);
            var parts = new List<Bio>();
            var pool = new BioPool();
            long splitOff = 0;
            foreach (int c in cuts)
            {
                if (((long)c << Bio.SectorShift) >= bio.Size) break;
                Bio part = bio.Split(c, pool);
                splitOff += c;
                Assert.Equal(bio.Sector - c, part.Sector); // parts are contiguous on the device
                parts.Add(part);
            }
            parts.Add(bio);
            Assert.Equal(before, parts.SelectMany(BioModel.FlattenSegments).ToList());
            Assert.Equal(1000 + splitOff, bio.Sector);
        });
    }

    [Fact]
    public void SplitOutsideTheBioThrowsAndLeavesItAlone()
    {
        GenSplittable.Sample(raw =>
        {
            Bio bio = BioModel.Make(BioModel.Vecs(raw), 8);
            BvecIter before = bio.Iter;
            long wholeSectors = (bio.Size + Bio.SectorSize - 1) >> Bio.SectorShift;
            foreach (long s in new[] { 0L, -1L, wholeSectors, wholeSectors + 1, 1L << 23, (1L << 23) + 1, int.MaxValue })
                Assert.Throws<ArgumentOutOfRangeException>(() => bio.Split((int)s));
            Assert.Equal(before, bio.Iter);
        });
    }

    [Fact]
    public void CloneCopiesCursorOpAndFlagsAndSharesVectors()
    {
        Gen.Select(BvecIterProperties.GenVecs, Gen.UInt[0, 5000], Gen.Int[0, 3]).Sample((raw, skip, flagBits) =>
        {
            Bio bio = BioModel.Make(BioModel.Vecs(raw), 4242, BioOp.Read, (BioFlags)flagBits);
            bio.Advance(Math.Min(skip, bio.Size));
            Bio clone = bio.Clone(new BioPool());
            Assert.Equal(bio.Iter, clone.Iter);
            Assert.Equal(BioOp.Read, clone.Op);
            Assert.Equal(bio.Flags, clone.Flags);
            Assert.True(SharesVectors(bio, clone));
            Assert.Equal(BioModel.Segments(bio), BioModel.Segments(clone));
            Assert.Equal(BlockStatus.Ok, clone.Status);
            // The cursors are independent.
            BvecIter original = bio.Iter;
            clone.Advance(clone.Size);
            Assert.Equal(original, bio.Iter);
            Assert.Throws<InvalidOperationException>(() => clone.AddVec(new PfnBlock.Memory.Pfn(1), 0, 512));
        });
    }

    [Fact]
    public void PooledClonesAreFreshEachTime()
    {
        // A clone whose predecessor from the same pool completed (with an error) and went back to the
        // pool must still complete exactly once and start with an Ok status.
        var pool = new BioPool();
        Bio source = BioModel.Make(BioModel.Vecs([(5, 0, 4096)]), 0);
        var log = new CompletionLog();
        var seen = new HashSet<Bio>(ReferenceEqualityComparer.Instance);
        for (int round = 0; round < 4; round++)
        {
            Bio clone = source.Clone(pool);
            seen.Add(clone);
            Assert.Equal(BlockStatus.Ok, clone.Status);
            clone.EndIo = log.EndIo;
            BlockStatus status = round % 2 == 0 ? BlockStatus.IoError : BlockStatus.Ok;
            clone.Complete(status);
            Assert.Equal(status, log.Of(clone)[^1]);
            clone.Release();
        }
        Assert.True(seen.Count < 4, "the pool should have handed back a used bio at least once");
    }

    [Fact]
    public void PooledSplitsChainedToAParentCanBeReused()
    {
        // The block layer's own pattern (BlockDevice.SubmitSplit): split, chain, complete, repeat.
        var pool = new BioPool();
        var log = new CompletionLog();
        for (int round = 0; round < 3; round++)
        {
            Bio parent = BioModel.Make(BioModel.Vecs([(9, 0, 4 * 4096)]), 0);
            parent.EndIo = log.EndIo;
            while (parent.Size > 4096)
            {
                Bio part = parent.Split(8, pool);
                part.Chain(parent);
                part.Complete(BlockStatus.Ok);
            }
            parent.Complete(BlockStatus.Ok);
            Assert.Equal([BlockStatus.Ok], log.Of(parent));
        }
    }
}
