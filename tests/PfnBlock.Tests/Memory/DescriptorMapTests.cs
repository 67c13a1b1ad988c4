using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using PfnBlock.Memory;
using PfnBlock.Namespaces;

namespace PfnBlock.Tests.Memory;

/// <summary>Page descriptors (struct page): 64 bytes each, none or a dense DRAM array per region.</summary>
public sealed unsafe class DescriptorMapTests
{
    [Fact]
    public void ADescriptorIs64Bytes()
    {
        Assert.Equal(64, PageDescriptor.Size);
        Assert.Equal(64, Unsafe.SizeOf<PageDescriptor>());
        Assert.Equal(64, Marshal.SizeOf<PageDescriptor>());
    }

    [Theory]
    [InlineData(1)]
    [InlineData(255)]
    [InlineData(4096)]
    public void TheDenseMapCosts64BytesPerFrame(long frames)
    {
        using var map = new DenseDescriptorMap(frames);
        Assert.Equal(DescriptorMapKind.Dense, map.Kind);
        Assert.Equal(frames * 64, map.DramBytes);
        Assert.Equal(0, map.DeviceBytes);
        Assert.Equal(1, map.FramesPerDescriptor);
        PageDescriptor* first = map.Get(0);
        PageDescriptor* last = map.Get(frames - 1);
        Assert.Equal(0, (nint)first % 64); // cache-line aligned
        Assert.Equal((frames - 1) * 64, (long)((byte*)last - (byte*)first));
        Assert.Equal(0UL, last->Flags);    // zero-initialised
        Assert.Equal(0, last->RefCount);
        last->RefCount = 3;
        last->Flags = (ulong)PageFlags.Dirty;
        Assert.Equal(3, map.Get(frames - 1)->RefCount);
        Assert.Throws<ArgumentOutOfRangeException>(() => (nint)map.Get(frames));
        Assert.Throws<ArgumentOutOfRangeException>(() => (nint)map.Get(-1));
    }

    [Fact]
    public void TheNoneMapKeepsNothing()
    {
        IPageDescriptorMap map = DescriptorMaps.Create(DescriptorMapKind.None, 1000);
        Assert.Same(NoDescriptorMap.Instance, map);
        Assert.Equal(0, map.DramBytes);
        Assert.Equal(0, map.DeviceBytes);
        Assert.True(map.Get(5) == null);
    }

    [Fact]
    public void MapKindsHaveTheirCommandLineNames()
    {
        Assert.Equal(["none", "dense", "device", "huge", "temporary", "on-demand"], DescriptorMaps.All.Select(DescriptorMaps.Name));
        foreach (DescriptorMapKind kind in DescriptorMaps.All) Assert.Equal(kind, DescriptorMaps.Parse(DescriptorMaps.Name(kind)));
        Assert.Contains("one of: none, dense", Assert.Throws<ArgumentException>(() => DescriptorMaps.Parse("sparse")).Message);
    }

    [Fact]
    public void ANamespaceWithADenseMapHasDevMapPfns()
    {
        using var scratch = new Scratch();
        var space = new PhysicalAddressSpace();
        using (PmemNamespace ns = PmemNamespace.Create(scratch.NewPath(), new() { Size = 2 << 20, MapKind = DescriptorMapKind.Dense }, space))
        {
            Assert.Equal(DescriptorMapKind.Dense, ns.Region.Descriptors.Kind);
            Assert.Equal(ns.Region.FrameCount * 64, ns.Region.Descriptors.DramBytes);
            Assert.True(ns.Region.PfnAt(0).IsDevMap);
            Assert.True(ns.Region.PfnAt(0).HasDescriptor);
        }
        using (PmemNamespace ns = PmemNamespace.Create(scratch.NewPath(), new() { Size = 2 << 20 }, space))
        {
            Assert.Equal(0, ns.Region.Descriptors.DramBytes);
            Assert.Equal(PfnFlags.Dev, ns.Region.PfnAt(0).Flags);
            Assert.False(ns.Region.PfnAt(0).HasDescriptor);
        }
        Assert.Empty(space.Regions);
    }
}
