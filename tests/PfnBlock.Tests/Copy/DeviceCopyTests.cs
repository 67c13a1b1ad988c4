using System.Security.Cryptography;
using PfnBlock.Block;
using PfnBlock.Devices;
using PfnBlock.Devices.Pmem;
using PfnBlock.Exports.Copy;
using PfnBlock.Memory;
using PfnBlock.Namespaces;

namespace PfnBlock.Tests.Copy;

/// <summary>
/// <c>pfnblock copy</c>'s engine on real files opened O_DIRECT (on a disk filesystem) and real
/// namespaces of every descriptor map: file → pmem → file round trips byte for byte with the
/// transfers landing in pinned pmem frames (no bounce buffer, no CPU copy), a pending discard
/// sends its chunks through DRAM instead, and bad sizes are refused before any I/O.
/// </summary>
public sealed partial class DeviceCopyTests : IDisposable
{
    private const long Size = 3 << 20;
    private readonly Scratch _scratch = new();
    private readonly DeviceSet _set = new(new PhysicalAddressSpace());

    public void Dispose()
    {
        _set.Dispose();
        _scratch.Dispose();
    }

    public static TheoryData<DescriptorMapKind> Kinds => [.. DescriptorMaps.All];

    private string RandomFile(long size, int seed)
    {
        var bytes = new byte[size];
        new Random(seed).NextBytes(bytes);
        string path = _scratch.NewSizedFile("/var/tmp", size, "src");
        File.WriteAllBytes(path, bytes);
        return path;
    }

    private PmemDevice Namespace(DescriptorMapKind kind, string? directory = null) =>
        (PmemDevice)_set.Open($"pmem:{PmemNamespaceAt(kind, directory)}");

    private string PmemNamespaceAt(DescriptorMapKind kind, string? directory = null)
    {
        string path = _scratch.NewPath(DescriptorMaps.Name(kind), directory);
        PmemNamespace.Create(path, new NamespaceCreateOptions { Size = 6 << 20, Align = 4096, MapKind = kind }, new PhysicalAddressSpace()).Dispose();
        return path;
    }

    [Theory]
    [MemberData(nameof(Kinds))]
    public void FileToPmemToFileRoundTripsThroughPinnedFrames(DescriptorMapKind kind)
    {
        string src = RandomFile(Size, (int)kind);
        string dst = _scratch.NewSizedFile("/var/tmp", Size, "dst");
        IBlockDevice file = _set.Open($"file:{src}");
        PmemDevice pmem = Namespace(kind);
        IBlockDevice back = _set.Open($"file:{dst}");
        long ramBefore = pmem.Stats.Snapshot().Write.Sectors;

        // --bs 256k, not dividing the size into whole MiB: a short last chunk too.
        var into = new DeviceCopy(file, pmem, new DeviceCopyOptions { Size = Size, BlockSize = 256 << 10, QueueDepth = 3 });
        Assert.Equal(CopyPath.IntoPinnedFrames, into.Path);
        DeviceCopyResult r = into.Run();
        Assert.Equal((Size, Size, 0L, 0L), (r.Bytes, r.PinnedBytes, r.BounceBytes, r.CpuCopiedBytes));
        // The file's reads landed in the namespace's frames: the pmem device itself wrote nothing.
        Assert.Equal(ramBefore, pmem.Stats.Snapshot().Write.Sectors);
        Assert.False(pmem.Pins.AnyPinned);

        var outOf = new DeviceCopy(pmem, back, new DeviceCopyOptions { Size = Size });
        Assert.Equal(CopyPath.FromPinnedFrames, outOf.Path);
        r = outOf.Run();
        Assert.Equal((Size, Size, 0L), (r.Bytes, r.PinnedBytes, r.CpuCopiedBytes));
        Assert.False(pmem.Pins.AnyPinned);
        _set.Dispose();
        Assert.Equal(SHA256.HashData(File.ReadAllBytes(src)), SHA256.HashData(File.ReadAllBytes(dst)));
    }

    [Fact]
    public void AFailedChunkIsReportedWithItsRangeAndLeavesNoPin()
    {
        // A media error in the fourth 256 KiB chunk of the source: it cannot be pinned (bad
        // blocks are never handed out), goes through DRAM and its read fails. Run reports it
        // once the chunks still in flight are done (it used to wait for the failed one for ever).
        string nsPath = PmemNamespaceAt(DescriptorMapKind.Dense);
        MediaErrors.Inject(nsPath, (3 * (256 << 10) >> 9) + 5, 1);
        PmemDevice pmem = (PmemDevice)_set.Open($"pmem:{nsPath}");
        IBlockDevice file = _set.Open($"file:{_scratch.NewSizedFile("/var/tmp", Size, "dst")}");
        var progress = new List<long>();
        var e = Assert.Throws<IOException>(() => new DeviceCopy(pmem, file, new DeviceCopyOptions { Size = Size, BlockSize = 256 << 10, QueueDepth = 4 }).Run(progress.Add));
        Assert.Contains($"read of [{3 * (256 << 10)}, +{256 << 10})", e.Message);
        Assert.Contains("MediaError", e.Message);
        Assert.False(pmem.Pins.AnyPinned);
        Assert.True(progress.Count > 0 && progress[^1] < Size);
    }

    [Fact]
    public void ChunksAPendingDiscardFencesOffGoThroughDramAndStillArrive()
    {
        string src = RandomFile(Size, 7);
        IBlockDevice file = _set.Open($"file:{src}");
        PmemDevice pmem = Namespace(DescriptorMapKind.None);
        // A discard of the second MiB is pending: its fence refuses pins there.
        int fence = pmem.Pins.Fence(256, 256);
        DeviceCopyResult r;
        try { r = new DeviceCopy(file, pmem, new DeviceCopyOptions { Size = Size }).Run(); }
        finally { pmem.Pins.Unfence(fence); }
        Assert.Equal((1L << 20, Size - (1 << 20)), (r.BounceBytes, r.PinnedBytes));
        // The bounced MiB was written by the pmem device: a CPU copy, counted.
        Assert.Equal(1L << 20, r.CpuCopiedBytes);
        byte[] expected = File.ReadAllBytes(src);
        unsafe
        {
            Assert.True(new ReadOnlySpan<byte>(pmem.Namespace.DataAddress, (int)Size).SequenceEqual(expected));
        }
    }

    [Fact]
    public void SizesO_DirectCannotTransferAreRefusedBeforeAnyIo()
    {
        string src = RandomFile(Size, 3);
        IBlockDevice file = _set.Open($"file:{src}");
        PmemDevice pmem = Namespace(DescriptorMapKind.Dense);
        Assert.Contains("not a multiple of the 512-byte logical block size", Assert.Throws<ArgumentException>(() => new DeviceCopy(file, pmem, new DeviceCopyOptions { Size = 1000 })).Message);
        Assert.Contains("not a multiple of 4096", Assert.Throws<ArgumentException>(() => new DeviceCopy(file, pmem, new DeviceCopyOptions { BlockSize = 6000 })).Message);
        Assert.Contains("more than", Assert.Throws<ArgumentException>(() => new DeviceCopy(file, pmem, new DeviceCopyOptions { Size = 64 << 20 })).Message);
        using var other = new DeviceSet(new PhysicalAddressSpace());
        Assert.Contains("different address spaces", Assert.Throws<ArgumentException>(() => new DeviceCopy(other.Open("ram:4M"), pmem, new DeviceCopyOptions())).Message);
        Assert.Equal(0, pmem.Stats.Snapshot().Write.Ios);
    }
}
