using PfnBlock.Memory;
using PfnBlock.Namespaces;

namespace PfnBlock.Tests.Namespaces;

/// <summary>
/// The device descriptor map's reserve: laid out in front of the data as the kernel's pfn
/// namespaces are, validated on every open and rebuilt where it fails, never trusted; run-time
/// state a dead process left is cleared; a read-only opener keeps its pins in a private copy.
/// </summary>
public sealed unsafe class DescriptorReserveTests : IDisposable
{
    private readonly Scratch _scratch = new();
    public void Dispose() => _scratch.Dispose();

    [Theory]
    [InlineData(64L << 20, 4096)]
    [InlineData(64L << 20, 2 << 20)]
    [InlineData(1L << 30, 2 << 20)]
    public void TheReserveHolds64BytesPerDataFrameRoundedToTheAlignment(long size, long align)
    {
        (long dataOffset, long reserve, long frames) = DescriptorReserve.Layout(size, align);
        Assert.Equal(0, dataOffset % align);
        Assert.Equal(dataOffset, NamespaceInfoBlock.Size + reserve);
        Assert.True(reserve >= DescriptorReserve.Needed(frames));
        // No more than the rounding and nd_pfn_init's sizing for the frames the reserve itself displaces.
        Assert.True(reserve - DescriptorReserve.Needed(frames) < align + (512 << 10));
        Assert.Equal((NamespaceInfoBlock.BackupOffset(size) - dataOffset) / 4096, frames);
        // The thread's "1.5 % of storage": 64 / 4096 = 1.56 % of the data, plus header and checksums.
        Assert.InRange((double)DescriptorReserve.Needed(frames) / (frames * 4096), 0.0156, 0.0160);
    }

    [Fact]
    public void ADamagedBlockOrHeaderIsRebuiltAndStaleCountsCleared()
    {
        string path = _scratch.NewPath();
        var space = new PhysicalAddressSpace();
        using (PmemNamespace ns = PmemNamespace.Create(path, new() { Size = 8 << 20, Align = 4096, MapKind = DescriptorMapKind.Device }, space))
        {
            Assert.Equal(new DescriptorReserveReport(false, 0, 0, (ns.Region.FrameCount + 63) / 64), ns.DescriptorReport);
            Assert.True(ns.Region.Pins.TryPin(70, 3, out _)); // never unpinned: the process "dies" holding it
            ns.Region.Descriptors.Get(200)->Index = 12345;   // a stray write into block 3
            new Span<byte>(ns.DataAddress, 4096).Fill(0x5A);
        }
        using (PmemNamespace ns = PmemNamespace.Open(path, space))
        {
            DescriptorReserveReport r = ns.DescriptorReport!.Value;
            Assert.False(r.HeaderRebuilt);
            Assert.Equal(1, r.BlocksRebuilt);
            Assert.Equal(3, r.RuntimeReset);
            Assert.Equal(200UL, ns.Region.Descriptors.Get(200)->Index);
            Assert.False(ns.Region.Pins.AnyPinned);
            Assert.Null(DescriptorReserve.Verify(ns.BaseAddress + ns.Info.MapOffset, ns.Info));
            Assert.Equal(0x5A, ns.DataAddress[4095]); // the data area is not the reserve's to touch
            ns.BaseAddress[ns.Info.MapOffset + 20] ^= 1; // the header's uuid
        }
        using (PmemNamespace ns = PmemNamespace.Open(path, space))
        {
            Assert.True(ns.DescriptorReport!.Value.HeaderRebuilt);
            Assert.Null(DescriptorReserve.Verify(ns.BaseAddress + ns.Info.MapOffset, ns.Info));
            Assert.Equal(0x5A, ns.DataAddress[0]);
        }
    }

    [Fact]
    public void AReadOnlyOpenerPinsInAPrivateCopy()
    {
        string path = _scratch.NewPath();
        var space = new PhysicalAddressSpace();
        PmemNamespace.Create(path, new() { Size = 8 << 20, Align = 4096, MapKind = DescriptorMapKind.Device }, space).Dispose();
        byte[] before = File.ReadAllBytes(path);
        using (PmemNamespace ro = PmemNamespace.Open(path, space, readOnly: true))
        {
            Assert.True(ro.Region.Pins.TryPin(5, 1, out long token));
            Assert.Equal(1, ro.Region.Pins.PinCount(5));
            ro.Region.Pins.Unpin(5, 1, token);
            ro.Region.Descriptors.Get(9)->Flags = (ulong)PageFlags.Dirty;
        }
        Assert.Equal(before, File.ReadAllBytes(path));
    }

    [Fact]
    public void AnInfoBlockClaimingAReserveItDoesNotHaveIsInvalid()
    {
        var info = new NamespaceInfoBlock
        {
            Uuid = Guid.NewGuid(), NamespaceSize = 8 << 20, DataOffset = 1 << 20, DataSize = 4 << 20, Align = 4096,
            Mode = NamespaceMode.Raw, SectorSize = 512, MapKind = DescriptorMapKind.Device, MapOffset = 4096, MapSize = 4096,
        };
        Assert.Contains("needs a reserve", info.CheckGeometry(8 << 20));
        Assert.Contains("keeps none on the device", (info with { MapKind = DescriptorMapKind.Dense }).CheckGeometry(8 << 20));
        Assert.Null((info with { MapSize = (1 << 20) - 4096 }).CheckGeometry(8 << 20));
    }
}
