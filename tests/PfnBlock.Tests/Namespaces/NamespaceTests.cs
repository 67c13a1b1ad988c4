using System.Security.Cryptography;
using CsCheck;
using PfnBlock.Block;
using PfnBlock.Devices.Pmem;
using PfnBlock.Memory;
using PfnBlock.Namespaces;

namespace PfnBlock.Tests.Namespaces;

/// <summary>Namespace format: create, open, describe, refuse to overwrite, recover from the backup info block, destroy.</summary>
public sealed class NamespaceTests : IDisposable
{
    private readonly Scratch _scratch = new();
    public void Dispose() => _scratch.Dispose();

    private static byte[] Hash(string path) => SHA256.HashData(File.ReadAllBytes(path));

    private string NewNamespace(string name = "") => _scratch.NewNamespace(4 << 20, name: name);

    private static void Corrupt(string path, long offset, byte xor = 0xFF)
    {
        using var f = new FileStream(path, FileMode.Open, FileAccess.ReadWrite);
        f.Position = offset;
        int b = f.ReadByte();
        f.Position = offset;
        f.WriteByte((byte)(b ^ xor));
    }

    private static byte[] ReadRange(string path, long offset, int length)
    {
        using var f = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite);
        f.Position = offset;
        byte[] b = new byte[length];
        f.ReadExactly(b);
        return b;
    }

    /// <summary>Writes a changed info block, with a correct checksum, over both copies.</summary>
    /// <summary>Replaces both info blocks of the namespace at <paramref name="path"/> with a changed copy of the valid one (checksummed, as a writer of that format leaves it).</summary>
    internal static void RewriteBothInfoBlocks(string path, Func<NamespaceInfoBlock, NamespaceInfoBlock> change)
    {
        NamespaceInfoBlock info = PmemNamespace.ReadInfo(path, out _);
        byte[] block = new byte[NamespaceInfoBlock.Size];
        change(info).Write(block);
        using var f = new FileStream(path, FileMode.Open, FileAccess.Write);
        f.Write(block);
        f.Position = NamespaceInfoBlock.BackupOffset(info.NamespaceSize);
        f.Write(block);
    }

    [Fact]
    public void CreateOpenAndInfoAgree()
    {
        string path = _scratch.NewPath();
        var options = new NamespaceCreateOptions { Size = 6 << 20, SectorSize = 4096, Align = 64 << 10, Name = "alpha", MapKind = DescriptorMapKind.Dense };
        NamespaceInfoBlock created;
        using (PmemNamespace ns = PmemNamespace.Create(path, options))
        {
            created = ns.Info;
            Assert.Equal(6L << 20, created.NamespaceSize);
            Assert.Equal(64L << 10, created.DataOffset);        // the first aligned offset past the info block
            Assert.Equal(0, created.DataOffset % created.Align);
            Assert.True(created.DataOffset + created.DataSize <= NamespaceInfoBlock.BackupOffset(6 << 20));
            Assert.Equal(0, created.DataSize % Pfn.PageSize);
            Assert.Equal((uint)4096, created.SectorSize);
            Assert.Equal(NamespaceMode.Raw, created.Mode);
            Assert.Equal("alpha", created.Name);
            Assert.NotEqual(Guid.Empty, created.Uuid);
            Assert.Equal(created.DataSize, ns.DataSize);
            Assert.Equal(created.DataSize >> Pfn.PageShift, ns.Region.FrameCount);
            Assert.False(ns.RecoveredFromBackup);
            Assert.NotEmpty(ns.PersistenceDescription);
        }
        Assert.Equal(6L << 20, new FileInfo(path).Length);
        // Both copies of the info block are identical on media.
        Assert.Equal(ReadRange(path, 0, 4096), ReadRange(path, (6 << 20) - 4096, 4096));

        NamespaceInfoBlock described = PmemNamespace.ReadInfo(path, out bool fromBackup);
        Assert.False(fromBackup);
        Assert.Equal(created, described);
        using (PmemNamespace ns = PmemNamespace.Open(path))
        {
            Assert.Equal(created, ns.Info);
            Assert.False(ns.RecoveredFromBackup);
        }
    }

    [Fact]
    public void DataSurvivesCloseAndReopen()
    {
        string path = NewNamespace();
        var rng = new Random(42);
        byte[] data = new byte[64 << 10];
        rng.NextBytes(data);
        using (var dev = PmemDevice.Open(path))
        using (var buffers = new IoBuffers(dev.AddressSpace, 1 << 20))
        using (IoBuffers.Layout layout = buffers.NewLayout(rng, data.Length))
        {
            layout.Write(data);
            Assert.Equal(BlockStatus.Ok, dev.SubmitAndWait(layout.AddTo(new Bio().Init(BioOp.Write, 64, BioFlags.Fua))));
        }
        using (var dev = PmemDevice.Open(path))
        using (var buffers = new IoBuffers(dev.AddressSpace, 1 << 20))
        using (IoBuffers.Layout layout = buffers.NewLayout(rng, data.Length))
        {
            Assert.Equal(BlockStatus.Ok, dev.SubmitAndWait(layout.AddTo(new Bio().Init(BioOp.Read, 64))));
            Assert.Equal(data, layout.Read());
        }
    }

    [Fact]
    public void CreateRefusesToOverwriteANamespaceWithoutForce()
    {
        string path = NewNamespace(name: "first");
        byte[] before = Hash(path);
        var e = Assert.ThrowsAny<IOException>(() => PmemNamespace.Create(path, new() { Size = 2 << 20 }));
        Assert.Contains("already a PfnBlock namespace", e.Message);
        Assert.Contains("--force", e.Message);
        Assert.Equal(before, Hash(path));
        Guid old = PmemNamespace.ReadInfo(path, out _).Uuid;
        using (PmemNamespace ns = PmemNamespace.Create(path, new() { Size = 2 << 20, Force = true, Name = "second" }))
            Assert.NotEqual(old, ns.Info.Uuid);
        Assert.Equal("second", PmemNamespace.ReadInfo(path, out _).Name);
    }

    [Fact]
    public void CreateRefusesForeignDataWithoutForceButTakesAnEmptyFile()
    {
        byte[] foreign = new byte[3 << 20];
        new Random(7).NextBytes(foreign);
        string path = _scratch.NewFile(foreign);
        var e = Assert.ThrowsAny<IOException>(() => PmemNamespace.Create(path, new() { Size = 2 << 20 }));
        Assert.Contains("other data", e.Message);
        Assert.Equal(foreign, File.ReadAllBytes(path));

        string empty = _scratch.NewFile([]);
        using (PmemNamespace ns = PmemNamespace.Create(empty, new() { Size = 2 << 20 })) Assert.Equal(2L << 20, ns.Info.NamespaceSize);
        using (PmemNamespace ns = PmemNamespace.Create(path, new() { Size = 2 << 20, Force = true })) Assert.Equal(2L << 20, new FileInfo(path).Length);
    }

    [Theory]
    [InlineData(512L << 10, 0u, 512u, "below the minimum")]
    [InlineData((2L << 20) + 100, 0u, 512u, "not a multiple of 4096")]
    [InlineData(2L << 20, 3000u, 512u, "power of two")]
    [InlineData(2L << 20, 0u, 1000u, "sector size")]
    public void BadCreateOptionsAreRefusedBeforeTouchingTheDisk(long size, uint align, uint sectorSize, string message)
    {
        string path = _scratch.NewPath();
        var e = Assert.ThrowsAny<ArgumentException>(() => PmemNamespace.Create(path, new() { Size = size, Align = align, SectorSize = sectorSize }));
        Assert.Contains(message, e.Message);
        Assert.False(File.Exists(path));
    }

    [Fact]
    public void OptionsThatCannotBeHonouredCreateNoFile()
    {
        string path = _scratch.NewPath();
        // --map device on a namespace too small for its reserve (rounded up to 2 MiB here), and in sector mode.
        Assert.Contains("too small for --map device", Assert.Throws<ArgumentException>(() => PmemNamespace.Create(path, new() { Size = 2 << 20, Align = 2 << 20, MapKind = DescriptorMapKind.Device })).Message);
        Assert.False(File.Exists(path));
        Assert.Contains("sector namespace", Assert.Throws<ArgumentException>(() => PmemNamespace.Create(path, new() { Size = 20 << 20, Mode = NamespaceMode.Sector, MapKind = DescriptorMapKind.Device })).Message);
        Assert.False(File.Exists(path));
        Assert.Contains("64 bytes", Assert.ThrowsAny<ArgumentException>(() => PmemNamespace.Create(path, new() { Size = 2 << 20, Name = new string('é', 33) })).Message);
        Assert.False(File.Exists(path));
        using (PmemNamespace ns = PmemNamespace.Create(path, new() { Size = 2 << 20, Name = new string('n', 64) })) Assert.Equal(64, ns.Info.Name.Length);
    }

    [Fact]
    public void ACreateThatFailsOnTheDiskRemovesTheFileItCreated()
    {
        // 2^62 bytes: the sparse resize works, reserving the blocks fails at once with ENOSPC.
        string path = _scratch.NewPath();
        Assert.Contains("No space left", Assert.ThrowsAny<IOException>(() => PmemNamespace.Create(path, new() { Size = 1L << 62 })).Message);
        Assert.False(File.Exists(path));
    }

    [Fact]
    public void DestroyRefusesDeviceNodesEvenWithForce()
    {
        // /dev/zero is writable by everyone and never a namespace; unlinking it would be a disaster.
        var e = Assert.Throws<NotSupportedException>(() => PmemNamespace.Destroy("/dev/zero", force: true));
        Assert.Contains("is a device", e.Message);
        Assert.True(File.Exists("/dev/zero"));
    }

    [Fact]
    public void ACorruptPrimaryIsReadFromTheBackupAndRepairedOnOpen()
    {
        // Any single corrupted byte of the primary block (signature, fields, reserved, checksum) is detected.
        string pristine = NewNamespace(name: "beta");
        byte[] original = File.ReadAllBytes(pristine);
        Gen.Select(Gen.Int[0, NamespaceInfoBlock.Size - 1], Gen.Byte[1, 255]).Sample((offset, xor) =>
        {
            string path = _scratch.NewFile(original);
            Corrupt(path, offset, xor);
            NamespaceInfoBlock info = PmemNamespace.ReadInfo(path, out bool fromBackup);
            Assert.True(fromBackup);
            Assert.Equal("beta", info.Name);
            using (PmemNamespace ns = PmemNamespace.Open(path))
            {
                Assert.True(ns.RecoveredFromBackup);
                Assert.Equal(info, ns.Info);
            }
            // Repaired: byte-identical to the namespace before the corruption, so the next reader needs no fallback.
            Assert.True(original.AsSpan().SequenceEqual(File.ReadAllBytes(path)));
            PmemNamespace.ReadInfo(path, out fromBackup);
            Assert.False(fromBackup);
            File.Delete(path);
        }, iter: 40, threads: 1);
    }

    [Fact]
    public void BothInfoBlocksCorruptIsAClearErrorAndChangesNothing()
    {
        string path = NewNamespace();
        Corrupt(path, 200);
        Corrupt(path, (4 << 20) - 4096 + 200);
        byte[] before = Hash(path);
        var e = Assert.Throws<InvalidNamespaceException>(() => PmemNamespace.Open(path));
        Assert.Contains("corrupt namespace info block", e.Message);
        Assert.Contains("primary: checksum mismatch", e.Message);
        Assert.Contains("backup: checksum mismatch", e.Message);
        Assert.Contains(path, e.Message);
        Assert.Equal(e.Message, Assert.Throws<InvalidNamespaceException>(() => PmemNamespace.ReadInfo(path, out _)).Message);
        Assert.Throws<InvalidNamespaceException>(() => PmemNamespace.Destroy(path, force: false));
        Assert.Equal(before, Hash(path));
    }

    [Fact]
    public void AnUnsupportedMajorVersionIsExplained()
    {
        string path = NewNamespace();
        RewriteBothInfoBlocks(path, info => info with { Major = 2, Minor = 0 });
        Assert.Contains("unsupported format version 2.0", Assert.Throws<InvalidNamespaceException>(() => PmemNamespace.Open(path)).Message);
    }

    [Fact]
    public void ABlockWhoseDataAreaWrapsAroundIsRefused()
    {
        // A correct checksum over nonsense: a data offset near 2^63 once wrapped past the bounds check,
        // and the namespace opened with its data "area" far outside the mapping.
        string path = NewNamespace();
        RewriteBothInfoBlocks(path, info => info with { DataOffset = long.MaxValue & ~4095L });
        Assert.Contains("overlaps the backup info block", Assert.Throws<InvalidNamespaceException>(() => PmemNamespace.Open(path)).Message);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void AForeignFileIsNotANamespace(bool zeros)
    {
        byte[] content = new byte[2 << 20];
        if (!zeros) new Random(3).NextBytes(content);
        string path = _scratch.NewFile(content);
        var e = Assert.Throws<InvalidNamespaceException>(() => PmemNamespace.Open(path));
        Assert.Contains("not a PfnBlock namespace", e.Message);
        Assert.Contains("not a PfnBlock namespace", Assert.Throws<InvalidNamespaceException>(() => PmemNamespace.ReadInfo(path, out _)).Message);
        Assert.Equal(content, File.ReadAllBytes(path));
    }

    [Fact]
    public void TruncatedAndTinyFilesAreRefused()
    {
        string path = NewNamespace();
        using (var f = new FileStream(path, FileMode.Open, FileAccess.Write)) f.SetLength(2 << 20);
        byte[] before = Hash(path);
        var e = Assert.Throws<InvalidNamespaceException>(() => PmemNamespace.Open(path));
        Assert.Contains("does not fit the device", e.Message);
        Assert.Equal(before, Hash(path));

        string tiny = _scratch.NewFile(new byte[100]);
        Assert.Contains("too small to be a namespace", Assert.Throws<InvalidNamespaceException>(() => PmemNamespace.Open(tiny)).Message);
        Assert.Equal(100, new FileInfo(tiny).Length);
    }

    [Fact]
    public void AMissingFileIsNamed()
    {
        string path = _scratch.NewPath();
        Assert.Contains("no such file", Assert.Throws<FileNotFoundException>(() => PmemNamespace.Open(path)).Message);
        Assert.Contains("no such file", Assert.Throws<FileNotFoundException>(() => PmemNamespace.ReadInfo(path, out _)).Message);
        Assert.Throws<FileNotFoundException>(() => PmemNamespace.Destroy(path, force: true));
        Assert.False(File.Exists(path));
    }

    [Fact]
    public void DestroyDeletesOnlyValidNamespacesUnlessForced()
    {
        string path = NewNamespace();
        PmemNamespace.Destroy(path, force: false);
        Assert.False(File.Exists(path));

        string foreign = _scratch.NewFile(new byte[1 << 20]);
        Assert.Throws<InvalidNamespaceException>(() => PmemNamespace.Destroy(foreign, force: false));
        Assert.True(File.Exists(foreign));
        PmemNamespace.Destroy(foreign, force: true);
        Assert.False(File.Exists(foreign));
    }

    [Fact]
    public void OnTmpfsThePersistencePathIsReportedHonestly()
    {
        if (!Scratch.Directory.StartsWith("/dev/shm", StringComparison.Ordinal)) Assert.Fail("the suite expects /dev/shm (tmpfs)");
        using PmemNamespace ns = PmemNamespace.Create(_scratch.NewPath(), new() { Size = 2 << 20 });
        // tmpfs has no DAX, so MAP_SYNC is refused and the page-cache path is in force.
        Assert.Equal(PersistenceMode.Msync, ns.Persistence);
        Assert.Contains("page-cache", ns.PersistenceDescription);
        ns.Flush();
        ns.PersistRange(0, 4096);
    }
}
