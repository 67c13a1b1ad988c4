using PfnBlock.Block;
using PfnBlock.Devices;
using PfnBlock.Devices.Btt;
using PfnBlock.Memory;
using PfnBlock.Namespaces.Btt;

namespace PfnBlock.Tests.Btt;

/// <summary>
/// Byte compatibility with PMDK both ways: pools made by <c>pmempool create blk</c> and written by
/// pfnblock pass <c>pmempool check</c>, show right in <c>pmempool info</c> and read back identically
/// through libpmemblk; pools written by libpmemblk read back identically through pfnblock.
/// Needs pmempool (pmdk-tools), gcc and libpmemblk-dev, which test.sh installs.
/// </summary>
public sealed class PmemblkInteropTests : IDisposable
{
    private static readonly Lazy<string> BlkIo = new(CompileBlkIo);
    private readonly BttScratch _s = new(frames: 80);

    public void Dispose() => _s.Dispose();

    private static (int Exit, string Output) Run(string file, params string[] args)
    {
        (int exit, string output, string err) = BttScratch.RunProcess(file, args);
        return (exit, output + err);
    }

    private static string CompileBlkIo()
    {
        string exe = Path.Combine(Path.GetTempPath(), $"pfnblock-blkio-{Environment.ProcessId}");
        string src = Path.Combine(AppContext.BaseDirectory, "Btt", "blkio.c");
        (int exit, string output) = Run("gcc", "-O2", "-Wall", "-o", exe, src, "-lpmemblk");
        Assert.True(exit == 0, $"compiling blkio.c against libpmemblk failed (test.sh installs gcc and libpmemblk-dev): {output}");
        AppDomain.CurrentDomain.ProcessExit += (_, _) => File.Delete(exe);
        return exe;
    }

    private string CreatePool(uint bsize)
    {
        string path = _s.File("pool");
        (int exit, string output) = Run("pmempool", "create", "blk", bsize.ToString(), path);
        Assert.True(exit == 0, output);
        return path;
    }

    private static byte[] RandomBlocks(int count, uint bsize, int seed)
    {
        byte[] data = new byte[count * bsize];
        new Random(seed).NextBytes(data);
        return data;
    }

    private void WriteThroughPfnblock(string pool, byte[] data, uint bsize)
    {
        using BttDevice dev = Assert.IsType<BttDevice>(DeviceSpec.Parse("pmem:" + pool).Open());
        FrameRun buf = _s.Frames(data.Length / 4096 + 1);
        data.CopyTo(_s.Span(buf, data.Length));
        Assert.Equal(BlockStatus.Ok, BttScratch.Io(dev, BioOp.Write, 0, buf, data.Length));
    }

    private byte[] ReadThroughPfnblock(string pool, int length)
    {
        using BttDevice dev = Assert.IsType<BttDevice>(DeviceSpec.Parse("pmem:" + pool).Open());
        FrameRun buf = _s.Frames(length / 4096 + 1);
        Assert.Equal(BlockStatus.Ok, BttScratch.Io(dev, BioOp.Read, 0, buf, length));
        return _s.Span(buf, length).ToArray();
    }

    [Theory]
    [InlineData(4096u)]
    [InlineData(512u)]
    public void FreshPoolWrittenByPfnblockPassesPmempoolAndReadsBackThroughLibpmemblk(uint bsize)
    {
        string pool = CreatePool(bsize);
        using (BttDevice dev = Assert.IsType<BttDevice>(DeviceSpec.Parse("pmem:" + pool).Open()))
        {
            Assert.False(dev.Btt.IsLaidOut);
            Assert.Equal((int)bsize, dev.Limits.LogicalBlockSize);
        }
        Assert.Contains("no BTT layout yet", string.Join("\n", BttCheck.Run(pool, false).Findings.Select(f => f.Message)));
        byte[] data = RandomBlocks(40, bsize, 1);
        WriteThroughPfnblock(pool, data, bsize);
        // Rewrite block 1 (rotates a lane's free block) and zero block 3, as the reference script does.
        byte[] again = RandomBlocks(2, bsize, 2);
        Array.Copy(again, 0, data, bsize, bsize);
        using (BttDevice dev = Assert.IsType<BttDevice>(DeviceSpec.Parse("pmem:" + pool).Open()))
        {
            Assert.True(dev.Btt.IsLaidOut);
            FrameRun buf = _s.Frames(1);
            again.AsSpan(0, (int)bsize).CopyTo(_s.Span(buf, (int)bsize));
            Assert.Equal(BlockStatus.Ok, BttScratch.Io(dev, BioOp.Write, bsize, buf, (int)bsize));
            Assert.Equal(BlockStatus.Ok, BttScratch.Io(dev, BioOp.WriteZeroes, 3 * bsize, buf, (int)bsize));
            Array.Clear(data, 3 * (int)bsize, (int)bsize);
        }
        Assert.True(BttCheck.Run(pool, false).Consistent);

        (int exit, string check) = Run("pmempool", "check", "-v", pool);
        Assert.True(exit == 0 && check.Contains("consistent") && !check.Contains("not consistent"), check);
        (exit, string info) = Run("pmempool", "info", "-m", pool);
        Assert.True(exit == 0, info);
        Assert.Contains("BTT_ARENA_INFO", Run("pmempool", "info", "-x", pool).Output);
        Assert.Matches(@"Block size\s*:\s*" + bsize, info);
        Assert.Matches(@"Internal LBA size\s*:\s*" + bsize, info);
        Assert.Matches(@"Free blocks\s*:\s*256", info);
        Assert.Matches(@"0000000003: 0x[0-9a-f]{8} state: zero", info);

        string outFile = _s.File("out");
        (exit, string read) = Run(BlkIo.Value, "read", pool, outFile, "40");
        Assert.True(exit == 0, read);
        Assert.Equal(data, File.ReadAllBytes(outFile));
    }

    [Fact]
    public void PoolWrittenByLibpmemblkReadsBackIdenticallyThroughPfnblock()
    {
        const uint bsize = 4096;
        string pool = CreatePool(bsize);
        byte[] data = RandomBlocks(30, bsize, 3);
        string inFile = _s.File("in");
        File.WriteAllBytes(inFile, data);
        (int exit, string output) = Run(BlkIo.Value, "write", pool, inFile);
        Assert.True(exit == 0, output);
        (exit, output) = Run(BlkIo.Value, "zero", pool, "4");
        Assert.True(exit == 0, output);
        Array.Clear(data, 4 * (int)bsize, (int)bsize);
        Assert.Equal(data, ReadThroughPfnblock(pool, data.Length));
        BttCheckReport report = BttCheck.Run(pool, false);
        Assert.True(report.Consistent, string.Join("\n", report.Findings.Select(f => f.Message)));

        // And back: our writes over libpmemblk's layout still pass pmempool check.
        byte[] ours = RandomBlocks(30, bsize, 4);
        WriteThroughPfnblock(pool, ours, bsize);
        (exit, output) = Run("pmempool", "check", "-v", pool);
        Assert.True(exit == 0 && !output.Contains("not consistent"), output);
        string outFile = _s.File("out");
        (exit, output) = Run(BlkIo.Value, "read", pool, outFile, "30");
        Assert.True(exit == 0, output);
        Assert.Equal(ours, File.ReadAllBytes(outFile));
    }

    [Fact]
    public void OtherPmdkPoolTypesAreRefusedClearly()
    {
        string path = _s.File("obj");
        (int exit, string output) = Run("pmempool", "create", "obj", path);
        Assert.True(exit == 0, output);
        var e = Assert.Throws<PfnBlock.Namespaces.InvalidNamespaceException>(() => DeviceSpec.Parse("pmem:" + path).Open());
        Assert.Contains("pmemobj pool, not a pmemblk pool", e.Message);
    }

    [Fact]
    public void CorruptPoolHeaderChecksumIsRefused()
    {
        string pool = CreatePool(4096);
        using (var f = new FileStream(pool, FileMode.Open, FileAccess.Write)) { f.Position = 200; f.WriteByte(0x5A); }
        var e = Assert.Throws<PfnBlock.Namespaces.InvalidNamespaceException>(() => DeviceSpec.Parse("pmem:" + pool).Open());
        Assert.Contains("pool header checksum mismatch", e.Message);
    }
}
