using PfnBlock.Memory;
using PfnBlock.Namespaces;
using static PfnBlock.Tests.Namespaces.NamespaceTests;

namespace PfnBlock.Tests.Namespaces;

/// <summary>
/// devdax ranges go through the namespace's one pin and dirty-tracking seam, for every map kind:
/// a handed-out range is a reference in the descriptor (two overlapping ranges count twice in
/// the same descriptor), writes through it mark frames dirty and a persist on this filesystem
/// without MAP_SYNC (tmpfs) writes back exactly the dirty runs. Media errors are injected,
/// listed and cleared on devdax too, and a range over a bad block is refused when it is handed
/// out. New info blocks are format 1.2; 1.0 and 1.1 blocks still open, and a newer minor with a
/// value this build does not know is refused as newer.
/// </summary>
public sealed unsafe class DevDaxSeamTests : IDisposable
{
    private readonly Scratch _scratch = new();
    public void Dispose() => _scratch.Dispose();

    public static TheoryData<DescriptorMapKind> Kinds => [.. DescriptorMaps.All];

    private string NewDevDax(DescriptorMapKind kind = DescriptorMapKind.None)
    {
        string path = _scratch.NewPath("devdax-" + DescriptorMaps.Name(kind));
        PmemNamespace.Create(path, new NamespaceCreateOptions { Size = 8 << 20, Mode = NamespaceMode.DevDax, MapKind = kind }).Dispose();
        return path;
    }

    [Theory]
    [MemberData(nameof(Kinds))]
    public void RangesArePinnedInTheNamespacesDescriptorsAndPersistWritesBackOnlyTheDirtyRuns(DescriptorMapKind kind)
    {
        string path = NewDevDax(kind);
        using DaxNamespace dax = DaxNamespace.Map(path, new PhysicalAddressSpace());
        Assert.Equal(PersistenceMode.Msync, dax.Persistence); // tmpfs: no MAP_SYNC, so dirty tracking matters
        Assert.Equal(kind, dax.Region.Descriptors.Kind);
        bool huge = kind == DescriptorMapKind.Huge;
        bool perFrame = kind is not (DescriptorMapKind.None or DescriptorMapKind.Temporary);

        DaxMapping a = dax.MapRange(0, 16);
        using DaxMapping b = dax.MapRange(8, 16); // an alias of frames 8..15
        Assert.True(dax.Address + 8 * 4096 == b.Address);
        Assert.Equal(dax.Region.PfnAt(8), b.Pfn);
        // Huge descriptors pin their whole 2 MiB: frames 0 and 30 share frame 10's descriptor.
        Assert.Equal(2, dax.Region.Pins.PinCount(10));
        Assert.Equal(huge ? 2 : 1, dax.Region.Pins.PinCount(0));
        Assert.Equal(huge ? 2 : 1, dax.Region.Pins.PinCount(20));
        Assert.Equal(huge ? 2 : 0, dax.Region.Pins.PinCount(30));
        if (perFrame)
        {
            // The count is the descriptor's own field, where block-mode pins also count.
            Assert.Equal(2, dax.Region.Descriptors.Head(10)->RefCount);
            Assert.Equal(huge ? 2 : 0, dax.Region.Descriptors.Head(30)->RefCount);
        }

        a.Write(100, new byte[5000]);               // frames 0 and 1
        b.Write(7 * 4096, [1, 2, 3]);              // frame 15
        a.Write(15 * 4096 + 10, [4]);              // frame 15 again, through the other alias
        var runs = new List<(long, long)>();
        Assert.Equal(3 * 4096L, a.Persist((f, n) => runs.Add((f, n))));
        Assert.Equal([(0L, 2L), (15, 1)], runs);
        Assert.Equal(0, b.Persist());
        Assert.Equal(new byte[] { 1, 2, 3 }, new ReadOnlySpan<byte>(dax.Address + 15 * 4096, 3).ToArray());
        Assert.Equal(4, dax.Address[15 * 4096 + 10]);

        a.Dispose();
        Assert.Equal(1, dax.Region.Pins.PinCount(10));
        Assert.Equal(huge ? 1 : 0, dax.Region.Pins.PinCount(0));
        Assert.Throws<ObjectDisposedException>(() => a.Write(0, [1]));
        Assert.Throws<ArgumentOutOfRangeException>(() => dax.MapRange(dax.Region.FrameCount - 1, 2));
        b.Dispose();
        Assert.False(dax.Region.Pins.AnyPinned);
    }

    [Fact]
    public void DataWrittenThroughARangeIsThereForTheNextMapper()
    {
        string path = NewDevDax(DescriptorMapKind.Device);
        using (DaxNamespace dax = DaxNamespace.Map(path))
        using (DaxMapping m = dax.MapRange(3, 2))
        {
            m.Write(4096, "devdax"u8);
            Assert.Equal(4096, m.Persist());
        }
        // The pins of that process were in a private copy: the reserve on the file holds none.
        using DaxNamespace again = DaxNamespace.Map(path);
        Assert.False(again.Region.Pins.AnyPinned);
        Assert.Equal("devdax"u8.ToArray(), new ReadOnlySpan<byte>(again.Address + 4 * 4096, 6).ToArray());
    }

    [Fact]
    public void MediaErrorsAreInjectedListedAndClearedOnDevDaxAndARangeOverOneIsRefused()
    {
        string path = NewDevDax();
        using (DaxNamespace dax = DaxNamespace.Map(path))
        {
            using DaxMapping m = dax.MapRange(256, 1);
            m.Write(0, new byte[] { 9, 9, 9 });
            m.Persist();
        }
        (int exit, string output, string err) = ChildProcess.Run(ChildProcess.CliDll, ["namespace", "inject-error", "--path", path, "--block", "2050", "--count", "4"]);
        Assert.True(exit == 0, err);
        Assert.Contains("2050+4", output);
        Assert.Equal(4, MediaErrors.List(path).TotalBlocks);

        using (DaxNamespace dax = DaxNamespace.Map(path))
        {
            Assert.Equal(4, dax.BadBlocks.TotalBlocks);
            // Blocks 2050..2053 are in page 256 (blocks 2048..2055): only ranges over it are refused.
            var e = Assert.Throws<MediaErrorException>(() => dax.MapRange(250, 10));
            Assert.Contains("2050+4", e.Message);
            Assert.Equal(5, e.HResult);
            dax.MapRange(255, 1).Dispose();
            dax.MapRange(257, 4).Dispose();
            Assert.False(dax.Region.Pins.AnyPinned); // the refused range left no pin behind
            // While mapped the list cannot change under the mapper: injecting needs the exclusive claim.
            Assert.Throws<NamespaceInUseException>(() => MediaErrors.Inject(path, 0, 1));
            Assert.Throws<NamespaceInUseException>(() => MediaErrors.Clear(path));
            Assert.Equal(4, MediaErrors.List(path).TotalBlocks); // listing needs no claim
        }

        (exit, output, err) = ChildProcess.Run(ChildProcess.CliDll, ["namespace", "clear-errors", "--path", path]);
        Assert.True(exit == 0, err);
        Assert.Contains("4 bad block(s) cleared", output);
        using (DaxNamespace dax = DaxNamespace.Map(path))
        {
            Assert.True(dax.BadBlocks.IsEmpty);
            using DaxMapping m = dax.MapRange(256, 1);
            // The cleared blocks read as zeros (lost with the error); the rest of the page kept its data.
            Assert.Equal(new byte[] { 9, 9, 9 }, new ReadOnlySpan<byte>(m.Address, 3).ToArray());
            Assert.True(new ReadOnlySpan<byte>(m.Address + 2 * 512, 4 * 512).IndexOfAnyExcept((byte)0) < 0);
        }
        Assert.Equal(NamespaceMode.DevDax, PmemNamespace.ReadInfo(path, out _).Mode); // still devdax, still refused as a block device
        Assert.Throws<InvalidNamespaceException>(() => PmemNamespace.Open(path));
    }

    [Fact]
    public void NewBlocksAreFormatOneTwoOlderOnesStillOpenAndANewerUnknownModeIsRefusedAsNewer()
    {
        string devdax = NewDevDax();
        string raw = _scratch.NewNamespace(4 << 20);
        Assert.Equal((1, 2), ((int)PmemNamespace.ReadInfo(devdax, out _).Major, (int)PmemNamespace.ReadInfo(devdax, out _).Minor));
        Assert.Equal(2, PmemNamespace.ReadInfo(raw, out _).Minor);

        // Files written before: raw 1.0 (no bad-block table) and 1.1, devdax 1.1 (written before the bump).
        RewriteBothInfoBlocks(raw, i => i with { Minor = 0 });
        using (PmemNamespace ns = PmemNamespace.Open(raw)) Assert.Equal(0, ns.Info.Minor);
        RewriteBothInfoBlocks(raw, i => i with { Minor = 1 });
        using (PmemNamespace ns = PmemNamespace.Open(raw)) Assert.Equal(1, ns.Info.Minor);
        RewriteBothInfoBlocks(devdax, i => i with { Minor = 1 });
        using (DaxNamespace dax = DaxNamespace.Map(devdax)) Assert.Equal(1, dax.Info.Minor);
        // A bad-block update keeps the minor it found (a 1.1 reader still reads the block).
        MediaErrors.Inject(devdax, 0, 1);
        Assert.Equal(1, PmemNamespace.ReadInfo(devdax, out _).Minor);

        // A newer minor with only known values is read (minors add, they do not change).
        RewriteBothInfoBlocks(raw, i => i with { Minor = 3 });
        using (PmemNamespace ns = PmemNamespace.Open(raw)) Assert.Equal(3, ns.Info.Minor);
        // What a later build might write: a newer minor with a mode this build does not know.
        RewriteBothInfoBlocks(raw, i => i with { Mode = (NamespaceMode)4 });
        var e = Assert.Throws<InvalidNamespaceException>(() => PmemNamespace.Open(raw));
        Assert.Contains("unknown mode 4", e.Message);
        Assert.Contains("format 1.3 is newer than this build, which reads up to 1.2", e.Message);
        Assert.Contains("info block of a newer format", e.Message);
    }
}
