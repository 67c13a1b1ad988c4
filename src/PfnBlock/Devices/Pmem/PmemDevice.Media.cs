using PfnBlock.Block;
using PfnBlock.Memory;
using PfnBlock.Namespaces;

namespace PfnBlock.Devices.Pmem;

/// <summary>
/// The pmem device's view of its medium beyond plain bytes: holes punched out of a sparse
/// namespace file, and the namespace's bad blocks (media errors).
/// </summary>
public sealed unsafe partial class PmemDevice
{
    /// <summary>
    /// Reads touching a bad block fail (the kernel's <c>pmem_do_read</c> on <c>is_bad_pmem</c>); reads
    /// of a range that may hold holes zero-fill them; the others copy out.
    /// </summary>
    private void SubmitRead(Bio bio)
    {
        if (TouchesBadBlocks(bio.Sector, bio.Size)) bio.Complete(BlockStatus.MediaError);
        else if (_ns.MayHaveHoles(bio.Sector << Bio.SectorShift, bio.Size)) bio.Complete(ReadAroundHoles(bio));
        else base.SubmitCore(bio);
    }

    /// <summary>
    /// A plugged read joins a batch unless it touches a bad block or a possible hole (those take
    /// <see cref="SubmitRead"/>'s paths); a plugged write once its holes have memory again.
    /// </summary>
    protected override bool PrepareBatched(Bio bio)
    {
        long offset = bio.Sector << Bio.SectorShift;
        if (bio.Op == BioOp.Read) return !TouchesBadBlocks(bio.Sector, bio.Size) && !_ns.MayHaveHoles(offset, bio.Size);
        return _ns.ReserveForWrite(offset, bio.Size); // false: alone, where it fails with IoError
    }

    /// <summary>A batched write, now durable, is what <see cref="SubmitWrite"/> makes of one after its copy.</summary>
    protected override BlockStatus FinishBatched(Bio bio) => bio.Op == BioOp.Write ? Written(bio) : BlockStatus.Ok;

    /// <summary>After a write's data was stored: its holes are data now, and it replaced the bad blocks it covered.</summary>
    private BlockStatus Written(Bio bio)
    {
        _ns.NoteWritten(bio.Sector << Bio.SectorShift, bio.Size);
        return ClearBadBlocks(bio.Sector, bio.Size);
    }

    /// <summary>
    /// True when a page of the device's bytes [<paramref name="offset"/>, +<paramref name="length"/>)
    /// may have been punched out of the namespace file: such a page must not be loaded through a
    /// direct-access mapping (on tmpfs the load would allocate it, and raise SIGBUS when full).
    /// </summary>
    public bool MayHaveHoles(long offset, long length) => _ns.MayHaveHoles(offset, length);

    /// <summary>
    /// Reads a range some of whose pages may have been punched out of the namespace file: the
    /// destination gets zeros for a hole instead of a load through the mapping, which on tmpfs
    /// would allocate the page again (a read undoing a discard) and, on a full tmpfs, kill the
    /// process with SIGBUS.
    /// </summary>
    private BlockStatus ReadAroundHoles(Bio bio)
    {
        PhysicalAddressSpace space = AddressSpace;
        long at = bio.Sector << Bio.SectorShift;
        foreach (BioVec seg in bio.Segments)
        {
            byte* mem = space.TryKmap(seg.Pfn, seg.Offset, seg.Length);
            if (mem == null) return BlockStatus.Invalid;
            long segStart = at, segEnd = at + seg.Length;
            while (at < segEnd)
            {
                long stop = _ns.AllocationRun(at, segEnd, out bool hole);
                if (stop <= at) stop = segEnd; // cannot happen (a run covers at least its first page); never loop
                nuint n = (nuint)(stop - at);
                byte* dst = mem + (at - segStart);
                if (hole) System.Runtime.InteropServices.NativeMemory.Clear(dst, n);
                else Buffer.MemoryCopy(BaseAddress + at, dst, n, n);
                at = stop;
            }
        }
        return BlockStatus.Ok;
    }

    /// <summary>
    /// Gives holes in the range their memory back first (a full tmpfs fails the write here rather than
    /// with SIGBUS), writes, then forgets the bad blocks the write replaced.
    /// </summary>
    private void SubmitWrite(Bio bio)
    {
        long offset = bio.Sector << Bio.SectorShift;
        if (!_ns.ReserveForWrite(offset, bio.Size))
        {
            bio.Complete(BlockStatus.IoError);
            return;
        }
        BlockStatus status = Process(bio);
        bio.Complete(status == BlockStatus.Ok ? Written(bio) : status);
    }

    /// <summary>The namespace's bad-block list, whose 512-byte blocks are this device's sectors.</summary>
    public bool FindBadSectors(long sector, long sectors, out long badStart, out long badCount)
    {
        bool found = _ns.BadBlocks.FirstOverlap(sector, sectors, out BadBlockRange r);
        (badStart, badCount) = (r.Start, r.Count);
        return found;
    }

    /// <summary>True when any 512-byte block of the range is in the namespace's bad-block list.</summary>
    private bool TouchesBadBlocks(long sector, long bytes)
    {
        BadBlockList bad = _ns.BadBlocks;
        return !bad.IsEmpty && bad.Overlaps(sector, bytes >> Bio.SectorShift);
    }

    /// <summary>
    /// After whole sectors were written (data, zeros or a discard): they no longer hold a media
    /// error. The new data is made durable before the list forgets the error, so a crash between
    /// the two leaves the block listed as bad (its rewrite was not acknowledged), never stale data
    /// that reads as good.
    /// </summary>
    private BlockStatus ClearBadBlocks(long sector, long bytes)
    {
        long blocks = bytes >> Bio.SectorShift;
        BadBlockList bad = _ns.BadBlocks;
        if (bad.IsEmpty || !bad.Overlaps(sector, blocks)) return BlockStatus.Ok;
        BlockStatus status = PersistRange(sector << Bio.SectorShift, bytes);
        if (status != BlockStatus.Ok) return status;
        try
        {
            _ns.ClearBadBlocks(sector, blocks, zeroData: false);
            return BlockStatus.Ok;
        }
        catch (IOException)
        {
            return BlockStatus.IoError;
        }
    }

    /// <summary>
    /// Discard and write-zeroes: on a namespace that punches holes (tmpfs), the whole pages of the
    /// range leave the file unless the bio asks to keep them allocated (NO_HOLE); partial pages, and
    /// everything elsewhere, are zeroed with non-temporal stores. The caller holds the pin fence.
    /// </summary>
    protected override BlockStatus ZeroRange(long offset, long length, bool mayUnmap)
    {
        long end = offset + length;
        if (mayUnmap && _ns.PunchesHoles)
        {
            long first = (offset + Pfn.PageSize - 1) & ~(long)(Pfn.PageSize - 1), last = end & ~(long)(Pfn.PageSize - 1);
            if (first < last && _ns.PunchHole(first, last - first))
            {
                BlockStatus head = StoreZeros(offset, first - offset);
                return head != BlockStatus.Ok ? head : StoreZeros(last, end - last);
            }
        }
        return StoreZeros(offset, length);
    }

    private BlockStatus StoreZeros(long offset, long length)
    {
        if (length == 0) return BlockStatus.Ok;
        if (!_ns.ReserveForWrite(offset, length)) return BlockStatus.IoError;
        ZeroData(BaseAddress + offset, (nuint)length);
        _ns.NoteWritten(offset, length);
        return BlockStatus.Ok;
    }

    /// <inheritdoc/>
    protected override long AllocationRun(long offset, long end, out bool hole) => _ns.AllocationRun(offset, end, out hole);

    /// <summary>Holes and zero pages as <see cref="MemoryDevice"/> finds them, except that bad blocks (whole logical blocks around them) are data: their reads fail, so they must never be reported as zeros.</summary>
    public override AllocationState QueryAllocation(long sector, long sectors, out long run)
    {
        BadBlockList bad = _ns.BadBlocks;
        if (!bad.IsEmpty && bad.FirstOverlap(sector, sectors, out BadBlockRange r))
        {
            long lbs = _limits.LogicalBlockSize >> Bio.SectorShift;
            long badStart = r.Start / lbs * lbs, badEnd = (r.End + lbs - 1) / lbs * lbs;
            if (badStart <= sector)
            {
                run = Math.Min(badEnd, sector + sectors) - sector;
                return AllocationState.Data;
            }
            sectors = badStart - sector;
        }
        return base.QueryAllocation(sector, sectors, out run);
    }
}
