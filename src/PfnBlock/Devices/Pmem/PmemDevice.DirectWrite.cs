using System.Diagnostics;
using PfnBlock.Block;
using PfnBlock.Memory;

namespace PfnBlock.Devices.Pmem;

/// <summary>
/// Direct writes (<see cref="IDirectWriteDevice"/>): an NBD server receives a large write's payload
/// from its socket straight into the namespace, so the kernel's copy out of the socket is the only
/// copy (a write bio would copy the server's receive buffer in again with non-temporal stores).
/// </summary>
/// <remarks>
/// The stores are the producer's (the kernel's, for a socket receive): ordinary cached stores.
/// What a completed write bio guarantees is kept at the end: under MAP_SYNC the range's cache lines
/// are written back and fenced (<c>Persist</c>), as the bio's non-temporal stores and fence would
/// leave them; on a page-cache mapping (tmpfs, no MAP_SYNC) any store in the shared mapping
/// already survives the process, and power loss is covered by msync on FUA or FLUSH, exactly as for
/// a bio. Writes touching a bad block go through a bio (which replaces the block in order).
/// </remarks>
public sealed unsafe partial class PmemDevice : IDirectWriteDevice
{
    /// <inheritdoc/>
    public bool BeginDirectWrite(long offset, int length, out DirectWrite write)
    {
        write = default;
        if (length <= 0 || offset < 0 || offset > CapacityBytes - length || ((offset | (long)length) & (_limits.LogicalBlockSize - 1)) != 0) return false;
        if ((_features & DeviceFeatures.ReadOnly) != 0 || TouchesBadBlocks(offset >> Bio.SectorShift, length)) return false;
        long firstPage = offset >> Pfn.PageShift;
        long pages = ((offset + length - 1) >> Pfn.PageShift) - firstPage + 1;
        // Pinned first, so a discard cannot punch the pages out again after the holes were filled.
        long got = DirectAccess(firstPage, pages, out DaxRange range);
        if (got < pages)
        {
            if (got > 0) range.Unpin();
            return false;
        }
        if (!_ns.ReserveForWrite(offset, length))
        {
            range.Unpin();
            return false; // the bio fails the same way, with the error a client should see
        }
        long now = Stopwatch.GetTimestamp();
        Stats.Start(BioOp.Write, now, BlockThread.Current);
        write = new DirectWrite(range, range.Address + (offset & (Pfn.PageSize - 1)), offset, length, now);
        return true;
    }

    /// <inheritdoc/>
    public BlockStatus EndDirectWrite(ref DirectWrite write, long stored, BioFlags flags)
    {
        if (!write.IsActive) throw new InvalidOperationException("no direct write in progress");
        DirectWrite w = write;
        write = default;
        BlockStatus status = BlockStatus.IoError;
        if (stored >= w.Length && !IsDisposed)
        {
            if (PmemTrace.Enabled) PmemTrace.Stored(w.Address, (nuint)w.Length, nonTemporal: false);
            // The bio's stores would be in the persistence domain at completion: these ones too.
            if (_ns.Persistence == PersistenceMode.CpuCache) PersistentMemory.Persist(w.Address, (nuint)w.Length);
            status = (flags & BioFlags.Fua) != 0 ? PersistRange(w.Offset, w.Length) : BlockStatus.Ok;
            if (status == BlockStatus.Ok) _ns.NoteWritten(w.Offset, w.Length);
        }
        w.Range.Unpin();
        long now = Stopwatch.GetTimestamp();
        Stats.Done(BioOp.Write, (uint)w.Length, now - w.StartTicks, now, status != BlockStatus.Ok, BlockThread.Current);
        return status;
    }
}
