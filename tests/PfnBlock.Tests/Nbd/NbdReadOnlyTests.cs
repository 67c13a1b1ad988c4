using System.Globalization;
using System.Security.Cryptography;
using PfnBlock.Block;
using PfnBlock.Devices;
using PfnBlock.Namespaces;

namespace PfnBlock.Tests.Nbd;

/// <summary><c>serve --read-only</c> opens namespaces read-only, so files the server may only read can be served (issue 14, finding 4).</summary>
public sealed class NbdReadOnlyTests
{
    [Fact]
    public unsafe void ServeReadOnlyServesNamespacesOnAReadOnlyFileSystem()
    {
        using var mount = new ReadOnlyBindMount();
        string raw = Path.Combine(mount.Writable, "raw");
        string sector = Path.Combine(mount.Writable, "sector");
        byte[] pattern = RandomNumberGenerator.GetBytes(1 << 20);
        using (PmemNamespace ns = PmemNamespace.Create(raw, new NamespaceCreateOptions { Size = 8 << 20 }))
            pattern.CopyTo(new Span<byte>(ns.DataAddress, pattern.Length));
        PmemNamespace.Create(sector, new NamespaceCreateOptions { Size = 20 << 20, Mode = NamespaceMode.Sector, SectorSize = 4096 }).Dispose();
        using (IBlockDevice _ = DeviceSpec.Parse("pmem:" + DeviceSpec.Quote(sector)).Open()) { } // a BTT that has been opened once
        mount.MakeReadOnly();
        string roRaw = Path.Combine(mount.ReadOnly, "raw");
        string roSector = Path.Combine(mount.ReadOnly, "sector");
        byte[] rawBefore = File.ReadAllBytes(roRaw);
        byte[] sectorBefore = File.ReadAllBytes(roSector);

        (int exit, string info, string err) = ChildProcess.Run(ChildProcess.CliDll, ["namespace", "info", "--path", roRaw]);
        Assert.True(exit == 0, err);
        Assert.Contains("raw namespace", info);

        string sock = Path.Combine(mount.Root, "nbd.sock");
        using ServeProcess server = ServeProcess.Start("--read-only", "--export", $"raw=pmem:{roRaw}", "--export", $"sector=pmem:{roSector}", "--listen", $"unix:{sock}");
        string uri = $"nbd+unix:///raw?socket={sock}";
        Assert.Contains("is_read_only: true", Tool.Run("nbdinfo", uri));
        string copy = Path.Combine(mount.Root, "copy.img");
        Tool.Run("qemu-img", "convert", "-f", "raw", "-O", "raw", uri, copy);
        Assert.Equal(pattern, File.ReadAllBytes(copy).AsSpan(0, pattern.Length).ToArray());
        (int code, string output, string error) = Tool.RunAllowingFailure("qemu-io", "-f", "raw", "-c", "write -P 0x5a 0 4096", uri);
        Assert.True(code != 0 || (output + error).Contains("Operation not permitted", StringComparison.Ordinal) || (output + error).Contains("read-only", StringComparison.OrdinalIgnoreCase),
            $"a write to a read-only export succeeded:\n{output}\n{error}");
        string read = Tool.Run("qemu-io", "-f", "raw", "-r", "-c", "read -P 0 0 65536", $"nbd+unix:///sector?socket={sock}");
        Assert.Contains("read 65536/65536 bytes at offset 0", read);
        Assert.DoesNotContain("fail", read, StringComparison.OrdinalIgnoreCase);

        // Read-only servers share a namespace; a writer is refused while they hold it.
        using ServeProcess second = ServeProcess.Start("--read-only", "--export", $"raw=pmem:{roRaw}", "--listen", $"unix:{sock}2");
        (exit, _, err) = ChildProcess.Run(ChildProcess.CliDll, ["serve", "--export", $"raw=pmem:{raw}", "--listen", $"unix:{sock}3"]);
        Assert.Equal(1, exit);
        Assert.Contains("in use", err);
        server.Terminate();
        second.Terminate();
        Assert.Equal(rawBefore, File.ReadAllBytes(roRaw));
        Assert.Equal(sectorBefore, File.ReadAllBytes(roSector));
    }

    [Fact]
    public unsafe void AReadOnlyOpenMapsPageReadOnlyAndTakesASharedClaim()
    {
        using var scratch = new Scratch();
        string path = scratch.NewNamespace(4 << 20);
        using PmemNamespace a = PmemNamespace.Open(path, readOnly: true);
        using PmemNamespace b = PmemNamespace.Open(path, readOnly: true);
        Assert.True(a.ReadOnly);
        Assert.Equal("r--s", MappingPermissions((nint)a.BaseAddress));
        Assert.Throws<NamespaceInUseException>(() => PmemNamespace.Open(path));
        using IBlockDevice dev = DeviceSpec.Parse("pmem:" + DeviceSpec.Quote(path)).Open(readOnly: true);
        Assert.True((dev.Features & DeviceFeatures.ReadOnly) != 0);
        Bio bio = BioPool.Shared.Rent(BioOp.WriteZeroes, 0);
        bio.Iter.Size = 4096;
        Assert.Equal(BlockStatus.ReadOnly, dev.SubmitAndWait(bio));
        bio.Release();
    }

    private static string MappingPermissions(nint address)
    {
        foreach (string line in File.ReadLines("/proc/self/maps"))
        {
            string range = line[..line.IndexOf(' ')];
            long start = long.Parse(range[..range.IndexOf('-')], NumberStyles.HexNumber, CultureInfo.InvariantCulture);
            if (start == address) return line.Split(' ')[1];
        }
        throw new InvalidOperationException($"no mapping starts at 0x{address:x}");
    }

    /// <summary>A directory under /dev/shm and a read-only bind mount of it (root only; undone on dispose).</summary>
    private sealed class ReadOnlyBindMount : IDisposable
    {
        private bool _mounted;

        public ReadOnlyBindMount()
        {
            Root = Directory.CreateTempSubdirectory("pfnblock-ro-").FullName;
            Writable = Directory.CreateDirectory(Path.Combine(Root, "rw")).FullName;
            ReadOnly = Directory.CreateDirectory(Path.Combine(Root, "ro")).FullName;
        }

        public string Root { get; }
        public string Writable { get; }
        public string ReadOnly { get; }

        public void MakeReadOnly()
        {
            Tool.Run("mount", "--bind", Writable, ReadOnly);
            _mounted = true;
            Tool.Run("mount", "-o", "remount,bind,ro", ReadOnly);
            Assert.ThrowsAny<Exception>(() => File.WriteAllBytes(Path.Combine(ReadOnly, "probe"), [1]));
        }

        public void Dispose()
        {
            if (_mounted) Tool.Run("umount", ReadOnly);
            Directory.Delete(Root, recursive: true);
        }
    }
}
