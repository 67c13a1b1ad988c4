using PfnBlock.Block;

namespace PfnBlock.Tests.Nbd;

/// <summary>Real NBD clients (libnbd tools, qemu, fio) against the in-process server; test.sh installs them.</summary>
public sealed class NbdInteropTests
{
    private const long Size = 64 << 20;

    [Fact]
    public void NbdinfoListsEveryExport()
    {
        using var server = new NbdTestServer(("alpha", NbdTestServer.Ram(Size), false), ("beta", NbdTestServer.Ram(Size), true));
        string list = Tool.Run("nbdinfo", "--list", server.Uri("alpha"));
        Assert.Contains("export=\"alpha\"", list);
        Assert.Contains("export=\"beta\"", list);
        string beta = Tool.Run("nbdinfo", server.Uri("beta"));
        Assert.Contains("is_read_only: true", beta);
        Assert.Contains("base:allocation", beta);
    }

    [Fact]
    public void NbdinfoMapReportsAllDataWithoutAnAllocationMap()
    {
        // A null device cannot tell what it holds (its reads return no zeros): everything is data.
        var dev = new PfnBlock.Devices.Null.NullDevice(Size);
        using var server = new NbdTestServer(("null0", dev, false));
        string map = Tool.Run("nbdinfo", "--map", server.Uri("null0"));
        string[] fields = map.Trim().Split((char[])[' ', '\t'], StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal(["0", dev.CapacityBytes.ToString(), "0", "data"], fields);
    }

    [Theory]
    [InlineData("pmem")]
    [InlineData("ram")]
    public void NbdcopyRoundTripsBothWays(string kind)
    {
        string? nsPath = null;
        IBlockDevice dev;
        if (kind == "pmem") (dev, nsPath) = NbdTestServer.Pmem(Size + (4 << 20));
        else dev = NbdTestServer.Ram(Size);
        using var server = new NbdTestServer(("disk", dev, false));
        if (nsPath is not null) server.DeleteOnDispose(nsPath);
        long size = dev.CapacityBytes;
        string src = Tool.RandomFile(server.Directory, size, seed: 1);
        string back = Path.Combine(server.Directory, "back.img");

        Tool.Run("nbdcopy", src, server.Uri("disk"));
        Tool.Run("nbdcopy", server.Uri("disk"), back);

        Assert.Equal(size, new FileInfo(back).Length);
        Assert.Equal(Tool.Sha256(src, size), Tool.Sha256(back, size));
    }

    [Fact]
    public void QemuImgInfoConvertAndCompare()
    {
        using var server = new NbdTestServer(("disk", NbdTestServer.Ram(Size), false));
        string uri = server.Uri("disk");
        string info = Tool.Run("qemu-img", "info", "--output=json", uri);
        Assert.Contains($"\"virtual-size\": {Size}", info);

        string src = Tool.RandomFile(server.Directory, Size, seed: 2);
        Tool.Run("qemu-img", "convert", "-n", "-f", "raw", "-O", "raw", src, uri);
        Tool.Run("qemu-img", "compare", "-f", "raw", "-F", "raw", src, uri);
        string copy = Path.Combine(server.Directory, "copy.img");
        Tool.Run("qemu-img", "convert", "-f", "raw", "-O", "raw", uri, copy);
        Assert.Equal(Tool.Sha256(src, Size), Tool.Sha256(copy, Size));

        // Change one byte on the export: compare must now see the difference (exit 1).
        Tool.Run("qemu-io", "-f", "raw", "-c", "write -P 0x5a 12345 1", uri);
        (int code, string output, _) = Tool.RunAllowingFailure("qemu-img", "compare", "-f", "raw", "-F", "raw", src, uri);
        Assert.True(code == 1, $"qemu-img compare exit {code}: {output}");
    }

    [Fact]
    public void QemuIoPatternsAtUnalignedOffsets()
    {
        (IBlockDevice dev, string path) = NbdTestServer.Pmem(Size);
        using var server = new NbdTestServer(("pmem0", dev, false));
        server.DeleteOnDispose(path);
        string uri = server.Uri("pmem0");
        string written = Tool.Run("qemu-io", "-f", "raw",
            "-c", "write -P 0xab 1000 5000",
            "-c", "write -P 0xcd 4097 3",
            "-c", "write -P 0x11 65535 131073",
            "-c", "flush",
            "-c", "write -z 300000 7000",
            uri);
        Assert.DoesNotContain("error", written, StringComparison.OrdinalIgnoreCase);
        // A second connection reads back what the first wrote.
        string read = Tool.Run("qemu-io", "-f", "raw",
            "-c", "read -P 0xab 1000 3097",
            "-c", "read -P 0xcd 4097 3",
            "-c", "read -P 0xab 4100 1900",
            "-c", "read -P 0x11 65535 131073",
            "-c", "read -P 0 300000 7000",
            uri);
        Assert.DoesNotContain("fail", read, StringComparison.OrdinalIgnoreCase);
        Assert.Equal(5, read.Split("read ").Length - 1);
    }

    [Fact]
    public void FioVerifiesRandomWritesOverTwoConnections()
    {
        using var server = new NbdTestServer(("disk", NbdTestServer.Ram(Size), false));
        Tool.Run("fio", "--name=verify", "--ioengine=nbd", $"--uri={server.Uri("disk")}", "--rw=randwrite", "--bs=4k",
            "--size=16M", "--numjobs=2", "--offset_increment=16M", "--iodepth=16", "--verify=crc32c", "--do_verify=1",
            "--verify_fatal=1", "--group_reporting");
        Tool.Run("fio", "--name=verify-big", "--ioengine=nbd", $"--uri={server.Uri("disk")}", "--rw=write", "--bs=1m",
            "--size=32M", "--iodepth=4", "--verify=md5", "--do_verify=1", "--verify_fatal=1");
    }
}
