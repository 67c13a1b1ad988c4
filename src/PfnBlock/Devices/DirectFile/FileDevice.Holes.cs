using PfnBlock.Block;
using PfnBlock.Interop;

namespace PfnBlock.Devices.DirectFile;

/// <summary>
/// The file device's allocation map: the holes of the file (punched by discards, or never
/// written), as <c>SEEK_DATA</c>/<c>SEEK_HOLE</c> report them. Block devices report everything as data.
/// </summary>
/// <remarks>
/// Only block status asks this (NBD reads of a file device find their zeros in the data they
/// read): <c>SEEK_HOLE</c> walks the file up to the next hole, which on tmpfs costs time in
/// proportion to the data in between, too much for every read.
/// </remarks>
public sealed partial class FileDevice : IAllocationMap
{
    /// <summary>Holes of the file are holes; everything else is data (the file's bytes are not read).</summary>
    public AllocationState QueryAllocation(long sector, long sectors, out long run)
    {
        run = sectors;
        if (IsDisposed || IsBlockDevice) return AllocationState.Data;
        long offset = sector << Bio.SectorShift, end = offset + (sectors << Bio.SectorShift);
        long lbs = Limits.LogicalBlockSize;
        int fd = _engine.Fd;
        long data = Libc.lseek(fd, offset, Libc.SEEK_DATA);
        bool hole;
        long stop;
        if (data < 0)
        {
            // ENXIO: no data from here to the end of the file. Anything else: cannot tell, so data.
            hole = Libc.Errno == Libc.ENXIO;
            stop = end;
        }
        else if (data > offset)
        {
            hole = true;
            stop = Math.Min(data, end);
        }
        else
        {
            hole = false;
            long next = Libc.lseek(fd, offset, Libc.SEEK_HOLE);
            stop = next < 0 ? end : Math.Min(next, end);
        }
        // Whole logical blocks: a hole is cut short at a block boundary (a block that holds any data
        // is data), data is extended to one.
        stop = hole ? stop & ~(lbs - 1) : Math.Min(end, (stop + lbs - 1) & ~(lbs - 1));
        if (stop <= offset)
        {
            hole = false;
            stop = Math.Min(end, offset + lbs);
        }
        run = (stop - offset) >> Bio.SectorShift;
        return hole ? AllocationState.Hole : AllocationState.Data;
    }
}
