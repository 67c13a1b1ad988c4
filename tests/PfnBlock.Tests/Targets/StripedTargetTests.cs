using CsCheck;
using PfnBlock.Block;
using PfnBlock.Devices;
using PfnBlock.Targets.Striped;
using PfnBlock.Tests.Block;

namespace PfnBlock.Tests.Targets;

/// <summary>
/// dm-stripe's mapping: bytes land where a simple model of the layout says (checked by reading each
/// stripe directly), the child I/Os a bio becomes (sector, size, flags, and whether the bio was
/// remapped in place), flush fan-out, discard ranges per stripe, features, and bad table lines.
/// </summary>
public sealed class StripedTargetTests : IDisposable
{
    private readonly Scratch _scratch = new();
    private readonly DeviceSet _set = new();

    static StripedTargetTests() => DeviceTypes.RegisterAssembly(typeof(StripedTargetTests).Assembly);

    public void Dispose()
    {
        _set.Dispose();
        _scratch.Dispose();
    }

    private string Table(params string[] lines)
    {
        string path = _scratch.NewPath("striped.table");
        File.WriteAllLines(path, lines);
        return "table:" + path;
    }

    private string Recording(int i, string options = "") => $"recording:1M,name=rec{i}-{Path.GetFileName(_scratch.NewPath("r"))}{options}";

    /// <summary>Three recording stripes at sector offsets 0, 16 and 32, striped in 8-sector chunks over 2048 sectors.</summary>
    private (MappedDevice Top, RecordingDevice[] Stripes) ThreeStripes(string options = "")
    {
        string[] specs = [Recording(0, options), Recording(1, options), Recording(2, options)];
        var top = (MappedDevice)_set.Open(Table($"0 6048 striped 3 8 {specs[0]} 0 {specs[1]} 16 {specs[2]} 32"));
        return (top, [.. specs.Select(s => (RecordingDevice)_set.Open(s))]);
    }

    private static (long Sector, uint Sectors)[] Children(RecordingDevice d, BioOp op) =>
        [.. d.Log.Where(r => r.Op == op).Select(r => (r.Sector, r.Size >> Bio.SectorShift))];

    [Fact]
    public void ABioInsideOneChunkIsRemappedInPlaceNotCloned()
    {
        (MappedDevice top, RecordingDevice[] stripes) = ThreeStripes();
        using var buffers = new IoBuffers(top.AddressSpace, 1 << 20);
        using IoBuffers.Layout layout = buffers.Single(4096);
        // Chunk 4 (sectors 32..39) is the second chunk of stripe 1, which starts at sector 16 there.
        Bio bio = layout.AddTo(new Bio().Init(BioOp.Write, 32));
        Assert.Equal(BlockStatus.Ok, TargetSeamProperties.RunOnce(top, bio));
        Received only = Assert.Single(stripes[1].Log);
        Assert.Same(bio, only.Bio);
        Assert.Equal((16L + 8, 4096u), (only.Sector, only.Size));
        Assert.Empty(stripes[0].Log);
        Assert.Empty(stripes[2].Log);
    }

    [Fact]
    public void ABioAcrossChunksBecomesOneChildPerStripeAtTheModelsSectors()
    {
        (MappedDevice top, RecordingDevice[] stripes) = ThreeStripes(",cache");
        using var buffers = new IoBuffers(top.AddressSpace, 1 << 20);
        var rng = new Random(7);
        using IoBuffers.Layout layout = buffers.NewLayout(rng, 30 * Bio.SectorSize, maxVecs: 5);
        byte[] data = Stamp.Make(5 * Bio.SectorSize, 30 * Bio.SectorSize, 1);
        layout.Write(data);
        // Sectors 5..34: chunk 0 (3 sectors, stripe 0), chunks 1, 2, 3 whole (stripes 1, 2, 0), chunk 4 (3 sectors, stripe 1).
        // Each stripe gets one bio: chunks 0 and 3 are neighbours on stripe 0 (sectors 5..15), 1 and 4 on stripe 1.
        Assert.Equal(BlockStatus.Ok, TargetSeamProperties.RunOnce(top, layout.AddTo(new Bio().Init(BioOp.Write, 5, BioFlags.Fua))));
        Assert.Equal([(5L, 11u)], Children(stripes[0], BioOp.Write));
        Assert.Equal([(16L, 11u)], Children(stripes[1], BioOp.Write));
        Assert.Equal([(32L, 8u)], Children(stripes[2], BioOp.Write));
        Assert.All(stripes.SelectMany(s => s.Log), r => Assert.Equal(BioFlags.Fua, r.Flags)); // every piece durable on completion
        Assert.Equal(3, ((StripedTarget)top.Table[0].Target).Stripes);

        // The same bytes read back through the stripe, and the pieces went back to the pool.
        using IoBuffers.Layout back = buffers.NewLayout(rng, 30 * Bio.SectorSize, maxVecs: 7);
        Assert.Equal(BlockStatus.Ok, TargetSeamProperties.RunOnce(top, back.AddTo(new Bio().Init(BioOp.Read, 5))));
        Assert.Equal(data, back.Read());
        Assert.Equal(0, top.Stats.Snapshot().InFlight);
    }

    [Fact]
    public void ABioWhosePartsCouldOverflowABiosVectorsIsSplitAtEveryChunkInstead()
    {
        (MappedDevice top, RecordingDevice[] stripes) = ThreeStripes(",cache");
        using var buffers = new IoBuffers(top.AddressSpace, 4 << 20);
        // 256 one-sector vectors over 32 chunks: 256 + 31 parts could not fit a pooled bio's 256 vectors.
        using IoBuffers.Layout layout = buffers.Pieces(Bio.MaxVecs, Bio.SectorSize);
        byte[] data = Stamp.Make(0, Bio.MaxVecs * Bio.SectorSize, 9);
        layout.Write(data);
        Assert.Equal(BlockStatus.Ok, TargetSeamProperties.RunOnce(top, layout.AddTo(new Bio().Init(BioOp.Write, 0))));
        // One child per 8-sector chunk, 32 in all, round-robin over the stripes.
        Assert.Equal(32, stripes.Sum(s => Children(s, BioOp.Write).Length));
        Assert.All(stripes.SelectMany(s => Children(s, BioOp.Write)), c => Assert.Equal(8u, c.Sectors));
        using IoBuffers.Layout back = buffers.Single(Bio.MaxVecs * Bio.SectorSize);
        Assert.Equal(BlockStatus.Ok, TargetSeamProperties.RunOnce(top, back.AddTo(new Bio().Init(BioOp.Read, 0))));
        Assert.Equal(data, back.Read());
        Assert.Equal(0, top.Stats.Snapshot().InFlight);
    }

    [Fact]
    public void APreflushWriteFlushesEveryStripeFirstAndFlushesFanOutByTargetBioNumber()
    {
        (MappedDevice top, RecordingDevice[] stripes) = ThreeStripes(",cache");
        Assert.Equal(BlockStatus.Ok, TargetSeamProperties.RunOnce(top, new Bio().Init(BioOp.Flush, 0)));
        for (int i = 0; i < 3; i++)
        {
            Received flush = Assert.Single(stripes[i].Log);
            Assert.Equal(BioOp.Flush, flush.Op);
            Assert.Equal(i, flush.TargetBioNumber); // flush bio i goes to stripe i
            stripes[i].Clear();
        }
        using var buffers = new IoBuffers(top.AddressSpace, 1 << 20);
        using IoBuffers.Layout layout = buffers.Single(4096);
        Assert.Equal(BlockStatus.Ok, TargetSeamProperties.RunOnce(top, layout.AddTo(new Bio().Init(BioOp.Write, 8, BioFlags.Preflush))));
        // Each stripe was flushed, and the data (now without PREFLUSH) went to stripe 1 after its flush.
        Assert.All(stripes, s => Assert.Equal(BioOp.Flush, s.Log[0].Op));
        Received write = stripes[1].Log[1];
        Assert.Equal((BioOp.Write, 16L, BioFlags.None), (write.Op, write.Sector, write.Flags));
    }

    [Theory]
    [InlineData(BioOp.Discard)]
    [InlineData(BioOp.WriteZeroes)]
    public void DiscardAndWriteZeroesReachEachStripeAsOneContiguousRange(BioOp op)
    {
        (MappedDevice top, RecordingDevice[] stripes) = ThreeStripes();
        // Sectors 5..54 cover chunks 0..6: stripe 0 holds 5..7 of chunk 0, chunk 3 and 48..54 of chunk 6,
        // which are neighbours there (its sectors 5..22); stripes 1 and 2 hold two whole chunks each.
        var bio = new Bio().Init(op, 5);
        bio.Iter.Size = 50 * Bio.SectorSize;
        Assert.Equal(BlockStatus.Ok, TargetSeamProperties.RunOnce(top, bio));
        Assert.Equal([(5L, 18u)], Children(stripes[0], op));
        Assert.Equal([(16L, 16u)], Children(stripes[1], op));
        Assert.Equal([(32L, 16u)], Children(stripes[2], op));

        // A range inside one chunk reaches only its stripe.
        foreach (RecordingDevice s in stripes) s.Clear();
        bio = new Bio().Init(op, 41);
        bio.Iter.Size = 6 * Bio.SectorSize;
        Assert.Equal(BlockStatus.Ok, TargetSeamProperties.RunOnce(top, bio));
        Assert.Empty(stripes[0].Log);
        Assert.Empty(stripes[1].Log);
        Assert.Equal([(32L + 8 + 1, 6u)], Children(stripes[2], op));
    }

    [Fact]
    public void DiscardAndWriteZeroesAreAdvertisedOnlyWhenEveryStripeHasThem()
    {
        string a = Recording(0), b = Recording(1, ",nodiscard");
        IBlockDevice both = _set.Open(Table($"0 2048 striped 2 8 {a} 0 {Recording(2)} 0"));
        Assert.Equal(DeviceFeatures.Discard | DeviceFeatures.WriteZeroes, both.Features & (DeviceFeatures.Discard | DeviceFeatures.WriteZeroes));
        IBlockDevice one = _set.Open(Table($"0 2048 striped 2 8 {a} 1024 {b} 0"));
        Assert.Equal(DeviceFeatures.None, one.Features & (DeviceFeatures.Discard | DeviceFeatures.WriteZeroes));
        var discard = new Bio().Init(BioOp.Discard, 0);
        discard.Iter.Size = 4096;
        Assert.Equal(BlockStatus.NotSupported, TargetSeamProperties.RunOnce(one, discard));
    }

    [Fact]
    public void DirectAccessIsOfferedOnlyForPageAlignedChunksAndStartsAndStopsAtTheChunkEnd()
    {
        string a = $"pmem:{_scratch.NewNamespace(4 << 20)}", b = $"pmem:{_scratch.NewNamespace(4 << 20)}";
        var dax = (MappedDevice)_set.Open(Table($"0 4096 striped 2 16 {a} 0 {b} 8"));
        Assert.True((dax.Features & DeviceFeatures.Dax) != 0);
        // Page 3 is the second page of chunk 1 (stripe 1, which starts at its page 1): one page to the chunk's end.
        Assert.Equal(1, dax.DirectAccess(3, 4, out DaxRange range));
        range.Unpin();
        Assert.Equal(2, dax.DirectAccess(4, 4, out range));
        range.Unpin();
        Assert.True((_set.Open(Table($"0 4096 striped 2 4 {a} 0 {b} 8")).Features & DeviceFeatures.Dax) == 0);  // 2 KiB chunks
        Assert.True((_set.Open(Table($"0 4096 striped 2 16 {a} 0 {b} 4")).Features & DeviceFeatures.Dax) == 0); // a start inside a page
    }

    /// <summary>One random layout: stripe count, chunk, each stripe's start, and the stripe width in chunks.</summary>
    private sealed record Layout(int Stripes, int ChunkShift, int[] Starts, int WidthChunks);

    private sealed record Write(long Sector, int Sectors, int Seed);

    private static readonly Gen<Layout> GenLayout = Gen.Int[1, 5].SelectMany(n =>
        Gen.Select(Gen.Int[0, 6], Gen.Int[0, 64].Array[n], Gen.Int[1, 16], (c, s, w) => new Layout(n, c, s, w)));

    [Fact]
    public void BytesLandWhereTheModelOfTheLayoutSays()
    {
        Gen.Select(GenLayout, Gen.Select(Gen.Long[0, 1 << 20], Gen.Int[1, 300], Gen.Int, (s, n, seed) => new Write(s, n, seed)).Array[1, 12])
            .Sample((layout, writes) =>
            {
                using var scratch = new Scratch();
                using var set = new DeviceSet();
                long chunk = 1L << layout.ChunkShift, width = layout.WidthChunks * chunk;
                string[] specs = [.. Enumerable.Range(0, layout.Stripes).Select(i => $"ram:1M,name=m{i}-{Path.GetFileName(scratch.NewPath("m"))}")];
                string table = scratch.NewPath("model.table");
                File.WriteAllText(table, $"0 {width * layout.Stripes} striped {layout.Stripes} {chunk} "
                    + string.Join(' ', specs.Select((s, i) => $"{s} {layout.Starts[i]}")) + "\n");
                IBlockDevice top = set.Open("table:" + table);
                using var buffers = new IoBuffers(top.AddressSpace, 4 << 20);

                // The model: the bytes of each stripe device, and of the striped device.
                byte[][] lower = [.. specs.Select(_ => new byte[1 << 20])];
                byte[] flat = new byte[top.CapacityBytes];
                foreach (Write w in writes)
                {
                    int sectors = (int)Math.Min(w.Sectors, top.CapacitySectors);
                    long sector = w.Sector % (top.CapacitySectors - sectors + 1);
                    var rng = new Random(w.Seed);
                    using IoBuffers.Layout data = buffers.NewLayout(rng, sectors << Bio.SectorShift);
                    byte[] bytes = Stamp.Make(sector << Bio.SectorShift, sectors << Bio.SectorShift, w.Seed);
                    data.Write(bytes);
                    Assert.Equal(BlockStatus.Ok, TargetSeamProperties.RunOnce(top, data.AddTo(new Bio().Init(BioOp.Write, sector))));
                    bytes.CopyTo(flat, sector << Bio.SectorShift);
                    for (int i = 0; i < sectors; i++)
                    {
                        long logical = sector + i, c = logical / chunk;
                        int stripe = (int)(c % layout.Stripes);
                        long at = layout.Starts[stripe] + c / layout.Stripes * chunk + logical % chunk;
                        Array.Copy(bytes, i << Bio.SectorShift, lower[stripe], at << Bio.SectorShift, Bio.SectorSize);
                    }
                }
                for (int s = 0; s < specs.Length; s++)
                    Assert.True(ReadAll(set.Open(specs[s]), buffers).AsSpan().SequenceEqual(lower[s]), $"stripe {s} differs from the model ({layout})");
                Assert.True(ReadAll(top, buffers).AsSpan().SequenceEqual(flat), $"the striped device differs from the model ({layout})");
            }, iter: 80, threads: 1);
    }

    private static byte[] ReadAll(IBlockDevice dev, IoBuffers buffers)
    {
        var all = new byte[dev.CapacityBytes];
        for (long at = 0; at < all.Length; at += 1 << 20)
        {
            using IoBuffers.Layout layout = buffers.Single((int)Math.Min(all.Length - at, 1 << 20));
            Assert.Equal(BlockStatus.Ok, TargetSeamProperties.RunOnce(dev, layout.AddTo(new Bio().Init(BioOp.Read, at >> Bio.SectorShift))));
            layout.Read().CopyTo(all, at);
        }
        return all;
    }

    [Theory]
    [InlineData("0 2048 striped", "Not enough arguments")]
    [InlineData("0 2048 striped 2", "Not enough arguments")]
    [InlineData("0 2048 striped x 8 ram:1M 0", "Invalid stripe count: 'x'")]
    [InlineData("0 2048 striped -1 8 ram:1M 0", "Invalid stripe count: '-1'")]
    [InlineData("0 2048 striped 0 8", "Invalid stripe count: '0'")]
    [InlineData("0 2048 striped 2 8k ram:1M,name=a 0 ram:1M,name=b 0", "Invalid chunk_size: '8k'")]
    [InlineData("0 2048 striped 2 0 ram:1M,name=a 0 ram:1M,name=b 0", "Invalid chunk size: 0 sectors is not a power of two")]
    [InlineData("0 2048 striped 2 12 ram:1M,name=a 0 ram:1M,name=b 0", "Invalid chunk size: 12 sectors is not a power of two")]
    [InlineData("0 2048 striped 2 8 ram:1M 0", "Not enough destinations specified: 2 stripes need 2 DEVICE OFFSET pairs, the line has 2 more arguments")]
    [InlineData("0 2048 striped 1 8 ram:1M 0 ram:2M 0", "Too many destinations specified: 1 stripes need 1 DEVICE OFFSET pairs, the line has 4 more arguments")]
    [InlineData("0 2047 striped 3 8 ram:1M,name=a 0 ram:1M,name=b 0 ram:1M,name=c 0", "Target length not divisible by number of stripes")]
    [InlineData("0 2040 striped 2 16 ram:1M,name=a 0 ram:1M,name=b 0", "Target length not divisible by chunk size (each stripe holds 1020 sectors, chunks are 16)")]
    [InlineData("0 2048 striped 2 8 ram:1M,name=a zz ram:1M,name=b 0", "Invalid offset of stripe 0: 'zz'")]
    [InlineData("0 2048 striped 2 8 ram:1M,name=a 0 disk:/x 0", "Device lookup failed: disk:/x")]
    [InlineData("0 4096 striped 2 8 ram:1M,name=a 0 ram:512k,name=b 0", "Device too small: b has 1024 sectors, the line needs 0 + 2048")]
    [InlineData("0 2048 striped 2 8 ram:1M,name=a 0 ram:1M,name=b 1500", "Device too small: b has 2048 sectors, the line needs 1500 + 1024")]
    public void BadLinesSayWhichLineAndWhy(string line, string message)
    {
        var e = Assert.Throws<FormatException>(() => _set.Open(Table("# a striped table", line)));
        Assert.Contains($"line 2: striped: {message}", e.Message);
        Assert.Empty(_set.OpenDevices); // stripes opened before the refusal were released
    }

    [Fact]
    public void AChunkSmallerThanTheStripesBlockSizeIsRefused()
    {
        string a = $"pmem:{_scratch.NewNamespace(4 << 20, sectorSize: 4096)}", b = $"pmem:{_scratch.NewNamespace(4 << 20, sectorSize: 4096)}";
        var e = Assert.Throws<FormatException>(() => _set.Open(Table($"0 4096 striped 2 4 {a} 0 {b} 0")));
        Assert.Contains("line 1: striped: Invalid chunk size: 4 sectors is not a multiple of the 4096-byte logical block size of the stripes", e.Message);
        Assert.Equal(4096, _set.Open(Table($"0 4096 striped 2 8 {a} 0 {b} 0")).Limits.LogicalBlockSize);
    }

    [Fact]
    public void StripesOfDifferentSizesAreFineWhereTheAreaFits()
    {
        IBlockDevice dev = _set.Open(Table("0 4096 striped 2 8 ram:1M,name=small 0 ram:4M,name=big 4096"));
        Assert.Equal(4096, dev.CapacitySectors);
    }
}
