using CsCheck;
using PfnBlock.Block;
using PfnBlock.Devices.Pmem;
using PfnBlock.Targets.Md;

namespace PfnBlock.Tests.Targets.Md;

/// <summary>
/// RAID5's direct path over pmem members: full stripes written from the bio's frames with parity
/// computed from its memory, and one-chunk writes whose member reads are direct-access loads
/// (read-modify-write on five members, reconstruct-write on four). Bios of scattered, misaligned
/// vectors spanning several stripes against a byte model, the members' parity checked by an
/// independent XOR; degraded arrays; a bad block under the direct loads (the buffered path takes
/// over); and no allocation per I/O.
/// </summary>
public sealed unsafe class Raid5DirectPathTests : IDisposable
{
    private const long Chunk = 16 << 10;
    private const int AreaBytes = 1 << 20;
    private readonly MdHarness _h = new();
    private IoBuffers? _buffers;

    public void Dispose()
    {
        _buffers?.Dispose();
        _h.Dispose();
    }

    [Fact]
    public void TheThreeWayXorMatchesAByteLoop()
    {
        Gen.Select(Gen.Int[0, 2000], Gen.Int[0, 63], Gen.Int).Sample((length, off, seed) =>
        {
            var rng = new Random(seed);
            byte[] a = new byte[length + off], b = new byte[length + off], c = new byte[length + off], dst = new byte[length + off];
            rng.NextBytes(a);
            rng.NextBytes(b);
            rng.NextBytes(c);
            var expected = new byte[length];
            for (int i = 0; i < length; i++) expected[i] = (byte)(a[off + i] ^ b[off + i] ^ c[off + i]);
            fixed (byte* d = dst, x = a, y = b, z = c) Parity.Xor3(d + off, x + off, y + off, z + off, (nuint)length);
            Assert.Equal(expected, dst.AsSpan(off, length).ToArray());
        });
    }

    /// <summary>Writes a stamp at <paramref name="offset"/> through a bio of up to <paramref name="maxVecs"/> scattered vectors, and into the model.</summary>
    private void WriteScattered(IBlockDevice md, Random rng, byte[] model, int offset, int length, int seed, int maxVecs)
    {
        _buffers ??= new IoBuffers(md.AddressSpace, 16L << 20);
        byte[] data = Stamp.Make(offset, length, seed);
        using IoBuffers.Layout layout = _buffers.NewLayout(rng, length, maxVecs, align: Bio.SectorSize);
        layout.Write(data);
        Assert.Equal(BlockStatus.Ok, md.SubmitAndWait(layout.AddTo(new Bio().Init(BioOp.Write, offset >> Bio.SectorShift))));
        data.CopyTo(model, offset);
    }

    [Fact]
    public void ScatteredBiosOverSeveralStripesMatchAModelWithParityRightOnTheMembers()
    {
        // (sector, sectors, seed, vectors): one-chunk writes, writes spanning stripes with partial ends, whole stripes.
        Gen<(int, int, int, int)> write = Gen.Select(Gen.Int[0, AreaBytes / Bio.SectorSize - 1],
            Gen.Frequency((4, Gen.Int[1, 32]), (2, Gen.Int[32, 400]), (2, Gen.Const(-1))), Gen.Int, Gen.Int[1, 300]);
        Gen.Select(Gen.Int[4, 5], write.Array[10, 40]).Sample((members, writes) =>
        {
            using var h = new MdHarness();
            string[] m = h.Members(members);
            MdSuperblock sb = h.Create(5, m, chunk: Chunk, bitmapChunk: 64 << 10);
            IBlockDevice md = h.Open(MdHarness.Spec(m));
            using var buffers = new IoBuffers(md.AddressSpace, 16L << 20);
            var r5 = (Raid5Target)MdArray.Of(md)!.Personality;
            int stripeSectors = (int)r5.Layout.StripeSectors, area = AreaBytes / Bio.SectorSize / stripeSectors * stripeSectors;
            var model = new byte[area * Bio.SectorSize];
            foreach ((int sector0, int sectors0, int seed, int vecs) in writes)
            {
                // −1: whole stripes from a stripe boundary.
                int sector = sectors0 < 0 ? sector0 % area / stripeSectors * stripeSectors : sector0 % area;
                int sectors = Math.Min(sectors0 < 0 ? stripeSectors * (1 + (seed & 1)) : sectors0, area - sector);
                var rng = new Random(seed);
                byte[] data = Stamp.Make(sector * Bio.SectorSize, sectors * Bio.SectorSize, seed);
                using IoBuffers.Layout layout = buffers.NewLayout(rng, data.Length, Math.Min(vecs, Bio.MaxVecs), align: Bio.SectorSize);
                layout.Write(data);
                Assert.Equal(BlockStatus.Ok, md.SubmitAndWait(layout.AddTo(new Bio().Init(BioOp.Write, sector))));
                data.CopyTo(model, sector * Bio.SectorSize);
            }
            Assert.True(model.AsSpan().SequenceEqual(h.Read(md, 0, model.Length)), "the array differs from the model");
            Assert.True(r5.DirectWrites > 0);
            h.Reopen();
            Raid5Tests.AssertMembersHold(h, m, sb, model);
        }, iter: 12, threads: 1);
    }

    /// <summary>A fresh RAID5 of <paramref name="members"/> pmem namespaces, opened.</summary>
    private (string[] Members, MdSuperblock Sb, IBlockDevice Md, MdArray Array, Raid5Target R5) NewArray(int members)
    {
        string[] m = _h.Members(members);
        MdSuperblock sb = _h.Create(5, m, chunk: Chunk, bitmapChunk: 64 << 10);
        IBlockDevice md = _h.Open(MdHarness.Spec(m));
        MdArray array = MdArray.Of(md)!;
        return (m, sb, md, array, (Raid5Target)array.Personality);
    }

    [Theory]
    [InlineData(4)]
    [InlineData(5)]
    public void OneChunkAndFullStripeWritesTakeTheDirectPath(int members)
    {
        (string[] m, MdSuperblock sb, IBlockDevice md, _, Raid5Target r5) = NewArray(members);
        int stripeBytes = (int)((members - 1) * Chunk);
        var model = new byte[4 * stripeBytes];
        var rng = new Random(members);
        WriteScattered(md, rng, model, 0, model.Length, 1, maxVecs: 64);
        Assert.Equal((4L, 0L, 0L, 0L), r5.WriteCounts);
        WriteScattered(md, rng, model, stripeBytes + 4096, 8192, 2, maxVecs: 3);
        // One chunk of three: reconstruct-write (2 reads, as read-modify-write, and md prefers it); of four: read-modify-write.
        Assert.Equal(members == 4 ? (4L, 0L, 1L, 0L) : (4L, 1L, 0L, 0L), r5.WriteCounts);
        Assert.Equal(5, r5.DirectWrites);
        Assert.Equal(model, _h.Read(md, 0, model.Length));
        _h.Reopen();
        Raid5Tests.AssertMembersHold(_h, m, sb, model);
    }

    [Fact]
    public void ADegradedArrayWritesFullStripesFromTheFramesAndRebuildsRight()
    {
        (string[] m, MdSuperblock sb, IBlockDevice md, MdArray array, Raid5Target r5) = NewArray(4);
        int stripeBytes = (int)(3 * Chunk);
        var model = new byte[8 * stripeBytes];
        var rng = new Random(3);
        WriteScattered(md, rng, model, 0, model.Length, 1, maxVecs: 16);
        array.FailMember(1);
        long direct = r5.DirectWrites;
        for (int i = 0; i < 8; i++)
        {
            WriteScattered(md, rng, model, i * stripeBytes, stripeBytes, 10 + i, maxVecs: 32);          // whole stripe: direct, one member gone
            WriteScattered(md, rng, model, i * stripeBytes + 8192 * (i % 6), 4096, 20 + i, maxVecs: 2); // one chunk: the degraded path
        }
        Assert.Equal(direct + 8, r5.DirectWrites);
        Assert.Equal(model, _h.Read(md, 0, model.Length));
        string spare = _h.Members(1)[0];
        array.AddReplacement(spare);
        Assert.True(array.WaitForSync(TimeSpan.FromSeconds(60)));
        Assert.Equal(model, _h.Read(md, 0, model.Length));
        string[] now = [m[0], spare, m[2], m[3]];
        _h.Reopen();
        Raid5Tests.AssertMembersHold(_h, now, sb, model);
    }

    [Fact]
    public void ABadBlockUnderTheDirectLoadsSendsTheWriteThroughTheBufferedPath()
    {
        (string[] m, MdSuperblock sb, IBlockDevice md, MdArray array, Raid5Target r5) = NewArray(4);
        var model = new byte[(int)(3 * Chunk)];
        var rng = new Random(4);
        WriteScattered(md, rng, model, 0, model.Length, 1, maxVecs: 8);
        // Stripe 0: chunk 0 on member 0, chunk 1 on member 1, parity on member 3. A one-chunk write
        // to chunk 1 reconstruct-writes from chunk 0, whose member now has a bad block there.
        var pmem = (PmemDevice)_h.Open(m[0]);
        pmem.Namespace.AddBadBlocks((long)sb.DataOffset + 8, 2);
        long direct = r5.DirectWrites;
        WriteScattered(md, rng, model, (int)Chunk + 4096, 4096, 2, maxVecs: 1);
        Assert.Equal(direct, r5.DirectWrites);
        Assert.Equal(1L, r5.WriteCounts.Degraded); // the member read failed: written as with that member missing
        Assert.Equal(model, _h.Read(md, 0, model.Length));
        // The read errors are repaired from the redundancy (md's fix_read_error) before the check looks.
        Assert.True(SpinWait.SpinUntil(() => array.CorrectedSectors > 0 && pmem.Namespace.BadBlocks.IsEmpty, 10_000), string.Join(" | ", array.Log));
        Assert.True(array.WaitForSync(TimeSpan.FromSeconds(60)));
        array.StartCheck();
        Assert.True(array.WaitForSync(TimeSpan.FromSeconds(60)));
        Assert.Equal(0, array.MismatchCount);
    }

    [Fact]
    public void TheDirectPathAllocatesNothingPerWrite()
    {
        (_, _, IBlockDevice md, _, Raid5Target r5) = NewArray(4);
        using var buffers = new IoBuffers(md.AddressSpace, 1 << 20);
        var rng = new Random(5);
        using IoBuffers.Layout stripe = buffers.NewLayout(rng, (int)(3 * Chunk), 8, align: Bio.SectorSize);
        using IoBuffers.Layout page = buffers.Single(4096);
        var bio = new Bio();
        long stripes = md.CapacitySectors / r5.Layout.StripeSectors;
        ulong state = 7;

        void Run(int count)
        {
            for (int i = 0; i < count; i++)
            {
                state = state * 6364136223846793005UL + 1442695040888963407UL;
                long s = (long)(state >> 33) % stripes * r5.Layout.StripeSectors;
                if (md.SubmitAndWait(stripe.AddTo(bio.Init(BioOp.Write, s))) != BlockStatus.Ok
                    || md.SubmitAndWait(page.AddTo(bio.Init(BioOp.Write, s + 8 * (long)(state % 6)))) != BlockStatus.Ok)
                    throw new InvalidOperationException("a write failed");
            }
        }

        Run(200);
        long least = long.MaxValue;
        // The least of a few rounds: a JIT tier-up can allocate once; an allocation per write shows in every round.
        for (int round = 0; round < 5 && least > 0; round++)
        {
            long before = GC.GetAllocatedBytesForCurrentThread(), direct = r5.DirectWrites;
            Run(500);
            least = Math.Min(least, GC.GetAllocatedBytesForCurrentThread() - before);
            Assert.Equal(direct + 1000, r5.DirectWrites);
        }
        Assert.Equal(0, least);
    }
}
