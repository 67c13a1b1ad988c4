using System.Security.Cryptography;
using PfnBlock.Block;
using PfnBlock.CrashTest;
using PfnBlock.Devices;
using PfnBlock.Devices.Btt;
using PfnBlock.Devices.Pmem;
using PfnBlock.Memory;
using PfnBlock.Namespaces;
using PfnBlock.Namespaces.Btt;
using BlockTranslationTable = PfnBlock.Namespaces.Btt.Btt;

namespace PfnBlock.Tests.Btt;

/// <summary>Sector namespaces through the block layer, and the bad-input cases of the issue.</summary>
public sealed class BttDeviceTests : IDisposable
{
    private readonly BttScratch _s = new();

    public void Dispose() => _s.Dispose();

    private static BttDevice Open(string path) => Assert.IsType<BttDevice>(DeviceSpec.Parse("pmem:" + path).Open());

    /// <summary>The arena-0 info block of a sector namespace (at file offset 4096) and the arena's file offset.</summary>
    private static BttInfoBlock ReadInfo(string path)
    {
        byte[] block = new byte[BttInfoBlock.Size];
        using (var f = File.OpenRead(path)) { f.Position = 4096; f.ReadExactly(block); }
        Assert.True(BttInfoBlock.TryParse(block, out BttInfoBlock? info, out _));
        return info!;
    }

    private static void Poke(string path, long offset, ReadOnlySpan<byte> bytes)
    {
        using var f = new FileStream(path, FileMode.Open, FileAccess.Write);
        f.Position = offset;
        f.Write(bytes);
    }

    private static string Hash(string path) => Convert.ToHexString(SHA256.HashData(File.ReadAllBytes(path)));

    [Theory]
    [InlineData(4096u)]
    [InlineData(512u)]
    public void SectorNamespaceRoundTripsAndPersists(uint sectorSize)
    {
        string path = _s.SectorNamespace("rt", sectorSize: sectorSize);
        FrameRun buf = _s.Frames(2);
        int len = 2 * (int)sectorSize;
        long at = 5 * sectorSize;
        using (BttDevice dev = Open(path))
        {
            Assert.Equal((int)sectorSize, dev.Limits.LogicalBlockSize);
            Assert.Equal(dev.Btt.ExternalNlba * sectorSize, dev.CapacityBytes);
            SectorPattern.Fill(_s.Span(buf, (int)sectorSize), 5, 11);
            SectorPattern.Fill(_s.Span(buf, len)[(int)sectorSize..], 6, 12);
            Assert.Equal(BlockStatus.Ok, BttScratch.Io(dev, BioOp.Write, at, buf, len, BioFlags.Fua));
            Assert.Equal(BlockStatus.Ok, BttScratch.Io(dev, BioOp.Flush, 0, buf, 0));
        }
        _s.Span(buf, len).Clear();
        using (BttDevice dev = Open(path))
        {
            Assert.Equal(BlockStatus.Ok, BttScratch.Io(dev, BioOp.Read, at, buf, len));
            Assert.Equal(11, SectorPattern.Decode(_s.Span(buf, (int)sectorSize), 5));
            Assert.Equal(12, SectorPattern.Decode(_s.Span(buf, len)[(int)sectorSize..], 6));
            Assert.Equal(BlockStatus.Ok, BttScratch.Io(dev, BioOp.Read, 0, buf, (int)sectorSize));
            Assert.Equal(0, SectorPattern.Decode(_s.Span(buf, (int)sectorSize), 0));
        }
        Assert.True(BttCheck.Run(path, repair: false).Consistent);
    }

    [Fact]
    public unsafe void BlocksSplitAcrossVectorsAreBounced()
    {
        string path = _s.SectorNamespace("split");
        using BttDevice dev = Open(path);
        FrameRun src = _s.Frames(3), dst = _s.Frames(3);
        Span<byte> data = _s.Span(src, 3 * 4096);
        SectorPattern.Fill(data[..4096], 7, 1);
        SectorPattern.Fill(data.Slice(4096, 4096), 8, 2);
        // Vectors of 1000, 4000 and 3192 bytes: both 4 KiB blocks straddle vector boundaries.
        var bio = new Bio().Init(BioOp.Write, 7 * 8);
        bio.AddVec(src.First, 0, 1000).AddVec(src.First, 1000, 4000).AddVec(src.First, 5000, 3192);
        Assert.Equal(BlockStatus.Ok, dev.SubmitAndWait(bio));
        bio.Init(BioOp.Read, 7 * 8).AddVec(dst.First, 0, 100).AddVec(dst.First, 100, 8092);
        Assert.Equal(BlockStatus.Ok, dev.SubmitAndWait(bio));
        Span<byte> back = _s.Span(dst, 8192);
        Assert.Equal(1, SectorPattern.Decode(back[..4096], 7));
        Assert.Equal(2, SectorPattern.Decode(back[4096..], 8));
    }

    [Theory]
    [InlineData(BioOp.Discard)]
    [InlineData(BioOp.WriteZeroes)]
    public void DiscardAndWriteZeroesSetTheZeroFlag(BioOp op)
    {
        string path = _s.SectorNamespace("zero");
        FrameRun buf = _s.Frames(1);
        using BttDevice dev = Open(path);
        SectorPattern.Fill(_s.Span(buf, 4096), 3, 5);
        Assert.Equal(BlockStatus.Ok, BttScratch.Io(dev, BioOp.Write, 3 * 4096, buf, 4096));
        Assert.Equal(BlockStatus.Ok, BttScratch.Io(dev, op, 3 * 4096, buf, 4096));
        Assert.Equal(BlockStatus.Ok, BttScratch.Io(dev, BioOp.Read, 3 * 4096, buf, 4096));
        Assert.Equal(0, SectorPattern.Decode(_s.Span(buf, 4096), 3));
    }

    [Fact]
    public void ErrorFlagFailsReadsUntilRewritten()
    {
        string path = _s.SectorNamespace("err");
        FrameRun buf = _s.Frames(1);
        using (BttDevice dev = Open(path))
        {
            Assert.Equal(BttStatus.Ok, dev.Btt.SetError(9));
            Assert.Equal(BttStatus.MediaError, ReadSector(dev.Btt, 9));
            Assert.Equal(BlockStatus.MediaError, BttScratch.Io(dev, BioOp.Read, 9 * 4096, buf, 4096));
        }
        using (BttDevice dev = Open(path))
        {
            Assert.Equal(BlockStatus.MediaError, BttScratch.Io(dev, BioOp.Read, 9 * 4096, buf, 4096));
            SectorPattern.Fill(_s.Span(buf, 4096), 9, 3);
            Assert.Equal(BlockStatus.Ok, BttScratch.Io(dev, BioOp.Write, 9 * 4096, buf, 4096));
            _s.Span(buf, 4096).Clear();
            Assert.Equal(BlockStatus.Ok, BttScratch.Io(dev, BioOp.Read, 9 * 4096, buf, 4096));
            Assert.Equal(3, SectorPattern.Decode(_s.Span(buf, 4096), 9));
        }
    }

    [Fact]
    public void CorruptPrimaryInfoIsReadFromTheBackupAndRepairedOnlyOnRequest()
    {
        string path = _s.SectorNamespace("prim");
        Poke(path, 4096 + 60, [0xFF, 0xFF]);
        string before = Hash(path);
        using (BttDevice dev = Open(path))
            Assert.Contains(dev.Btt.Warnings, w => w.Contains("primary BTT info block is invalid") && w.Contains("backup"));
        BttCheckReport check = BttCheck.Run(path, repair: false);
        Assert.False(check.Consistent);
        Assert.Contains(check.Findings, f => f.Severity == CheckSeverity.Error && f.Message.Contains("primary info block is invalid"));
        Assert.Equal(before, Hash(path)); // opening and checking wrote nothing to the info block
        BttCheckReport repaired = BttCheck.Run(path, repair: true);
        Assert.True(repaired.Consistent);
        Assert.Contains(repaired.Findings, f => f.Severity == CheckSeverity.Repaired && f.Message.Contains("restored from the backup"));
        Assert.True(BttCheck.Run(path, repair: false) is { Consistent: true, Repairs: 0 });
        using (BttDevice dev = Open(path)) Assert.Empty(dev.Btt.Warnings);
    }

    [Fact]
    public void BothInfoBlocksCorruptIsRefused()
    {
        string path = _s.SectorNamespace("both");
        BttInfoBlock info = ReadInfo(path);
        Poke(path, 4096 + 60, [0xFF]);
        Poke(path, 4096 + info.Info2Off + 60, [0xFF]);
        string before = Hash(path);
        var e = Assert.Throws<InvalidNamespaceException>(() => Open(path));
        Assert.Contains("both BTT info blocks are invalid", e.Message);
        Assert.False(BttCheck.Run(path, repair: true).Consistent);
        Assert.Equal(before, Hash(path));
    }

    [Fact]
    public void WrongParentUuidIsRefused()
    {
        string path = _s.SectorNamespace("parent");
        NamespaceInfoBlock ns = PmemNamespace.ReadInfo(path, out _) with { Uuid = Guid.NewGuid() };
        byte[] block = new byte[NamespaceInfoBlock.Size];
        ns.Write(block);
        Poke(path, 0, block);
        Poke(path, NamespaceInfoBlock.BackupOffset(ns.NamespaceSize), block);
        var e = Assert.Throws<InvalidNamespaceException>(() => Open(path));
        Assert.Contains("parent uuid", e.Message);
    }

    [Fact]
    public void ImpossibleFlogSequenceIsRefusedAndNothingIsWritten()
    {
        string path = _s.SectorNamespace("seq");
        BttInfoBlock info = ReadInfo(path);
        Poke(path, 4096 + info.FlogOff + 3 * 64 + 12, BitConverter.GetBytes(7u));
        string before = Hash(path);
        var e = Assert.Throws<InvalidNamespaceException>(() => Open(path));
        Assert.Contains("flog lane 3", e.Message);
        Assert.Contains("impossible flog sequence", e.Message);
        BttCheckReport check = BttCheck.Run(path, repair: false);
        Assert.False(check.Consistent);
        Assert.Contains(check.Findings, f => f.Message.Contains("impossible flog sequence"));
        Assert.Equal(before, Hash(path));
    }

    [Fact]
    public void MapEntryOutsideTheArenaFailsThatSectorOnly()
    {
        string path = _s.SectorNamespace("map");
        BttInfoBlock info = ReadInfo(path);
        Poke(path, 4096 + info.MapOff + 5 * 4, BitConverter.GetBytes(MapEntry.Normal(info.InternalNlba + 10).Raw));
        FrameRun buf = _s.Frames(1);
        using (BttDevice dev = Open(path))
        {
            Assert.Equal(BlockStatus.IoError, BttScratch.Io(dev, BioOp.Read, 5 * 4096, buf, 4096));
            Assert.Equal(BlockStatus.IoError, BttScratch.Io(dev, BioOp.Write, 5 * 4096, buf, 4096));
            Assert.Equal(BlockStatus.Ok, BttScratch.Io(dev, BioOp.Read, 6 * 4096, buf, 4096));
            // The BTT says what it found; only the device turns it into EIO.
            Assert.Equal(BttStatus.BadMapEntry, ReadSector(dev.Btt, 5));
            Assert.Equal(BttStatus.OutOfRange, ReadSector(dev.Btt, dev.Btt.ExternalNlba));
        }
        BttCheckReport check = BttCheck.Run(path, repair: true);
        Assert.False(check.Consistent);
        Assert.Contains(check.Findings, f => f.Message.Contains("map entry of sector 5") && f.Message.Contains("outside the arena"));
    }

    private sealed class CrashException : Exception;

    [Fact]
    public unsafe void WriteInterruptedBetweenFlogAndMapIsReportedByCheckAndCompletedAtOpen()
    {
        string path = _s.SectorNamespace("recover");
        byte[] sector = new byte[4096];
        using (BttDevice dev = Open(path))
        {
            SectorPattern.Fill(sector, 4, 1);
            fixed (byte* p = sector) Assert.Equal(BttStatus.Ok, dev.Btt.Write(4, p));
            dev.Btt.StepHook = step => { if (step == BttWriteStep.FlogWritten) throw new CrashException(); };
            SectorPattern.Fill(sector, 4, 2);
            Assert.Throws<CrashException>(() => { fixed (byte* p = sector) dev.Btt.Write(4, p); });
        }
        BttCheckReport check = BttCheck.Run(path, repair: false);
        Assert.True(check.Consistent);
        Assert.Contains(check.Findings, f => f.Severity == CheckSeverity.Warning && f.Message.Contains("write of sector 4 was interrupted"));
        using (BttDevice dev = Open(path))
        {
            Assert.Equal(1, dev.Btt.RecoveredWrites);
            fixed (byte* p = sector) Assert.Equal(BttStatus.Ok, dev.Btt.Read(4, p));
            Assert.Equal(2, SectorPattern.Decode(sector, 4));
        }
        Assert.DoesNotContain(BttCheck.Run(path, repair: false).Findings, f => f.Message.Contains("interrupted"));
    }

    [Fact]
    public void RawAccessToASectorNamespaceIsRefused()
    {
        string path = _s.SectorNamespace("raw");
        using PmemNamespace ns = PmemNamespace.Open(path);
        Assert.Throws<NotSupportedException>(() => new PmemDevice(ns, ownsNamespace: false));
    }

    [Fact]
    public void SectorNamespaceBelowOneArenaIsRefused()
    {
        string path = _s.File("small");
        var e = Assert.Throws<ArgumentException>(() => PmemNamespace.Create(path, new NamespaceCreateOptions { Size = 8 << 20, Mode = NamespaceMode.Sector }));
        Assert.Contains("at least", e.Message);
    }

    private static unsafe BttStatus ReadSector(BlockTranslationTable btt, long lba)
    {
        byte[] sector = new byte[btt.LbaSize];
        fixed (byte* p = sector) return btt.Read(lba, p);
    }
}
