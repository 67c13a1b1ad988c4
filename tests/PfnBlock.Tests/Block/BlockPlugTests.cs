using PfnBlock.Block;
using PfnBlock.Devices.Pmem;
using PfnBlock.Memory;

namespace PfnBlock.Tests.Block;

/// <summary>
/// Plugging on a memory device: bios wait in the plug until it closes or fills, then complete as a
/// batch copied side by side; a caller that waits for its bio is never plugged; media errors, holes
/// and FUA in a batch take their own paths. (Every device kind and target also runs plugged batches
/// against a model in the conformance suite.)
/// </summary>
public sealed class BlockPlugTests : IDisposable
{
    private readonly Scratch _scratch = new();
    private readonly PmemDevice _dev;
    private readonly DramArena _arena;

    public BlockPlugTests()
    {
        _dev = PmemDevice.Open(_scratch.NewNamespace(8 << 20));
        _arena = DramArena.Create(4 << 20, _dev.AddressSpace, "plug-buffers");
    }

    public void Dispose()
    {
        _arena.Dispose();
        _dev.Dispose();
        _scratch.Dispose();
    }

    private Span<byte> Bytes(Pfn frame) => _dev.AddressSpace.KmapSpan(frame, 0, Pfn.PageSize);

    private Bio NewBio(BioOp op, long page, Pfn frame, List<BlockStatus> seen, BioFlags flags = BioFlags.None)
    {
        Bio bio = new Bio().Init(op, page * (Pfn.PageSize >> Bio.SectorShift), flags);
        bio.AddVec(frame, 0, Pfn.PageSize);
        bio.EndIo = b => seen.Add(b.Status);
        return bio;
    }

    private BlockStatus Io(BioOp op, long page, Pfn frame) =>
        _dev.SubmitAndWait(new Bio().Init(op, page * (Pfn.PageSize >> Bio.SectorShift)).AddVec(frame, 0, Pfn.PageSize));

    /// <summary>New frames; the first <paramref name="written"/> of them filled with <paramref name="fill"/> + i and written (unplugged) to pages <paramref name="firstPage"/> + i.</summary>
    private Pfn[] Frames(int count, int written, long firstPage, int fill)
    {
        Pfn[] frames = [.. Enumerable.Range(0, count).Select(_ => _arena.Allocator.Allocate(1).First)];
        for (int i = 0; i < written; i++)
        {
            Bytes(frames[i]).Fill((byte)(fill + i));
            Assert.Equal(BlockStatus.Ok, Io(BioOp.Write, firstPage + i, frames[i]));
        }
        return frames;
    }

    [Fact]
    public void PluggedBiosCompleteWhenThePlugClosesWithTheirData()
    {
        Pfn[] frames = Frames(8, written: 4, firstPage: 100, fill: 0x10);
        var seen = new List<BlockStatus>();
        BlockPlug.Start();
        for (int i = 0; i < 4; i++)
        {
            Bytes(frames[4 + i]).Clear();
            _dev.Submit(NewBio(BioOp.Read, 100 + i, frames[4 + i], seen));
        }
        for (int i = 0; i < 4; i++)
        {
            Bytes(frames[i]).Fill((byte)(0x20 + i));
            _dev.Submit(NewBio(BioOp.Write, 200 + i, frames[i], seen));
        }
        Assert.Empty(seen); // a synchronous device's bios wait in the plug
        BlockPlug.Finish();
        Assert.Equal(Enumerable.Repeat(BlockStatus.Ok, 8), seen);
        for (int i = 0; i < 4; i++)
        {
            Assert.True(Bytes(frames[4 + i]).IndexOfAnyExcept((byte)(0x10 + i)) < 0, $"plugged read {i}");
            Assert.Equal(BlockStatus.Ok, Io(BioOp.Read, 200 + i, frames[4 + i]));
            Assert.True(Bytes(frames[4 + i]).IndexOfAnyExcept((byte)(0x20 + i)) < 0, $"plugged write {i}");
        }
        Assert.Equal(8, _dev.Stats.Snapshot().Write.Ios);
    }

    [Fact]
    public void APlugFlushesItselfWhenFullAndNestedPlugsFlushAtTheOutermostFinish()
    {
        Pfn frame = _arena.Allocator.Allocate(1).First;
        var seen = new List<BlockStatus>();
        BlockPlug.Start();
        BlockPlug.Start();
        for (int i = 0; i < BlockPlug.MaxBios - 1; i++) _dev.Submit(NewBio(BioOp.Read, i, frame, seen));
        Assert.Empty(seen);
        _dev.Submit(NewBio(BioOp.Read, 40, frame, seen));
        Assert.Equal(BlockPlug.MaxBios, seen.Count);
        _dev.Submit(NewBio(BioOp.Read, 41, frame, seen));
        BlockPlug.Finish();
        Assert.Equal(BlockPlug.MaxBios, seen.Count); // the inner Finish does not flush
        BlockPlug.Finish();
        Assert.Equal(BlockPlug.MaxBios + 1, seen.Count);
        Assert.Throws<InvalidOperationException>(BlockPlug.Finish);
    }

    [Fact]
    public void ASubmissionThatWaitsForItsBioIsNotPlugged()
    {
        Pfn frame = _arena.Allocator.Allocate(1).First;
        Bytes(frame).Fill(0x5c);
        var seen = new List<BlockStatus>();
        BlockPlug.Start();
        try
        {
            _dev.Submit(NewBio(BioOp.Read, 7, frame, seen));
            // SubmitAndWait inside the plug completes at once (it would wait forever in the plug).
            Assert.Equal(BlockStatus.Ok, Io(BioOp.Write, 3, frame));
            Assert.Empty(seen);
        }
        finally
        {
            BlockPlug.Finish();
        }
        Assert.Single(seen);
        Bytes(frame).Clear();
        Assert.Equal(BlockStatus.Ok, Io(BioOp.Read, 3, frame));
        Assert.True(Bytes(frame).IndexOfAnyExcept((byte)0x5c) < 0);
    }

    [Fact]
    public void MediaErrorsHolesAndFuaInABatchTakeTheirOwnPaths()
    {
        Pfn[] frames = Frames(6, written: 6, firstPage: 10, fill: 0x40);
        long pageSectors = Pfn.PageSize >> Bio.SectorShift;
        _dev.Namespace.AddBadBlocks(11 * pageSectors + 3, 1);                // page 11: a media error
        Bio discard = new Bio().Init(BioOp.Discard, 12 * pageSectors);                 // page 12: a hole
        discard.Iter.Size = Pfn.PageSize;
        Assert.Equal(BlockStatus.Ok, _dev.SubmitAndWait(discard));
        var seen = new List<BlockStatus>();
        var bios = new List<Bio>();
        BlockPlug.Start();
        for (int i = 0; i < 3; i++)
        {
            Bytes(frames[i]).Fill(0xEE);
            Bio bio = NewBio(BioOp.Read, 10 + i, frames[i], seen);
            bios.Add(bio);
            _dev.Submit(bio);
        }
        Bytes(frames[3]).Fill(0x77);
        _dev.Submit(NewBio(BioOp.Write, 11, frames[3], seen, BioFlags.Fua)); // rewrites the bad page whole
        Bytes(frames[4]).Fill(0x78);
        _dev.Submit(NewBio(BioOp.Write, 13, frames[4], seen));
        BlockPlug.Finish();

        Assert.Equal(5, seen.Count);
        Assert.Equal(BlockStatus.Ok, bios[0].Status);
        Assert.True(Bytes(frames[0]).IndexOfAnyExcept((byte)0x40) < 0);
        Assert.Equal(BlockStatus.MediaError, bios[1].Status);
        Assert.Equal(BlockStatus.Ok, bios[2].Status);
        Assert.True(Bytes(frames[2]).IndexOfAnyExcept((byte)0) < 0, "a hole reads as zeros");
        Assert.True(_dev.Namespace.BadBlocks.IsEmpty, "the whole-page write repaired the media error");
        Assert.Equal(BlockStatus.Ok, Io(BioOp.Read, 11, frames[5]));
        Assert.True(Bytes(frames[5]).IndexOfAnyExcept((byte)0x77) < 0);
        Assert.Equal(BlockStatus.Ok, Io(BioOp.Read, 13, frames[5]));
        Assert.True(Bytes(frames[5]).IndexOfAnyExcept((byte)0x78) < 0);
    }
}
