using CsCheck;
using PfnBlock.Memory;

namespace PfnBlock.Tests.Memory;

/// <summary>The section table: pfn → region and address, region hot-add and hot-remove.</summary>
public sealed unsafe class PhysicalAddressSpaceTests
{
    private const long Section = PhysicalAddressSpace.FramesPerSection;

    [Fact]
    public void EveryFrameOfSeveralRegionsResolvesToItsRegionAndAddress()
    {
        var space = new PhysicalAddressSpace();
        long[] sizes = [1, 100, Section - 1, Section, Section + 1, 3 * Section + 7];
        var regions = sizes.Select(n => new FakeRegion(n)).ToArray();
        foreach (FakeRegion r in regions)
        {
            Pfn first = space.Add(r);
            Assert.Equal(r.PfnAt(0), first);
            Assert.Equal(0UL, r.BaseFrame % (ulong)Section); // regions start on a section
            Assert.Same(space, r.AddressSpace);
        }
        // Disjoint, in order, none at frame 0.
        for (int i = 0; i < regions.Length; i++)
        {
            Assert.True(regions[i].BaseFrame > 0);
            if (i > 0) Assert.True(regions[i].BaseFrame >= regions[i - 1].BaseFrame + (ulong)regions[i - 1].FrameCount);
        }
        var rng = new Random(1);
        foreach (FakeRegion r in regions)
        {
            foreach (long i in new[] { 0, r.FrameCount - 1, rng.NextInt64(r.FrameCount), rng.NextInt64(r.FrameCount) })
            {
                Pfn pfn = r.PfnAt(i);
                Assert.Same(r, space.FindRegion(pfn));
                Assert.True(space.IsValid(pfn));
                uint offset = (uint)rng.Next(Pfn.PageSize);
                Assert.Equal((nint)(r.BaseAddress + i * Pfn.PageSize + offset), (nint)space.Kmap(pfn, offset, 1));
                Assert.Equal((nint)(r.BaseAddress + i * Pfn.PageSize), (nint)space.TryKmap(pfn, 0, Pfn.PageSize));
            }
            // The frames after the region's end in its last section belong to nobody.
            var past = new Pfn(r.BaseFrame + (ulong)r.FrameCount);
            if (r.FrameCount % Section != 0) Assert.Null(space.FindRegion(past));
        }
        Assert.Equal(regions.Length, space.Regions.Count);
    }

    [Fact]
    public void LookupsMatchALinearScanUnderRandomAddsAndRemoves()
    {
        // ops: positive = add a region of that many frames, negative = remove the n-th live region; then probe pfns.
        Gen.Select(Gen.Long[-5, 3 * Section].Array[1, 12], Gen.ULong[0, 40 * (ulong)Section].Array[20]).Sample((ops, probes) =>
        {
            var space = new PhysicalAddressSpace();
            var live = new List<FakeRegion>();
            var everUsed = new List<(ulong Base, long Count)>();
            foreach (long op in ops)
            {
                if (op > 0)
                {
                    var r = new FakeRegion(op);
                    space.Add(r);
                    // Never reuses the frames of any region, live or removed.
                    foreach ((ulong b, long c) in everUsed)
                        Assert.True(r.BaseFrame >= b + (ulong)c || r.BaseFrame + (ulong)r.FrameCount <= b);
                    everUsed.Add((r.BaseFrame, r.FrameCount));
                    live.Add(r);
                }
                else if (live.Count > 0)
                {
                    FakeRegion r = live[(int)(-op % live.Count)];
                    space.Remove(r);
                    Assert.Null(r.AddressSpace);
                    live.Remove(r);
                }
            }
            foreach (ulong frame in probes.Concat(live.SelectMany(r => new[] { r.BaseFrame, r.BaseFrame + (ulong)r.FrameCount - 1, r.BaseFrame + (ulong)r.FrameCount })))
            {
                FakeRegion? expected = live.FirstOrDefault(r => frame >= r.BaseFrame && frame < r.BaseFrame + (ulong)r.FrameCount);
                Assert.Same(expected, space.FindRegion(new Pfn(frame, PfnFlags.Dev)));
            }
        });
    }

    [Fact]
    public void PfnsOfARemovedRegionStayInvalidAndAreNeverReused()
    {
        var space = new PhysicalAddressSpace();
        var a = new FakeRegion(10);
        space.Add(a);
        Pfn stale = a.PfnAt(3);
        ulong aBase = a.BaseFrame;
        space.Remove(a);
        Assert.False(space.IsValid(stale));
        Assert.True(space.TryKmap(stale, 0, 1) == null);
        Assert.Throws<FrameNotAddressableException>(() => space.Kmap(stale, 0, 1));
        var b = new FakeRegion(10);
        space.Add(b);
        Assert.NotEqual(aBase, b.BaseFrame);
        Assert.False(space.IsValid(stale));
        Assert.DoesNotContain(a, space.Regions);
        space.Remove(a); // removing twice is harmless
    }

    [Fact]
    public void KmapPastTheRegionEndThrows()
    {
        var space = new PhysicalAddressSpace();
        var r = new FakeRegion(4);
        space.Add(r);
        Pfn last = r.PfnAt(3);
        Assert.NotEqual(0, (nint)space.Kmap(last, 0, Pfn.PageSize));
        Assert.NotEqual(0, (nint)space.Kmap(r.PfnAt(0), 0, 4 * Pfn.PageSize)); // a multi-page range inside the region is fine
        var e = Assert.Throws<FrameNotAddressableException>(() => space.Kmap(last, 0, Pfn.PageSize + 1));
        Assert.Contains("past the end of region", e.Message);
        Assert.Throws<FrameNotAddressableException>(() => space.Kmap(last, Pfn.PageSize - 1, 2));
        Assert.Throws<FrameNotAddressableException>(() => space.Kmap(r.PfnAt(0), 5 * Pfn.PageSize, 1));
        Assert.True(space.TryKmap(last, 0, Pfn.PageSize + 1) == null);
        // The next frame number is in the same section but not the region's.
        var beyond = new Pfn(last.Frame + 1);
        Assert.Contains("not a frame of any registered region", Assert.Throws<FrameNotAddressableException>(() => space.Kmap(beyond, 0, 1)).Message);
        Assert.Throws<FrameNotAddressableException>(() => space.Kmap(default, 0, 1));
        Assert.Throws<ArgumentOutOfRangeException>(() => r.PfnAt(4));
    }

    [Fact]
    public void DeviceOnlyFramesAreValidButNotKmappable()
    {
        var space = new PhysicalAddressSpace();
        var r = new FakeRegion(8, RegionKind.DeviceOnly);
        space.Add(r);
        Assert.False(r.IsCpuAddressable);
        Assert.True(space.IsValid(r.PfnAt(2)));
        Assert.Contains("no CPU mapping", Assert.Throws<FrameNotAddressableException>(() => space.Kmap(r.PfnAt(2), 0, 1)).Message);
        Assert.True(space.TryKmap(r.PfnAt(2), 0, 1) == null);
    }

    [Fact]
    public void RegionsAreRegisteredOnceAndNumberedOnlyWhenRegistered()
    {
        var one = new PhysicalAddressSpace();
        var two = new PhysicalAddressSpace();
        var r = new FakeRegion(2);
        Assert.Throws<InvalidOperationException>(() => r.PfnAt(0));
        one.Add(r);
        Assert.Throws<InvalidOperationException>(() => one.Add(r));
        Assert.Throws<InvalidOperationException>(() => two.Add(r));
    }

    [Fact]
    public void RegionFlagsFollowTheDescriptorMap()
    {
        var space = new PhysicalAddressSpace();
        var dram = new FakeRegion(4, RegionKind.Dram, new DenseDescriptorMap(4));
        var bare = new FakeRegion(4, RegionKind.Pmem);
        var mapped = new FakeRegion(4, RegionKind.Pmem, new DenseDescriptorMap(4));
        foreach (var r in new[] { dram, bare, mapped }) space.Add(r);
        Assert.Equal(PfnFlags.None, dram.PfnAt(1).Flags);                  // ordinary memory
        Assert.Equal(PfnFlags.Dev, bare.PfnAt(1).Flags);                   // PFN_DEV: no descriptor
        Assert.False(bare.PfnAt(1).HasDescriptor);
        Assert.Equal(PfnFlags.Dev | PfnFlags.Map, mapped.PfnAt(1).Flags);  // PFN_DEV|PFN_MAP: devmap
        Assert.True(mapped.PfnAt(1).HasDescriptor);
        Assert.True(mapped.PfnAt(1).IsDevMap);
        dram.Dispose(); mapped.Dispose(); bare.Dispose();
        Assert.Empty(space.Regions);
    }

    [Fact]
    public void ADramArenaIsRealWritableMemory()
    {
        var space = new PhysicalAddressSpace();
        using var arena = DramArena.Create(3 * Pfn.PageSize + 1, space);
        Assert.Equal(4, arena.FrameCount); // rounded up to whole frames
        Assert.Equal(RegionKind.Dram, arena.Kind);
        Span<byte> s = space.KmapSpan(arena.PfnAt(0), 0, 4 * Pfn.PageSize);
        s.Fill(0x5A);
        Assert.Equal(0x5A, space.KmapSpan(arena.PfnAt(3), Pfn.PageSize - 1, 1)[0]);
        arena.Dispose();
        Assert.Empty(space.Regions);
        Assert.Throws<ArgumentOutOfRangeException>(() => DramArena.Create(0, space));
    }
}
