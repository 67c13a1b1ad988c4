using System.Text.Json;
using PfnBlock.Namespaces;

namespace PfnBlock.Tests.Namespaces;

/// <summary>
/// Which page size backs a namespace's mapping, on filesystems mounted for the test: a tmpfs with
/// huge=always and hugetlbfs give 2 MiB pages (measured in /proc/self/smaps), a plain tmpfs 4 KiB;
/// asking for a page size the filesystem cannot give is refused before anything is written.
/// </summary>
public sealed unsafe class PageBackingTests
{
    private const long TwoMiB = 2L << 20;

    private static (int Exit, string Out, string Err) Cli(params string[] args) => ChildProcess.Run(ChildProcess.CliDll, args);

    /// <summary>Writes a pattern into the data area, persists it, closes, reopens and checks it survived.</summary>
    private static void RoundTrip(string path)
    {
        byte[] pattern = new byte[1 << 20];
        new Random(8).NextBytes(pattern);
        using (PmemNamespace ns = PmemNamespace.Open(path))
        {
            pattern.CopyTo(new Span<byte>(ns.DataAddress + ns.DataSize - pattern.Length, pattern.Length));
            ns.Flush();
        }
        using (PmemNamespace ns = PmemNamespace.Open(path))
            Assert.True(new ReadOnlySpan<byte>(ns.DataAddress + ns.DataSize - pattern.Length, pattern.Length).SequenceEqual(pattern));
    }

    [Fact]
    public void HugeTmpfsBacksTheWholeMappingWithTwoMiBPages()
    {
        using var mount = PrivateMount.Tmpfs("always");
        string path = mount.PathOf("ns");
        using (PmemNamespace ns = PmemNamespace.Create(path, new NamespaceCreateOptions { Size = 16 << 20, PageSize = TwoMiB }))
        {
            Assert.Equal(0, (long)ns.BaseAddress % TwoMiB);
            Assert.Equal(TwoMiB, ns.Info.Align); // asking for huge pages aligns the data area to them
            PageBacking b = ns.MeasureBacking();
            Assert.Equal(BackingFilesystem.Tmpfs, b.Filesystem);
            Assert.Contains("huge=always", b.Detail);
            Assert.Equal(TwoMiB, b.PageSize);
            Assert.Equal(16L << 20, b.HugeMappedBytes);
            Assert.Equal(16L << 20, b.MappedBytes);
        }
        RoundTrip(path);

        // Described by another process, which maps it read-only for the measurement.
        (int exit, string output, string err) = Cli("namespace", "info", "--path", path, "--json");
        Assert.True(exit == 0, err);
        JsonElement pages = JsonDocument.Parse(output).RootElement.GetProperty("page_backing");
        Assert.Equal("tmpfs", pages.GetProperty("filesystem").GetString());
        Assert.Equal(TwoMiB, pages.GetProperty("page_size").GetInt64());
        Assert.Equal(16L << 20, pages.GetProperty("huge_mapped_bytes").GetInt64());
        (exit, output, err) = Cli("namespace", "info", "--path", path);
        Assert.True(exit == 0, err);
        Assert.Contains("pages: 2M pages: 16M of 16M mapped by 2M pages (tmpfs huge=always)", output);
    }

    [Fact]
    public void PlainTmpfsGivesFourKiBPagesAndRefusesTwoMiBBeforeTouchingTheFile()
    {
        using var mount = PrivateMount.Tmpfs("never");
        string path = mount.PathOf("ns");
        using (PmemNamespace ns = PmemNamespace.Create(path, new NamespaceCreateOptions { Size = 8 << 20 }))
        {
            PageBacking b = ns.MeasureBacking();
            Assert.Equal(4096, b.PageSize);
            Assert.Equal(0, b.HugeMappedBytes);
            Assert.True(b.MappedBytes > 0);
        }
        Assert.Equal(4096, PmemNamespace.ProbeBacking(path).PageSize);
        // Asking for 4 KiB where 4 KiB is what the filesystem gives is fine.
        PmemNamespace.Create(mount.PathOf("small"), new NamespaceCreateOptions { Size = 4 << 20, PageSize = 4096 }).Dispose();

        string refused = mount.PathOf("refused");
        var e = Assert.Throws<ArgumentException>(() => PmemNamespace.Create(refused, new NamespaceCreateOptions { Size = 8 << 20, PageSize = TwoMiB }));
        Assert.Contains("tmpfs huge=never", e.Message);
        Assert.Contains("hugetlbfs", e.Message);
        Assert.False(File.Exists(refused));
        // An existing namespace asked to be overwritten with huge pages keeps every byte.
        byte[] before = File.ReadAllBytes(path);
        Assert.Throws<ArgumentException>(() => PmemNamespace.Create(path, new NamespaceCreateOptions { Size = 8 << 20, PageSize = TwoMiB, Force = true }));
        Assert.Equal(before, File.ReadAllBytes(path));

        (int exit, _, string err) = Cli("namespace", "create", "--path", refused, "--size", "8M", "--page-size", "2M");
        Assert.Equal(2, exit);
        Assert.Contains("pfnblock: error: ", err);
        Assert.Contains("maps files with 4k pages, not 2M", err);
        Assert.False(File.Exists(refused));
        Assert.Contains("is not one this machine maps files with", Assert.Throws<ArgumentException>(() =>
            PmemNamespace.Create(refused, new NamespaceCreateOptions { Size = 8 << 20, PageSize = 64 << 10 })).Message);
    }

    [Fact]
    public void HugetlbfsBacksTheMappingWithTwoMiBPagesAndSaysWhenThePoolIsShort()
    {
        using var mount = PrivateMount.Hugetlbfs(pages: 8);
        string path = mount.PathOf("ns");
        (int exit, string output, string err) = Cli("namespace", "create", "--path", path, "--size", "8M", "--page-size", "2M");
        Assert.True(exit == 0, err);
        Assert.Contains("pages: 2M pages (hugetlbfs pagesize=2M)", output);
        using (PmemNamespace ns = PmemNamespace.Open(path))
        {
            Assert.Equal(0, (long)ns.BaseAddress % TwoMiB);
            PageBacking b = ns.MeasureBacking();
            Assert.Equal(BackingFilesystem.Hugetlbfs, b.Filesystem);
            Assert.Equal(TwoMiB, b.PageSize);
        }
        RoundTrip(path);
        Assert.Equal(TwoMiB, PmemNamespace.ProbeBacking(path).PageSize);

        // Not whole huge pages, 4 KiB pages asked of hugetlbfs, more than the pool holds: clear errors, no file left.
        string other = mount.PathOf("other");
        Assert.Contains("not a multiple of the 2M pages", Assert.Throws<ArgumentException>(() =>
            PmemNamespace.Create(other, new NamespaceCreateOptions { Size = 5 << 20 })).Message);
        Assert.Contains("not 4 KiB", Assert.Throws<ArgumentException>(() =>
            PmemNamespace.Create(other, new NamespaceCreateOptions { Size = 4 << 20, PageSize = 4096 })).Message);
        Assert.Contains("too few free huge pages", Assert.Throws<IOException>(() =>
            PmemNamespace.Create(other, new NamespaceCreateOptions { Size = 16 << 20 })).Message);
        Assert.False(File.Exists(other));
        RoundTrip(path);
    }
}
