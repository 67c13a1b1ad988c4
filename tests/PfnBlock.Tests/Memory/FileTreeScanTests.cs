using System.Text.Json;
using PfnBlock.Memory;

namespace PfnBlock.Tests.Memory;

/// <summary>
/// <c>memmap --scan</c> on a generated tree of known sizes (on ext4 under /var/tmp, where FIEMAP
/// answers): totals, size classes, the large-file and pack shares, symbolic links not followed,
/// and the 2 MiB-alignment rule for extents.
/// </summary>
public sealed class FileTreeScanTests : IDisposable
{
    private readonly Scratch _scratch = new();
    public void Dispose() => _scratch.Dispose();

    private string Tree()
    {
        string root = _scratch.NewDirectory("tree", "/var/tmp");
        void Write(string rel, int size)
        {
            string path = Path.Combine(root, rel);
            Directory.CreateDirectory(Path.GetDirectoryName(path)!);
            var bytes = new byte[size];
            new Random(size).NextBytes(bytes);
            File.WriteAllBytes(path, bytes);
        }
        Write("empty", 0);
        Write("a/small", 100);
        Write("a/b/five-k", 5000);
        Write("big.bin", 3 << 20);
        Write("repo/.git/objects/pack/pack-1.pack", 1 << 20);
        File.CreateSymbolicLink(Path.Combine(root, "link-to-big"), Path.Combine(root, "big.bin"));
        return root;
    }

    [Fact]
    public void TheScanCountsWhatTheTreeHolds()
    {
        FileTreeScan s = FileTreeScan.Run(Tree());
        long total = 100 + 5000 + (3 << 20) + (1 << 20);
        Assert.Equal((5L, total), (s.TotalFiles, s.TotalBytes)); // the link is not followed
        Assert.Equal(3L << 20, s.LargeFileBytes);
        Assert.Equal(1L << 20, s.GitPackBytes);
        var classes = s.Classes.ToDictionary(c => c.UpTo);
        Assert.Equal((1L, 0L), (classes[0].Files, classes[0].Bytes));
        Assert.Equal((1L, 100L), (classes[4 << 10].Files, classes[4 << 10].Bytes));
        Assert.Equal((1L, 5000L), (classes[16 << 10].Files, classes[16 << 10].Bytes));
        Assert.Equal((1L, 1L << 20), (classes[1 << 20].Files, classes[1 << 20].Bytes));
        Assert.Equal((1L, 3L << 20), (classes[16 << 20].Files, classes[16 << 20].Bytes));
        // ext4 places every written byte (small files may be inline: not counted as placed).
        Assert.Equal(4, s.FilesMapped);
        Assert.InRange(s.BytesMapped, (4L << 20) + 5000, total + 3 * 4096);
        Assert.InRange(s.BytesInAligned2MExtents, 0, 2L << 20); // only big.bin has a whole 2 MiB
    }

    [Theory]
    [InlineData(0, 2 << 20, 4 << 20, 4 << 20)]           // aligned in the file and on the device
    [InlineData(0, 4096, 4 << 20, 0)]                     // aligned in the file only
    [InlineData(4096, (2 << 20) + 4096, 4 << 20, 2 << 20)] // one whole aligned 2 MiB inside
    [InlineData(0, 0, (2 << 20) - 4096, 0)]               // shorter than 2 MiB
    public void OnlyWhole2MChunksAlignedOnBothSidesCount(long logical, long physical, long length, long expected) =>
        Assert.Equal(expected, FileTreeScan.Aligned2MBytes(logical, physical, length));

    [Fact]
    public void TheCliReportsTotalsAsJson()
    {
        string root = Tree();
        (int exit, string stdout, string stderr) = ChildProcess.Run(ChildProcess.CliDll, ["memmap", "--scan", root, "--json"]);
        Assert.True(exit == 0, stderr);
        using JsonDocument doc = JsonDocument.Parse(stdout);
        Assert.Equal(5, doc.RootElement.GetProperty("total_files").GetInt64());
        Assert.Equal(100 + 5000 + (3 << 20) + (1 << 20), doc.RootElement.GetProperty("total_bytes").GetInt64());
        Assert.Equal(1L << 20, doc.RootElement.GetProperty("git_pack_bytes").GetInt64());
        (exit, _, stderr) = ChildProcess.Run(ChildProcess.CliDll, ["memmap", "--scan", Path.Combine(root, "missing")]);
        Assert.Equal(1, exit);
        Assert.Contains("is not a directory", stderr);
    }
}
