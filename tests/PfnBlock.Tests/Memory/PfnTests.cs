using CsCheck;
using PfnBlock.Memory;

namespace PfnBlock.Tests.Memory;

/// <summary>The pfn word: frame number plus flags at the bit positions of the kernel's pfn_t.h.</summary>
public sealed class PfnTests
{
    [Fact]
    public void FlagsSitAtTheKernelBitPositions()
    {
        Assert.Equal(1UL << 63, (ulong)PfnFlags.SgChain);
        Assert.Equal(1UL << 62, (ulong)PfnFlags.SgLast);
        Assert.Equal(1UL << 61, (ulong)PfnFlags.Dev);
        Assert.Equal(1UL << 60, (ulong)PfnFlags.Map);
        Assert.Equal(1UL << 59, (ulong)PfnFlags.Special);
        // PFN_FLAGS_MASK: ((u64)~PAGE_MASK) << (64 - PAGE_SHIFT), the top 12 bits.
        Assert.Equal(0xFFF0_0000_0000_0000UL, Pfn.FlagsMask);
        Assert.Equal(4096, Pfn.PageSize);
    }

    private static readonly PfnFlags[] FlagCombos =
        [PfnFlags.None, PfnFlags.Dev, PfnFlags.Map, PfnFlags.Dev | PfnFlags.Map, PfnFlags.Special, PfnFlags.Dev | PfnFlags.Special, PfnFlags.SgLast | PfnFlags.SgChain];

    [Fact]
    public void FrameAndFlagsRoundTripThroughTheRawWord()
    {
        Gen.Select(Gen.ULong[0, (1UL << 52) - 1], Gen.Int[0, FlagCombos.Length - 1]).Sample((frame, f) =>
        {
            PfnFlags flags = FlagCombos[f];
            var pfn = new Pfn(frame, flags);
            Assert.Equal(frame, pfn.Frame);
            Assert.Equal(flags, pfn.Flags);
            Assert.Equal(frame | (ulong)flags, pfn.Raw);
            Assert.Equal(pfn, Pfn.FromRaw(pfn.Raw));
            Assert.Equal(frame << 12, pfn.PhysicalAddress);
            Assert.Equal(new Pfn(frame, flags), Pfn.FromPhysical((frame << 12) + 123, flags));
            if (frame + 5 < 1UL << 52)
            {
                Pfn next = pfn.Add(5);
                Assert.Equal(frame + 5, next.Frame);
                Assert.Equal(flags, next.Flags);
            }
        });
    }

    [Fact]
    public void FramesOverlappingTheFlagBitsAreRefused()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => new Pfn(1UL << 52));
        Assert.Throws<ArgumentOutOfRangeException>(() => new Pfn(1UL << 61));
        Assert.Equal((1UL << 52) - 1, new Pfn((1UL << 52) - 1).Frame);
    }

    [Theory]
    // pfn_t_has_page: PFN_MAP set, or PFN_DEV clear.
    [InlineData(PfnFlags.None, true, false)]
    [InlineData(PfnFlags.Dev, false, false)]
    [InlineData(PfnFlags.Map, true, false)]
    [InlineData(PfnFlags.Dev | PfnFlags.Map, true, true)]
    [InlineData(PfnFlags.Dev | PfnFlags.Special, false, false)]
    [InlineData(PfnFlags.Special, true, false)]
    public void HasDescriptorAndDevMapFollowPfnT(PfnFlags flags, bool hasDescriptor, bool devMap)
    {
        var pfn = new Pfn(0x1234, flags);
        Assert.Equal(hasDescriptor, pfn.HasDescriptor);
        Assert.Equal(devMap, pfn.IsDevMap);
    }

    [Fact]
    public void EqualityCoversFlags()
    {
        Assert.NotEqual(new Pfn(7, PfnFlags.Dev), new Pfn(7));
        Assert.True(new Pfn(7, PfnFlags.Dev) == new Pfn(7, PfnFlags.Dev));
        Assert.True(new Pfn(7) != new Pfn(8));
        Assert.Equal(new Pfn(7, PfnFlags.Dev).GetHashCode(), new Pfn(7, PfnFlags.Dev).GetHashCode());
    }

    [Fact]
    public void AFrameIsOneWord()
    {
        Assert.Equal(8, System.Runtime.CompilerServices.Unsafe.SizeOf<Pfn>());
        Assert.Equal(16, System.Runtime.CompilerServices.Unsafe.SizeOf<PfnBlock.Block.BioVec>());
    }
}
