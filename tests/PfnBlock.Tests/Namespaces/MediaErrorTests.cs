using System.Diagnostics;
using System.Text.Json;
using PfnBlock.Block;
using PfnBlock.Devices;
using PfnBlock.Devices.Btt;
using PfnBlock.Devices.Pmem;
using PfnBlock.Memory;
using PfnBlock.Namespaces;
using PfnBlock.Tests.Btt;

namespace PfnBlock.Tests.Namespaces;

/// <summary>
/// Media errors of raw and sector namespaces: reads of bad blocks fail with a media error, whole
/// writes repair them, the list persists (across reopen and SIGKILL), damage to it is caught on
/// open, and the CLI injects, lists, clears and checks them.
/// </summary>
public sealed class MediaErrorTests : IDisposable
{
    private readonly BttScratch _s = new(frames: 4);
    private readonly Scratch _scratch = new();

    public void Dispose()
    {
        _s.Dispose();
        _scratch.Dispose();
    }

    private static (int Exit, string Out, string Err) Cli(params string[] args) => ChildProcess.Run(ChildProcess.CliDll, args);

    private string RawNamespace(uint sectorSize = 512) => _scratch.NewNamespace(4 << 20, sectorSize);

    /// <summary>Fills sectors [first, +count) of <paramref name="dev"/> with a byte per sector (its number + 1).</summary>
    private void Stamp(IBlockDevice dev, FrameRun buf, long first, int count)
    {
        for (long s = first; s < first + count; s++)
        {
            _s.Span(buf, 512).Fill((byte)(s + 1));
            Assert.Equal(BlockStatus.Ok, BttScratch.Io(dev, BioOp.Write, s * 512, buf, 512));
        }
    }

    private BlockStatus Read(IBlockDevice dev, FrameRun buf, long sector, int sectors) => BttScratch.Io(dev, BioOp.Read, sector * 512, buf, sectors * 512);

    [Fact]
    public void ReadsOfBadBlocksFailAndWholeWritesRepairThem()
    {
        string path = RawNamespace();
        FrameRun buf = _s.Frames(2);
        using (var dev = PmemDevice.Open(path))
        {
            Stamp(dev, buf, 0, 32);
            Assert.Equal("10+3", dev.Namespace.AddBadBlocks(10, 3).ToString());
            Assert.True(dev.FindBadSectors(0, 11, out long badStart, out long badCount));
            Assert.Equal((10, 3), (badStart, badCount));
            Assert.False(dev.FindBadSectors(13, 100, out _, out _));
            Assert.False(dev.FindBadSectors(0, 10, out _, out _));
            Assert.Equal(BlockStatus.MediaError, Read(dev, buf, 10, 1));
            Assert.Equal(BlockStatus.MediaError, Read(dev, buf, 12, 1));
            Assert.Equal(BlockStatus.MediaError, Read(dev, buf, 8, 8)); // a read touching one bad block fails whole
            Assert.Equal(BlockStatus.Ok, Read(dev, buf, 0, 10));        // the neighbours read fine
            Assert.True(_s.Span(buf, 512 * 10)[^512..].IndexOfAnyExcept((byte)10) < 0);
            Assert.Equal(BlockStatus.Ok, Read(dev, buf, 13, 3));
            Assert.True(_s.Span(buf, 512).IndexOfAnyExcept((byte)14) < 0);
            // No direct access to a page holding a bad block: a DAX user would read poison.
            Assert.Equal(0, dev.DirectAccess(1, 1, out _));
            Assert.Equal(1, dev.DirectAccess(0, 1, out DaxRange ok));
            ok.Unpin();

            // Writing block 11 repairs it alone.
            _s.Span(buf, 512).Fill(0x77);
            Assert.Equal(BlockStatus.Ok, BttScratch.Io(dev, BioOp.Write, 11 * 512, buf, 512));
            Assert.Equal("10+1 12+1", dev.Namespace.BadBlocks.ToString());
            Assert.Equal(BlockStatus.Ok, Read(dev, buf, 11, 1));
            Assert.True(_s.Span(buf, 512).IndexOfAnyExcept((byte)0x77) < 0);
            Assert.Equal(BlockStatus.MediaError, Read(dev, buf, 10, 1));
        }
        // The list outlives the process's view of it.
        using (var dev = PmemDevice.Open(path))
        {
            Assert.Equal("10+1 12+1", dev.Namespace.BadBlocks.ToString());
            Assert.Equal(BlockStatus.MediaError, Read(dev, buf, 12, 1));
            // Write-zeroes over whole sectors repairs too (the kernel's pmem clears poison on any write).
            Assert.Equal(BlockStatus.Ok, BttScratch.Io(dev, BioOp.WriteZeroes, 8 * 512, buf, 8 * 512));
            Assert.True(dev.Namespace.BadBlocks.IsEmpty);
            Assert.Equal(BlockStatus.Ok, Read(dev, buf, 8, 8));
            Assert.True(_s.Span(buf, 8 * 512).IndexOfAnyExcept((byte)0) < 0);
        }
        Assert.True(MediaErrors.List(path).IsEmpty);
    }

    [Fact]
    public void ABadBlockInsideALargerSectorFailsTheWholeSectorUntilItIsWritten()
    {
        string path = RawNamespace(sectorSize: 4096);
        FrameRun buf = _s.Frames(1);
        using var dev = PmemDevice.Open(path);
        dev.Namespace.AddBadBlocks(9, 1); // the second 512-byte block of sector 1
        Assert.Equal(BlockStatus.MediaError, BttScratch.Io(dev, BioOp.Read, 4096, buf, 4096));
        Assert.Equal(BlockStatus.Ok, BttScratch.Io(dev, BioOp.Read, 0, buf, 4096));
        Assert.Equal(BlockStatus.Ok, BttScratch.Io(dev, BioOp.Write, 4096, buf, 4096));
        Assert.True(dev.Namespace.BadBlocks.IsEmpty);
    }

    [Fact]
    public void ClearErrorsZeroesWhatWasLost()
    {
        string path = RawNamespace();
        FrameRun buf = _s.Frames(1);
        using (var dev = PmemDevice.Open(path)) Stamp(dev, buf, 0, 8);
        Assert.Equal("2+4", MediaErrors.Inject(path, 2, 4).ToString());
        Assert.Equal("2+1 5+1", MediaErrors.Clear(path, 3, 2).ToString());
        Assert.True(MediaErrors.Clear(path).IsEmpty);
        using (var dev = PmemDevice.Open(path))
        {
            Assert.Equal(BlockStatus.Ok, Read(dev, buf, 0, 8));
            byte[] all = _s.Span(buf, 8 * 512).ToArray();
            for (int s = 0; s < 8; s++)
                Assert.True(all.AsSpan(s * 512, 512).IndexOfAnyExcept(s is >= 2 and < 6 ? (byte)0 : (byte)(s + 1)) < 0, $"sector {s}");
        }
    }

    [Fact]
    public void InjectionsOutsideTheDataAreaAreRefusedAndChangeNothing()
    {
        string path = RawNamespace();
        long blocks;
        using (var ns = PmemNamespace.Open(path)) blocks = ns.DataSize >> 9;
        byte[] before = File.ReadAllBytes(path);
        Assert.Contains("outside the data area", Assert.Throws<ArgumentException>(() => MediaErrors.Inject(path, blocks, 1)).Message);
        Assert.Contains("reach past the end", Assert.Throws<ArgumentException>(() => MediaErrors.Inject(path, blocks - 1, 2)).Message);
        Assert.Contains("names no block", Assert.Throws<ArgumentException>(() => MediaErrors.Inject(path, 0, 0)).Message);
        Assert.Equal(before, File.ReadAllBytes(path));
        MediaErrors.Inject(path, blocks - 1, 1);
        Assert.Equal($"{blocks - 1}+1", MediaErrors.List(path).ToString());
    }

    [Fact]
    public void ADamagedListIsDetectedOnOpen()
    {
        string path = RawNamespace();
        MediaErrors.Inject(path, 7, 2);
        long size = new FileInfo(path).Length;
        long table = BadBlockList.TableOffset + 24; // the first run's start

        // Damage to the primary alone: the backup holds the same list; opening repairs the primary.
        Poke(path, table, 0x40);
        using (var ns = PmemNamespace.Open(path))
        {
            Assert.True(ns.RecoveredFromBackup);
            Assert.Equal("7+2", ns.BadBlocks.ToString());
        }

        // Damage to both copies: a clear error, and the file is left as it was.
        Poke(path, table, 0x40);
        Poke(path, NamespaceInfoBlock.BackupOffset(size) + table, 0x40);
        byte[] before = File.ReadAllBytes(path);
        var e = Assert.Throws<InvalidNamespaceException>(() => PmemNamespace.Open(path));
        Assert.Contains("checksum mismatch", e.Message);
        Assert.Equal(before, File.ReadAllBytes(path));

        // A table damaged under a valid info block checksum (a bug, not a torn write) is caught by its own checks.
        foreach (long at in new[] { 0L, NamespaceInfoBlock.BackupOffset(size) })
        {
            byte[] block = new byte[NamespaceInfoBlock.Size];
            using (var f = new FileStream(path, FileMode.Open, FileAccess.ReadWrite))
            {
                f.Position = at;
                f.ReadExactly(block);
                block[table] ^= 0x40; // undo the poke above: the table is intact again ...
                block[BadBlockList.TableOffset + 10] = 2; // ... but claims two runs under its old checksum
                Fletcher(block);
                f.Position = at;
                f.Write(block);
            }
        }
        e = Assert.Throws<InvalidNamespaceException>(() => PmemNamespace.Open(path));
        Assert.Contains("bad-block table: checksum mismatch", e.Message);
        (int exit, _, string err) = Cli("namespace", "info", "--path", path);
        Assert.Equal(1, exit);
        Assert.Contains("bad-block table", err);
    }

    /// <summary>Recomputes an info block's own checksum (the last 8 bytes).</summary>
    private static void Fletcher(byte[] block)
    {
        ulong sum = Fletcher64.ComputeSkipping(block, NamespaceInfoBlock.ChecksumOffset);
        System.Buffers.Binary.BinaryPrimitives.WriteUInt64LittleEndian(block.AsSpan(NamespaceInfoBlock.ChecksumOffset), sum);
    }

    private static void Poke(string path, long offset, byte xor)
    {
        using var f = new FileStream(path, FileMode.Open, FileAccess.ReadWrite);
        f.Position = offset;
        int b = f.ReadByte();
        f.Position = offset;
        f.WriteByte((byte)(b ^ xor));
    }

    [Fact]
    public void AKilledUpdateLeavesTheOldListOrTheNew()
    {
        string path = RawNamespace();
        var rng = new Random(14);
        for (int round = 0; round < 4; round++)
        {
            using Process child = ChildProcess.Start(ChildProcess.CrashChildDll, "badblocks", path);
            try
            {
                // Let it change the list a varying number of times, then kill it wherever it is.
                int acks = rng.Next(20, 400);
                for (int i = 0; i < acks; i++)
                {
                    if (child.StandardOutput.ReadLine()?.StartsWith("ack ", StringComparison.Ordinal) == true) continue;
                    child.WaitForExit();
                    Assert.Fail($"crash child stopped early: {child.StandardError.ReadToEnd()}");
                }
            }
            finally
            {
                child.Kill();
                child.WaitForExit();
            }
            // The list that survived is one the child made: {0, 2, …, 2(k-1)}.
            BadBlockList list = MediaErrors.List(path);
            Assert.True(list.Ranges.Count <= 100, list.ToString());
            for (int i = 0; i < list.Ranges.Count; i++) Assert.Equal(new BadBlockRange(2 * i, 1), list.Ranges[i]);
            using var ns = PmemNamespace.Open(path);
            Assert.Equal(list, ns.BadBlocks);
        }
    }

    [Fact]
    public void SectorNamespacesKeepTheirErrorsInTheBtt()
    {
        string path = _s.SectorNamespace("media", sectorSize: 4096);
        FrameRun buf = _s.Frames(1);
        using (var dev = Assert.IsType<BttDevice>(DeviceSpec.Parse("pmem:" + path).Open()))
        {
            _s.Span(buf, 4096).Fill(0x5a);
            for (int s = 0; s < 4; s++) Assert.Equal(BlockStatus.Ok, BttScratch.Io(dev, BioOp.Write, s * 4096, buf, 4096));
        }
        Assert.Contains("whole 4096-byte sectors", Assert.Throws<ArgumentException>(() => MediaErrors.Inject(path, 9, 1)).Message);
        Assert.Equal("8+16", MediaErrors.Inject(path, 8, 16).ToString()); // sectors 1 and 2
        using (var dev = Assert.IsType<BttDevice>(DeviceSpec.Parse("pmem:" + path).Open()))
        {
            Assert.Equal(BlockStatus.MediaError, BttScratch.Io(dev, BioOp.Read, 4096, buf, 4096));
            Assert.Equal(BlockStatus.Ok, BttScratch.Io(dev, BioOp.Read, 0, buf, 4096));
            // A sector in error is data to the allocation map (its reads fail: never "zeros").
            Assert.Equal(AllocationState.Data, dev.QueryAllocation(8, 8, out _));
            Assert.True(dev.FindBadSectors(0, 100, out long badStart, out long badCount));
            Assert.Equal((8, 16), (badStart, badCount));
            Assert.False(dev.FindBadSectors(24, 100, out _, out _));
            Assert.Equal(BlockStatus.Ok, BttScratch.Io(dev, BioOp.Write, 4096, buf, 4096));
            Assert.Equal(BlockStatus.Ok, BttScratch.Io(dev, BioOp.Read, 4096, buf, 4096));
        }
        Assert.Equal("16+8", MediaErrors.List(path).ToString());
        Assert.True(MediaErrors.Clear(path).IsEmpty);
        using (var dev = Assert.IsType<BttDevice>(DeviceSpec.Parse("pmem:" + path).Open()))
        {
            Assert.Equal(BlockStatus.Ok, BttScratch.Io(dev, BioOp.Read, 2 * 4096, buf, 4096));
            Assert.True(_s.Span(buf, 4096).IndexOfAnyExcept((byte)0) < 0); // cleared: zeros, its data went with the error
            Assert.Equal(AllocationState.Zero, dev.QueryAllocation(16, 8, out _));
        }
    }

    [Theory]
    [InlineData("raw")]
    [InlineData("sector")]
    public void TheCliInjectsListsChecksAndClears(string mode)
    {
        string path = mode == "raw" ? RawNamespace() : _s.SectorNamespace("cli", sectorSize: 512);
        (int exit, string output, string err) = Cli("namespace", "inject-error", "--path", path, "--block", "16", "--count", "4");
        Assert.True(exit == 0, err);
        Assert.Contains("16+4", output);
        Assert.Equal(0, Cli("namespace", "inject-error", "--path", path, "--block", "40").Exit);

        (exit, output, _) = Cli("namespace", "info", "--path", path, "--json");
        Assert.Equal(0, exit);
        using (JsonDocument doc = JsonDocument.Parse(output))
        {
            Assert.Equal(5, doc.RootElement.GetProperty("badblock_count").GetInt64());
            JsonElement[] runs = [.. doc.RootElement.GetProperty("badblocks").EnumerateArray()];
            Assert.Equal([(16L, 4L), (40L, 1L)], runs.Select(r => (r.GetProperty("offset").GetInt64(), r.GetProperty("length").GetInt64())));
        }
        Assert.Contains("badblocks: 5 in 2 run(s): 16+4 40+1", Cli("namespace", "info", "--path", path).Out);

        (exit, output, _) = Cli("check", "--path", path);
        Assert.Equal(0, exit); // the layout is sound; the data of those blocks is lost
        Assert.Contains("media errors: 5 bad 512-byte block(s) in 2 run(s)", output);
        (_, output, _) = Cli("check", "--path", path, "--json");
        using (JsonDocument doc = JsonDocument.Parse(output)) Assert.Equal(5, doc.RootElement.GetProperty("badblock_count").GetInt64());

        (exit, output, _) = Cli("namespace", "clear-errors", "--path", path, "--block", "16", "--count", "2");
        Assert.Equal(0, exit);
        Assert.Contains("2 bad block(s) cleared", output);
        Assert.Contains("18+2 40+1", output);
        (exit, output, _) = Cli("namespace", "clear-errors", "--path", path);
        Assert.Equal(0, exit);
        Assert.Contains("bad blocks now: none", output);
        Assert.Contains("badblocks: none", Cli("namespace", "info", "--path", path).Out);

        (exit, _, err) = Cli("namespace", "inject-error", "--path", path, "--block", "99999999");
        Assert.Equal(2, exit); // a usage error
        Assert.Contains("outside", err);
    }
}
