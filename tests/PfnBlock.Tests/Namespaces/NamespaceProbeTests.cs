using System.Runtime.InteropServices;
using PfnBlock.Devices;
using PfnBlock.Namespaces;

namespace PfnBlock.Tests.Namespaces;

/// <summary>
/// <see cref="NamespaceProbe"/> names every kind of path once, and openers act on its answer: a
/// PMDK pool, a directory, a FIFO or a foreign file is refused with a message saying what it is.
/// </summary>
public sealed partial class NamespaceProbeTests : IDisposable
{
    private readonly Scratch _scratch = new();
    public void Dispose() => _scratch.Dispose();

    [LibraryImport("libc", EntryPoint = "mkfifo", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
    private static partial int MkFifo(string path, int mode);

    private string FileStartingWith(string signature, int size = 64 << 10)
    {
        byte[] content = new byte[size];
        System.Text.Encoding.ASCII.GetBytes(signature).CopyTo(content, 0);
        return _scratch.NewFile(content);
    }

    [Fact]
    public void NamespacesAreNamedWithTheirMode()
    {
        string raw = _scratch.NewNamespace();
        NamespaceProbeResult r = NamespaceProbe.Probe(raw);
        Assert.Equal(NamespaceKind.RawNamespace, r.Kind);
        Assert.True(r.IsNamespace);
        Assert.Equal(NamespaceMode.Raw, r.Info!.Mode);
        Assert.False(r.InfoFromBackup);
        Assert.Equal(new FileInfo(raw).Length, r.Size);

        string sector = _scratch.NewPath();
        PmemNamespace.Create(sector, new NamespaceCreateOptions { Size = 20 << 20, Mode = NamespaceMode.Sector, SectorSize = 4096 }).Dispose();
        r = NamespaceProbe.Probe(sector);
        Assert.Equal(NamespaceKind.SectorNamespace, r.Kind);
        Assert.Equal(4096u, r.Info!.SectorSize);
    }

    [Fact]
    public void AClaimedNamespaceCanStillBeProbed()
    {
        string path = _scratch.NewNamespace();
        using PmemNamespace held = PmemNamespace.Open(path);
        Assert.Equal(NamespaceKind.RawNamespace, NamespaceProbe.Probe(path).Kind);
    }

    [Fact]
    public void ABadPrimaryWithAGoodBackupIsStillANamespace()
    {
        string path = _scratch.NewNamespace();
        byte[] bytes = File.ReadAllBytes(path);
        bytes[0] ^= 0xFF; // the signature itself: only the backup says what this is
        File.WriteAllBytes(path, bytes);
        NamespaceProbeResult r = NamespaceProbe.Probe(path);
        Assert.Equal(NamespaceKind.RawNamespace, r.Kind);
        Assert.True(r.InfoFromBackup);
        Assert.Equal(bytes, File.ReadAllBytes(path)); // probing never writes
    }

    [Fact]
    public void BothInfoBlocksBadIsACorruptNamespace()
    {
        string path = _scratch.NewNamespace();
        byte[] bytes = File.ReadAllBytes(path);
        bytes[300] ^= 0xFF;
        bytes[^(4096 - 300)] ^= 0xFF;
        File.WriteAllBytes(path, bytes);
        NamespaceProbeResult r = NamespaceProbe.Probe(path);
        Assert.Equal(NamespaceKind.CorruptNamespace, r.Kind);
        Assert.Contains("corrupt namespace info block", r.Message);
        Assert.Contains("checksum", r.Message);
    }

    [Theory]
    [InlineData("PMEMBLK\0", NamespaceKind.PmemblkPool, "pmemblk")]
    [InlineData("PMEMOBJ\0", NamespaceKind.OtherPmdkPool, "pmemobj")]
    [InlineData("PMEMLOG\0", NamespaceKind.OtherPmdkPool, "pmemlog")]
    [InlineData("PMEMPOOLSET\n", NamespaceKind.OtherPmdkPool, "poolset")]
    public void PmdkPoolsAreNamedByType(string signature, NamespaceKind kind, string type)
    {
        string path = FileStartingWith(signature);
        NamespaceProbeResult r = NamespaceProbe.Probe(path);
        Assert.Equal(kind, r.Kind);
        Assert.Equal(type, r.PmdkPoolType);
        Assert.Contains($"PMDK {type} pool", r.Message);
        var e = Assert.Throws<InvalidNamespaceException>(() => PmemNamespace.Open(path));
        Assert.Contains($"PMDK {type} pool", e.Message);
        Assert.Contains("not a", e.Message);
    }

    [Fact]
    public void ForeignTinyAndMissingFilesAreTold()
    {
        byte[] random = new byte[1 << 20];
        new Random(5).NextBytes(random);
        NamespaceProbeResult r = NamespaceProbe.Probe(_scratch.NewFile(random));
        Assert.Equal(NamespaceKind.Unknown, r.Kind);
        Assert.Contains("not a PfnBlock namespace", r.Message);

        r = NamespaceProbe.Probe(_scratch.NewFile(new byte[100]));
        Assert.Equal(NamespaceKind.TooSmall, r.Kind);
        Assert.Contains("too small", r.Message);
        Assert.Equal(100, r.Size);

        string missing = _scratch.NewPath();
        r = NamespaceProbe.Probe(missing);
        Assert.Equal(NamespaceKind.Missing, r.Kind);
        Assert.IsType<FileNotFoundException>(r.ToException("a namespace"));
    }

    [Fact]
    public void DirectoriesAndCharacterDevicesAreNotFiles()
    {
        string dir = _scratch.NewPath("dir");
        Directory.CreateDirectory(dir);
        try
        {
            NamespaceProbeResult r = NamespaceProbe.Probe(dir);
            Assert.Equal(NamespaceKind.Directory, r.Kind);
            Assert.Contains("is a directory", Assert.Throws<InvalidNamespaceException>(() => DeviceSpec.Parse("pmem:" + dir).Open()).Message);
        }
        finally { Directory.Delete(dir); }

        NamespaceProbeResult dev = NamespaceProbe.Probe("/dev/null");
        Assert.Equal(NamespaceKind.NotFileOrDevice, dev.Kind);
        Assert.Contains("character device", dev.Message);
    }

    [Fact]
    public async Task AFifoIsRefusedWithoutBlocking()
    {
        string fifo = _scratch.NewPath("fifo");
        Assert.Equal(0, MkFifo(fifo, 0x180 /* 0600 */));
        // Opening a FIFO for reading would wait for a writer; the probe must look at the type first.
        Task<Exception> open = Task.Run(() => Record(() => DeviceSpec.Parse("pmem:" + fifo).Open()));
        Assert.Same(open, await Task.WhenAny(open, Task.Delay(TimeSpan.FromSeconds(30))));
        Assert.Contains("is a FIFO", (await open).Message);
        Assert.Equal(NamespaceKind.NotFileOrDevice, NamespaceProbe.Probe(fifo).Kind);
    }

    private static Exception Record(Action action)
    {
        try { action(); }
        catch (Exception e) { return e; }
        throw new Xunit.Sdk.XunitException("expected an exception");
    }
}
