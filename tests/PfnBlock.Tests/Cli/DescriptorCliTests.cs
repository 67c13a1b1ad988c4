using System.Security.Cryptography;
using System.Text.Json;

namespace PfnBlock.Tests.Cli;

/// <summary>
/// <c>pfnblock memmap</c> and <c>pfnblock copy</c> as a user runs them: memmap describes 1 TiB
/// from small measured namespaces (the thread's 16 GiB per TiB for a dense map, 0 DRAM for the
/// device map) without allocating it; copy moves a file into a namespace and back through
/// pinned frames, byte for byte, and refuses sizes O_DIRECT cannot transfer.
/// </summary>
public sealed class DescriptorCliTests : IDisposable
{
    private readonly Scratch _scratch = new();
    public void Dispose() => _scratch.Dispose();

    private static (int Exit, string Out, string Err) Cli(params string[] args) => ChildProcess.Run(ChildProcess.CliDll, args);

    [Fact]
    public void MemmapDescribesATebibyteFromASmallMeasuredNamespace()
    {
        string dir = _scratch.NewDirectory("memmap");
        (int exit, string stdout, string stderr) = Cli("memmap", "--size", "1T", "--measure", "8M", "--ops", "1000", "--rounds", "1", "--dir", dir, "--json");
        Assert.True(exit == 0, stderr);
        using JsonDocument doc = JsonDocument.Parse(stdout);
        var rows = doc.RootElement.EnumerateArray().ToDictionary(e => e.GetProperty("map").GetString()!, e => e);
        Assert.Equal(["none", "dense", "device", "huge", "temporary", "on-demand"], rows.Keys);
        long Dram(string map) => rows[map].GetProperty("dram_bytes").GetInt64();
        long Device(string map) => rows[map].GetProperty("device_bytes").GetInt64();
        foreach (JsonElement row in rows.Values)
        {
            Assert.True(row.GetProperty("extrapolated").GetBoolean());
            Assert.Equal(1L << 40, row.GetProperty("target_bytes").GetInt64());
            Assert.True(row.GetProperty("pin_unpin_ns").GetDouble() > 0);
        }
        Assert.Equal(16L << 30, Dram("dense"));                     // 64 B per 4 KiB
        Assert.Equal(0, Dram("device"));
        Assert.InRange(Device("device"), 16L << 30, (16L << 30) * 102 / 100); // plus header, checksums, rounding
        Assert.InRange(Dram("huge"), 32L << 20, 33L << 20);         // 64 B per 2 MiB
        Assert.Equal(0, Dram("on-demand"));                          // nothing touched at open
        Assert.Equal(16L << 30, rows["on-demand"].GetProperty("dram_bytes_after_pins").GetInt64()); // random pins touch every page
        Assert.InRange(Dram("none"), 1, 1 << 20);                    // a pin table, whatever the size
        Assert.InRange(Dram("temporary"), 1, 1 << 20);               // a pool, whatever the size
        Assert.Empty(Directory.GetFiles(dir));                       // the measured namespaces are gone
    }

    [Fact]
    public void CopyMovesAFileIntoANamespaceAndBackThroughPinnedFrames()
    {
        string src = _scratch.NewSizedFile("/var/tmp", 2 << 20, "src");
        var bytes = new byte[2 << 20];
        new Random(5).NextBytes(bytes);
        File.WriteAllBytes(src, bytes);
        string ns = _scratch.NewPath("ns");
        (int exit, _, string stderr) = Cli("namespace", "create", "--path", ns, "--size", "4M", "--map", "huge");
        Assert.True(exit == 0, stderr);
        (exit, string stdout, stderr) = Cli("copy", "--from", $"file:{src}", "--to", $"pmem:{ns}", "--size", "2M", "--json");
        Assert.True(exit == 0, stderr);
        using (JsonDocument doc = JsonDocument.Parse(stdout))
        {
            Assert.Equal("into-pinned-frames", doc.RootElement.GetProperty("path").GetString());
            Assert.Equal("huge", doc.RootElement.GetProperty("descriptor_map").GetString());
            Assert.Equal(0, doc.RootElement.GetProperty("cpu_copied_bytes").GetInt64());
            Assert.Equal(2L << 20, doc.RootElement.GetProperty("pinned_bytes").GetInt64());
        }
        // dd creates its output: the destination file does not exist yet.
        string dst = Path.Combine(_scratch.NewDirectory("out", "/var/tmp"), "copy.img");
        (exit, stdout, stderr) = Cli("copy", "--from", $"pmem:{ns}", "--to", $"file:{dst}", "--size", "2M");
        Assert.True(exit == 0, stderr);
        Assert.Contains("writes straight out of pinned source frames", stdout);
        Assert.Contains("CPU-copied bytes 0", stdout);
        Assert.Equal(SHA256.HashData(bytes), SHA256.HashData(File.ReadAllBytes(dst)));

        (exit, _, stderr) = Cli("copy", "--from", $"file:{src}", "--to", $"pmem:{ns}", "--size", "1000");
        Assert.Equal(2, exit);
        Assert.Contains("not a multiple of the 512-byte logical block size", stderr);
    }
}
