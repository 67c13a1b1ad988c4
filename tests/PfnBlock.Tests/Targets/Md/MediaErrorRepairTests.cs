using PfnBlock.Block;
using PfnBlock.Devices.Pmem;
using PfnBlock.Targets.Md;

namespace PfnBlock.Tests.Targets.Md;

/// <summary>
/// Media errors on real pmem members (the namespace's persistent bad-block list, as
/// <c>pfnblock namespace inject-error</c> makes it): a read through a mirror or a RAID5 that
/// touches a bad block succeeds from redundancy, the array rewrites the range so the member's
/// bad blocks are cleared, and the member stays in the array.
/// </summary>
public sealed class MediaErrorRepairTests : IDisposable
{
    private readonly MdHarness _h = new();

    public void Dispose() => _h.Dispose();

    [Theory]
    [InlineData(1, 2)]
    [InlineData(5, 4)]
    public void ABadBlockOnAMemberIsReadFromRedundancyAndRewrittenAway(int level, int members)
    {
        string[] m = _h.Members(members);
        MdSuperblock sb = _h.Create(level, m);
        IBlockDevice md = _h.Open(MdHarness.Spec(m));
        MdArray array = MdArray.Of(md)!;
        byte[] data = Stamp.Make(0, 1 << 20, 9);
        Assert.Equal(BlockStatus.Ok, _h.Write(md, 0, data));

        // Poison 3 blocks of member 0's data area where array data lives (the first chunk of a
        // RAID5 is on member 0; every sector of a mirror is on both legs).
        var pmem = (PmemDevice)_h.Open(m[0]);
        long bad = (long)sb.DataOffset + 17;
        pmem.Namespace.AddBadBlocks(bad, 3);
        Assert.Equal(BlockStatus.MediaError, ReadMember(pmem, bad & ~7L));

        for (int i = 0; i < 4; i++) Assert.Equal(data, _h.Read(md, 0, data.Length)); // some read lands on member 0
        Assert.True(SpinWait.SpinUntil(() => array.CorrectedSectors > 0 && pmem.Namespace.BadBlocks.IsEmpty, 10_000),
            $"not repaired: corrected {array.CorrectedSectors}, bad blocks left {pmem.Namespace.BadBlocks.TotalBlocks}; {string.Join(" | ", array.Log)}");
        Assert.Equal(BlockStatus.Ok, ReadMember(pmem, bad & ~7L));
        Assert.All(array.Members, s => Assert.Equal(MdMemberState.InSync, s.State));
        Assert.Equal(data, _h.Read(md, 0, data.Length));
        array.StartCheck();
        Assert.True(array.WaitForSync(TimeSpan.FromSeconds(60)));
        Assert.Equal(0, array.MismatchCount); // the rewrite restored the member's share, parity or copy alike
    }

    private BlockStatus ReadMember(IBlockDevice member, long sector)
    {
        _h.TryRead(member, sector << 9, 4096, out BlockStatus status);
        return status;
    }
}
