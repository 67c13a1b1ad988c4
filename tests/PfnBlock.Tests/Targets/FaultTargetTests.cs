using System.Diagnostics;
using PfnBlock.Block;
using PfnBlock.Devices;
using PfnBlock.Targets.Flakey;
using PfnBlock.Tests.Block;

namespace PfnBlock.Tests.Targets;

/// <summary>
/// The fault targets: <c>error</c> fails everything (alone and as a hole in a table), <c>zero</c>
/// reads zeros and drops writes, <c>flakey</c> passes I/O while up and fails, drops or corrupts it
/// while down as its features say, by the wall clock or a test's override; and each refuses bad
/// table lines naming the line.
/// </summary>
public sealed class FaultTargetTests : IDisposable
{
    private readonly Scratch _scratch = new();
    private readonly DeviceSet _set = new();
    private IoBuffers? _buffers;

    static FaultTargetTests() => DeviceTypes.RegisterAssembly(typeof(FaultTargetTests).Assembly);

    public void Dispose()
    {
        _buffers?.Dispose();
        _set.Dispose();
        _scratch.Dispose();
    }

    private IoBuffers Buffers(IBlockDevice dev) => _buffers ??= new IoBuffers(dev.AddressSpace, 4 << 20);

    private string Table(params string[] lines)
    {
        string path = _scratch.NewPath("fault.table");
        File.WriteAllLines(path, lines);
        return "table:" + path;
    }

    private string Ram(string hint = "r") => $"ram:1M,name={hint}-{Path.GetFileName(_scratch.NewPath(hint))}";

    private string Recording(string options = "") => $"recording:1M,name=rec-{Path.GetFileName(_scratch.NewPath("rec"))}{options}";

    private static Bio NoData(BioOp op, long sector, int sectors)
    {
        var bio = new Bio().Init(op, sector);
        bio.Iter.Size = (uint)sectors << Bio.SectorShift;
        return bio;
    }

    private BlockStatus Write(IBlockDevice dev, long sector, byte[] data, BioFlags flags = BioFlags.None, int maxVecs = 4)
    {
        using IoBuffers.Layout layout = Buffers(dev).NewLayout(new Random(data.Length), data.Length, maxVecs);
        layout.Write(data);
        BlockStatus status = TargetSeamProperties.RunOnce(dev, layout.AddTo(new Bio().Init(BioOp.Write, sector, flags)));
        Assert.Equal(data, layout.Read()); // the submitter's buffer is never changed by a write
        return status;
    }

    private (BlockStatus Status, byte[] Data) Read(IBlockDevice dev, long sector, int sectors, BioFlags flags = BioFlags.None, int maxVecs = 4)
    {
        using IoBuffers.Layout layout = Buffers(dev).NewLayout(new Random(sectors), sectors << Bio.SectorShift, maxVecs);
        layout.Fill(0xA5);
        BlockStatus status = TargetSeamProperties.RunOnce(dev, layout.AddTo(new Bio().Init(BioOp.Read, sector, flags)));
        return (status, layout.Read());
    }

    // ---- error -------------------------------------------------------------------------------

    [Fact]
    public void AnErrorTableFailsEveryIoOnceButTheEdgeStillValidates()
    {
        IBlockDevice dev = _set.Open(Table("0 2048 error"));
        Assert.Empty(((MappedDevice)dev).Table[0].Target.Devices);
        Assert.Equal(BlockStatus.IoError, Read(dev, 0, 8).Status);
        Assert.Equal(BlockStatus.IoError, Write(dev, 8, new byte[4096]));
        Assert.Equal(BlockStatus.IoError, TargetSeamProperties.RunOnce(dev, NoData(BioOp.Discard, 0, 8)));
        Assert.Equal(BlockStatus.IoError, TargetSeamProperties.RunOnce(dev, NoData(BioOp.WriteZeroes, 0, 8)));
        // Nothing below has a cache, so a flush has nothing to do and is not sent to the target (num_flush_bios 0).
        Assert.Equal(BlockStatus.Ok, TargetSeamProperties.RunOnce(dev, new Bio().Init(BioOp.Flush, 0)));
        Assert.Equal(BlockStatus.OutOfRange, Read(dev, 2048, 8).Status);
        Assert.Equal(BlockStatus.Invalid, TargetSeamProperties.RunOnce(dev, NoData(BioOp.Discard, 0, 0)));
        DiskStatsSnapshot s = dev.Stats.Snapshot();
        // Write-zeroes are counted with the writes, as /proc/diskstats does.
        Assert.Equal((1, 2, 1, 0L), (s.Read.Ios, s.Write.Ios, s.Discard.Ios, s.InFlight));
    }

    [Fact]
    public void AnErrorLineIsAHoleInATable()
    {
        string ram = Recording(",cache");
        IBlockDevice dev = _set.Open(Table($"0 1024 linear {ram} 0", "1024 1024 error", $"2048 1024 linear {ram} 1024"));
        byte[] data = Stamp.Make(0, 4096, 1);
        Assert.Equal(BlockStatus.Ok, Write(dev, 1016, data[..4096]));   // line 1 only
        Assert.Equal(BlockStatus.IoError, Read(dev, 1020, 8).Status);  // half in the hole
        Assert.Equal(BlockStatus.Ok, Write(dev, 2048, data));
        Assert.Equal(data, Read(dev, 2048, 8).Data);
        var rec = (RecordingDevice)_set.Open(ram);
        rec.Clear();
        Assert.Equal(BlockStatus.Ok, TargetSeamProperties.RunOnce(dev, new Bio().Init(BioOp.Flush, 0)));
        Assert.Equal(2, rec.Log.Count(r => r.Op == BioOp.Flush)); // once per linear line, never to the error line
    }

    // ---- zero --------------------------------------------------------------------------------

    [Fact]
    public void AZeroTableReadsZerosAndDropsWrites()
    {
        IBlockDevice dev = _set.Open(Table("0 4096 zero"));
        DeviceFeatures wanted = DeviceFeatures.Discard | DeviceFeatures.WriteZeroes | DeviceFeatures.DiscardZeroesData | DeviceFeatures.DiscardsData;
        Assert.Equal(wanted, dev.Features & (wanted | DeviceFeatures.WriteCache));
        Assert.Equal(BlockStatus.Ok, Write(dev, 16, Stamp.Make(0, 8192, 2)));
        (BlockStatus status, byte[] data) = Read(dev, 8, 64, maxVecs: 6);
        Assert.Equal(BlockStatus.Ok, status);
        Assert.Equal(new byte[64 * Bio.SectorSize], data);
        Assert.Equal(BlockStatus.Ok, TargetSeamProperties.RunOnce(dev, NoData(BioOp.Discard, 0, 4096)));
        Assert.Equal(BlockStatus.Ok, TargetSeamProperties.RunOnce(dev, NoData(BioOp.WriteZeroes, 0, 4096)));
    }

    [Fact]
    public void AZeroLineBesideALinearOneKeepsTheLinearPartAndMarksTheDeviceAsDiscardingData()
    {
        string ram = Ram();
        IBlockDevice dev = _set.Open(Table($"0 1024 linear {ram} 0", "1024 1024 zero"));
        Assert.True((dev.Features & DeviceFeatures.DiscardsData) != 0);
        byte[] data = Stamp.Make(0, 8192, 3);
        Assert.Equal(BlockStatus.Ok, Write(dev, 1016, data)); // 4 KiB to each line
        byte[] back = Read(dev, 1016, 16).Data;
        Assert.Equal(data[..4096], back[..4096]);
        Assert.Equal(new byte[4096], back[4096..]);
    }

    [Theory]
    [InlineData("0 2048 error 1", "line 1: error: Invalid argument count (expected 0, got 1)")]
    [InlineData("0 2048 zero ram:1M 0", "line 1: zero: Invalid argument count (expected 0, got 2)")]
    public void ErrorAndZeroTakeNoArguments(string line, string message) =>
        Assert.Contains(message, Assert.Throws<FormatException>(() => _set.Open(Table(line))).Message);

    // ---- flakey ------------------------------------------------------------------------------

    private (IBlockDevice Dev, FlakeyTarget Flakey, string Lower) Flakey(string rest, string? lower = null)
    {
        lower ??= Recording(",cache");
        IBlockDevice dev = _set.Open(Table($"0 2040 flakey {lower} 8 {rest}"));
        return (dev, (FlakeyTarget)((MappedDevice)dev).Table[0].Target, lower);
    }

    [Fact]
    public void UpItPassesEverythingDownWithoutFeaturesEveryIoFails()
    {
        (IBlockDevice dev, FlakeyTarget flakey, string lower) = Flakey("3600 3600");
        Assert.False(flakey.IsDown);
        byte[] data = Stamp.Make(0, 8192, 4);
        Assert.Equal(BlockStatus.Ok, Write(dev, 0, data));
        Assert.Equal(data, Read(dev, 0, 16).Data);
        Assert.Equal(BlockStatus.Ok, TargetSeamProperties.RunOnce(dev, NoData(BioOp.Discard, 64, 8)));

        flakey.ForcedDown = true;
        Assert.True(flakey.IsDown);
        var rec = (RecordingDevice)_set.Open(lower);
        rec.Clear();
        Assert.Equal(BlockStatus.IoError, Read(dev, 0, 16).Status);
        Assert.Equal(BlockStatus.IoError, Write(dev, 0, Stamp.Make(0, 8192, 5)));
        Assert.Equal(BlockStatus.IoError, TargetSeamProperties.RunOnce(dev, new Bio().Init(BioOp.Flush, 0)));
        Assert.Equal(BlockStatus.IoError, TargetSeamProperties.RunOnce(dev, NoData(BioOp.WriteZeroes, 0, 8)));
        Assert.Empty(rec.Log); // nothing reached the device

        flakey.ForcedDown = false;
        Assert.Equal(data, Read(dev, 0, 16).Data); // the failed write changed nothing
    }

    [Fact]
    public void DropWritesCompletesWritesWithoutDoingThemAndReadsStillWork()
    {
        (IBlockDevice dev, FlakeyTarget flakey, string lower) = Flakey("3600 3600 1 drop_writes");
        byte[] data = Stamp.Make(0, 4096, 6);
        Assert.Equal(BlockStatus.Ok, Write(dev, 24, data));
        flakey.ForcedDown = true;
        var rec = (RecordingDevice)_set.Open(lower);
        rec.Clear();
        Assert.Equal(BlockStatus.Ok, Write(dev, 24, Stamp.Make(0, 4096, 7)));
        Assert.Equal(BlockStatus.Ok, TargetSeamProperties.RunOnce(dev, new Bio().Init(BioOp.Flush, 0)));
        Assert.Equal(BlockStatus.Ok, TargetSeamProperties.RunOnce(dev, NoData(BioOp.Discard, 24, 8)));
        Assert.Empty(rec.Log);
        Assert.Equal(data, Read(dev, 24, 8).Data); // down, reads pass and show the old data
        Assert.Equal(BioOp.Read, Assert.Single(rec.Log).Op);
    }

    [Theory]
    [InlineData("1 error_writes", BlockStatus.Ok, BlockStatus.IoError)]
    [InlineData("1 error_reads", BlockStatus.IoError, BlockStatus.Ok)]
    [InlineData("2 ERROR_READS error_writes", BlockStatus.IoError, BlockStatus.IoError)]
    public void ErrorReadsAndErrorWritesFailOnlyTheirDirection(string features, BlockStatus read, BlockStatus write)
    {
        (IBlockDevice dev, FlakeyTarget flakey, _) = Flakey($"3600 3600 {features}");
        byte[] old = Stamp.Make(0, 4096, 8), fresh = Stamp.Make(0, 4096, 9);
        Assert.Equal(BlockStatus.Ok, Write(dev, 40, old));
        flakey.ForcedDown = true;
        Assert.Equal(write, Write(dev, 40, fresh));
        Assert.Equal(read, Read(dev, 40, 8).Status);
        flakey.ForcedDown = false;
        Assert.Equal(write == BlockStatus.Ok ? fresh : old, Read(dev, 40, 8).Data);
    }

    [Fact]
    public void CorruptBioByteOnReadsChangesTheNthByteOfTheDataReadOnly()
    {
        (IBlockDevice dev, FlakeyTarget flakey, _) = Flakey("3600 3600 5 corrupt_bio_byte 3000 r 0 0");
        byte[] data = Stamp.Make(0, 8192, 10);
        Assert.Equal(BlockStatus.Ok, Write(dev, 0, data));
        flakey.ForcedDown = true;
        (BlockStatus status, byte[] back) = Read(dev, 0, 16, maxVecs: 8);
        Assert.Equal(BlockStatus.Ok, status);
        byte[] expected = (byte[])data.Clone();
        expected[2999] = 0;
        Assert.Equal(expected, back);
        // A read shorter than N is left alone, and a write passes down unchanged.
        Assert.Equal(data[..Bio.SectorSize], Read(dev, 0, 1).Data);
        Assert.Equal(BlockStatus.Ok, Write(dev, 16, data));
        flakey.ForcedDown = false;
        Assert.Equal(data, Read(dev, 16, 16).Data);
        Assert.Equal(data, Read(dev, 0, 16).Data); // the device itself was never changed
    }

    [Fact]
    public void CorruptBioByteOnWritesStoresTheByteButLeavesTheSubmittersBufferAlone()
    {
        (IBlockDevice dev, FlakeyTarget flakey, string lower) = Flakey("3600 3600 5 corrupt_bio_byte 2600 w 66 0");
        flakey.ForcedDown = true;
        var rec = (RecordingDevice)_set.Open(lower);
        byte[] data = Stamp.Make(0, 8192, 11);
        var rng = new Random(3);
        using IoBuffers.Layout layout = Buffers(dev).NewLayout(rng, data.Length, maxVecs: 6);
        layout.Write(data);
        Bio bio = layout.AddTo(new Bio().Init(BioOp.Write, 100, BioFlags.Fua));
        Assert.Equal(BlockStatus.Ok, TargetSeamProperties.RunOnce(dev, bio));
        Assert.Equal(data, layout.Read());
        // Byte 2600 lies in the sixth 512-byte block: five blocks as a split, that block from a bounce
        // frame, and the remaining ten blocks as the bio itself; each at its sector, each with FUA.
        Received[] writes = [.. rec.Log.Where(r => r.Op == BioOp.Write).OrderBy(r => r.Sector)];
        Assert.Equal([(108L, 5u * 512), (113L, 512u), (114L, 10u * 512)], writes.Select(r => (r.Sector, r.Size)));
        Assert.All(writes, r => Assert.Equal(BioFlags.Fua, r.Flags));
        Assert.Same(bio, writes[2].Bio);
        Assert.NotSame(bio, writes[1].Bio);

        flakey.ForcedDown = false;
        byte[] expected = (byte[])data.Clone();
        expected[2599] = 66;
        Assert.Equal(expected, Read(dev, 100, 16).Data);
        // A write whose first block holds the byte, and one exactly that block long.
        flakey.ForcedDown = true;
        Assert.Equal(BlockStatus.Ok, Write(dev, 0, data[..3072]));
        Assert.Equal(BlockStatus.Ok, Write(dev, 200, data[..Bio.SectorSize]));
        flakey.ForcedDown = false;
        byte[] first = Read(dev, 0, 6).Data;
        Assert.Equal(66, first[2599]);
        Assert.Equal(data[..2599], first[..2599]);
        Assert.Equal(data[..Bio.SectorSize], Read(dev, 200, 1).Data); // shorter than N: untouched
    }

    [Fact]
    public void CorruptBioByteOnlyTouchesBiosWithEveryFlagOfTheMask()
    {
        (IBlockDevice dev, FlakeyTarget flakey, _) = Flakey("3600 3600 5 corrupt_bio_byte 1 r 7 1"); // 1: FUA
        byte[] data = Stamp.Make(0, 4096, 12);
        Assert.Equal(BlockStatus.Ok, Write(dev, 0, data));
        flakey.ForcedDown = true;
        Assert.Equal(data, Read(dev, 0, 8).Data);
        Assert.Equal(7, Read(dev, 0, 8, BioFlags.Fua).Data[0]);
    }

    [Fact]
    public void UpAndDownFollowTheWallClockFromTheTablesCreation()
    {
        (IBlockDevice dev, FlakeyTarget flakey, _) = Flakey("5 5");
        long second = Stopwatch.Frequency;
        long now = Stopwatch.GetTimestamp();
        Assert.False(flakey.IsDown); // just made: the first 5 seconds are up
        flakey.Epoch = now - 5 * second - second / 5;
        Assert.True(flakey.IsDown);
        Assert.Equal(BlockStatus.IoError, Read(dev, 0, 8).Status);
        flakey.Epoch = now - 10 * second - second / 5;
        Assert.False(flakey.IsDown); // the next cycle
        Assert.Equal(BlockStatus.Ok, Read(dev, 0, 8).Status);
        flakey.Epoch = now - 29 * second - second / 5;
        Assert.True(flakey.IsDown);

        Assert.True(Flakey("0 1").Flakey.IsDown);   // never up
        Assert.False(Flakey("1 0").Flakey.IsDown);  // never down
    }

    [Theory]
    [InlineData("ram:1M 0 1", "Invalid argument count (expected DEVICE OFFSET UP DOWN [FEATURES], got 3 arguments)")]
    [InlineData("ram:1M x 1 1", "Invalid device sector: 'x'")]
    [InlineData("ram:1M 0 -1 1", "Invalid up interval: '-1'")]
    [InlineData("ram:1M 0 1 4294967296", "Invalid down interval: '4294967296' (a number from 0 to 4294967295)")]
    [InlineData("ram:1M 0 0 0", "Total (up + down) interval is zero")]
    [InlineData("ram:1M 0 4294967295 1", "Interval overflow")]
    [InlineData("ram:1M 0 1 1 8", "Invalid number of feature args: '8' (a number from 0 to 7)")]
    [InlineData("ram:1M 0 1 1 2 drop_writes", "Invalid number of feature args: the count says 2, the line has 1")]
    [InlineData("ram:1M 0 1 1 1 drop_writes error_reads", "Invalid number of feature args: the count says 1, the line has 2")]
    [InlineData("ram:1M 0 1 1 1 lose_writes", "Unrecognised flakey feature requested: 'lose_writes'")]
    [InlineData("ram:1M 0 1 1 2 drop_writes drop_writes", "Feature drop_writes duplicated")]
    [InlineData("ram:1M 0 1 1 2 error_reads error_reads", "Feature error_reads duplicated")]
    [InlineData("ram:1M 0 1 1 2 error_writes error_writes", "Feature error_writes duplicated")]
    [InlineData("ram:1M 0 1 1 2 error_writes drop_writes", "Feature drop_writes conflicts with feature error_writes")]
    [InlineData("ram:1M 0 1 1 2 drop_writes error_writes", "Feature error_writes conflicts with feature drop_writes")]
    [InlineData("ram:1M 0 1 1 3 corrupt_bio_byte 1 r", "Feature corrupt_bio_byte requires 4 parameters (N r|w VALUE FLAGS)")]
    [InlineData("ram:1M 0 1 1 5 corrupt_bio_byte 0 r 1 0", "Invalid corrupt bio byte: '0' (bytes count from 1)")]
    [InlineData("ram:1M 0 1 1 5 corrupt_bio_byte 1 x 1 0", "Invalid corrupt bio direction (r or w): 'x'")]
    [InlineData("ram:1M 0 1 1 5 corrupt_bio_byte 1 r 256 0", "Invalid corrupt value to write into bio byte (0-255): '256'")]
    [InlineData("ram:1M 0 1 1 5 corrupt_bio_byte 1 r 1 -1", "Invalid corrupt bio flags mask: '-1'")]
    [InlineData("ram:1M 0 1 1 6 drop_writes corrupt_bio_byte 1 w 1 0", "drop_writes is incompatible with corrupt_bio_byte with the WRITE flag set")]
    [InlineData("ram:1M 0 1 1 6 error_writes corrupt_bio_byte 1 w 1 0", "error_writes is incompatible with corrupt_bio_byte with the WRITE flag set")]
    [InlineData("ram:1M 0 1 1 6 error_reads corrupt_bio_byte 1 r 1 0", "error_reads is incompatible with corrupt_bio_byte with the READ flag set")]
    [InlineData("ram:1M 2040 1 1", "Device too small: ram0 has 2048 sectors, the line needs 2040 + 2040")]
    [InlineData("nodev:1 0 1 1", "Device lookup failed: nodev:1")]
    public void BadFlakeyLinesSayWhichLineAndWhy(string args, string message)
    {
        var e = Assert.Throws<FormatException>(() => _set.Open(Table("# flakey", $"0 2040 flakey {args}")));
        Assert.Contains($"line 2: flakey: {message}", e.Message);
        Assert.Empty(_set.OpenDevices);
    }
}
