using PfnBlock.Block;
using PfnBlock.Devices;
using PfnBlock.Exports.Nbd;
using PfnBlock.Namespaces;

namespace PfnBlock.Tests.Nbd;

/// <summary>
/// Bad blocks injected into a namespace, seen by NBD clients (qemu-io and the raw client) through
/// the device and through a linear target: EIO on the bad sectors, data elsewhere, and a rewrite
/// of whole sectors repairs them (a partial one does not).
/// </summary>
public sealed class NbdMediaErrorTests : IDisposable
{
    private const long M = 1 << 20;
    private readonly Scratch _scratch = new();
    private readonly DeviceSet _set = new();

    public void Dispose()
    {
        _set.Dispose();
        _scratch.Dispose();
    }

    /// <summary>A 16 MiB raw namespace with bad 512-byte blocks 2048..2055 (the 4 KiB at 1 MiB), exported directly or through a linear target.</summary>
    private (IBlockDevice Device, string Path) Open(bool linear)
    {
        string ns = _scratch.NewNamespace(16 * M);
        MediaErrors.Inject(ns, 2048, 8);
        if (!linear) return (_set.Open("pmem:" + DeviceSpec.Quote(ns)), ns);
        // The linear target starts 1 MiB in: the bad blocks are at its sector 0.
        string table = _scratch.NewPath("t.table");
        File.WriteAllText(table, $"0 {8 * M >> 9} linear pmem:{DeviceSpec.Quote(ns)} 2048\n");
        return (_set.Open("table:" + DeviceSpec.Quote(table)), ns);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void QemuIoSeesEioOnTheBadSectorsOnlyAndARewriteClearsThem(bool linear)
    {
        (IBlockDevice dev, string ns) = Open(linear);
        long bad = linear ? 0 : 1 * M;
        // The bad sectors, found without reading them, in the exported device's numbering.
        Assert.True(((IBadSectorMap)dev).FindBadSectors(0, 1 << 14, out long badStart, out long badCount));
        Assert.Equal((bad >> 9, 8), (badStart, badCount));
        using var server = new NbdTestServer(("disk", dev, false));
        string uri = server.Uri("disk");
        Tool.Run("qemu-io", "-f", "raw", "-c", $"write -P 0x5a {bad + 4096} 4096", uri);

        // Reads of the bad sector fail with EIO, also when they only touch it; the neighbour reads fine.
        foreach (string read in new[] { $"read {bad} 512", $"read {bad + 3584} 1024", $"read {bad} 64k" })
        {
            (_, string output, string error) = Tool.RunAllowingFailure("qemu-io", "-f", "raw", "-c", read, uri);
            Assert.Contains("Input/output error", output + error);
        }
        string ok = Tool.Run("qemu-io", "-f", "raw", "-c", $"read -P 0x5a {bad + 4096} 4096", uri);
        Assert.DoesNotContain("fail", ok, StringComparison.OrdinalIgnoreCase);

        // Rewriting half of the bad blocks repairs those; the others still fail.
        Tool.Run("qemu-io", "-f", "raw", "-c", $"write -P 0x77 {bad} 2048", uri);
        string repaired = Tool.Run("qemu-io", "-f", "raw", "-c", $"read -P 0x77 {bad} 2048", uri);
        Assert.DoesNotContain("fail", repaired, StringComparison.OrdinalIgnoreCase);
        (_, string still, string stillErr) = Tool.RunAllowingFailure("qemu-io", "-f", "raw", "-c", $"read {bad + 2048} 512", uri);
        Assert.Contains("Input/output error", still + stillErr);
        Assert.Equal("2052+4", MediaErrors.List(ns).ToString());
    }

    [Fact]
    public void APartialSectorWriteFailsAndLeavesTheSectorBad()
    {
        (IBlockDevice dev, _) = Open(linear: false);
        var pmem = (PfnBlock.Devices.Pmem.PmemDevice)dev;
        using var server = new NbdTestServer(("disk", dev, false));
        using NbdRawClient c = NbdRawClient.Connect(server.SocketPath);
        c.Negotiate("disk", structured: true, blockSizes: false); // no block sizes: unaligned writes are read-modify-write
        byte[] buf = new byte[4096];
        c.Request(NbdCommand.Write, 0, 1, 1 * M + 100, 100, buf.AsSpan(0, 100));
        Assert.Equal(NbdError.Io, c.ReadReply(buf).Error);
        Assert.Equal("2048+8", pmem.Namespace.BadBlocks.ToString());
        c.Request(NbdCommand.Read, 0, 2, 1 * M, 512);
        Assert.Equal(NbdError.Io, c.ReadReply(buf).Error);
        // A whole-sector write repairs; a zeroing of whole sectors too.
        c.Request(NbdCommand.Write, 0, 3, 1 * M, 512, buf.AsSpan(0, 512));
        Assert.Equal(NbdError.None, c.ReadReply(buf).Error);
        c.Request(NbdCommand.WriteZeroes, 0, 4, 1 * M + 512, 3584);
        Assert.Equal(NbdError.None, c.ReadReply(buf).Error);
        Assert.True(pmem.Namespace.BadBlocks.IsEmpty);
        c.Request(NbdCommand.Read, 0, 5, 1 * M, 4096);
        Assert.Equal(NbdError.None, c.ReadReply(buf).Error);
    }
}
