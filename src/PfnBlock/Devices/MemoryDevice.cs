using System.Runtime.CompilerServices;
using PfnBlock.Block;
using PfnBlock.Memory;

namespace PfnBlock.Devices;

/// <summary>
/// The data path shared by devices whose sectors are CPU-addressable memory (pmem, RAM): each
/// segment's frame is kmapped and copied to or from the device's memory; no per-I/O allocation.
/// Subclasses decide how writes are stored and made durable.
/// </summary>
/// <remarks>
/// The allocation map (<see cref="IAllocationMap"/>) reads the memory: a page whose bytes are all
/// zero reads as zeros, whatever wrote it. A subclass whose memory can have holes (a sparse file)
/// answers for them first (<see cref="AllocationRun"/>), so that holes are never read, which on a
/// shared file mapping would fill them.
/// </remarks>
public abstract unsafe class MemoryDevice : BlockDevice, IAllocationMap
{
    private readonly byte* _base;
    private readonly long _sectors;

    /// <summary>Creates the device over <paramref name="bytes"/> bytes at <paramref name="baseAddress"/>.</summary>
    protected MemoryDevice(string name, byte* baseAddress, long bytes, PhysicalAddressSpace? space) : base(name, space)
    {
        _base = baseAddress;
        _sectors = bytes >> Bio.SectorShift;
    }

    /// <inheritdoc/>
    public override long CapacitySectors => _sectors;

    /// <summary>The device's first byte.</summary>
    protected byte* BaseAddress => _base;

    /// <summary>Stores <paramref name="length"/> bytes at <paramref name="dst"/> on the device.</summary>
    protected abstract void WriteData(byte* dst, byte* src, nuint length);
    /// <summary>Zeroes <paramref name="length"/> bytes of the device at <paramref name="dst"/>.</summary>
    protected abstract void ZeroData(byte* dst, nuint length);
    /// <summary>Called once after all segments of a write were stored (e.g. a store fence); not for a write marked <see cref="BioFlags.DeferFence"/>, whose completion's receiver fences.</summary>
    protected virtual void WriteDone() { }
    /// <summary>Makes all completed writes durable (FLUSH, PREFLUSH).</summary>
    protected virtual BlockStatus FlushCache() => BlockStatus.Ok;
    /// <summary>Makes the byte range durable (FUA).</summary>
    protected virtual BlockStatus PersistRange(long offset, long length) => BlockStatus.Ok;

    /// <summary>
    /// Zeroes <paramref name="length"/> bytes at device offset <paramref name="offset"/> (discard,
    /// write-zeroes); <paramref name="mayUnmap"/> when the bio lets the device deallocate the range
    /// instead (no NO_HOLE). Default: zero the bytes.
    /// </summary>
    protected virtual BlockStatus ZeroRange(long offset, long length, bool mayUnmap)
    {
        ZeroData(_base + offset, (nuint)length);
        return BlockStatus.Ok;
    }

    /// <summary>
    /// For the allocation map: the run from device offset <paramref name="offset"/> towards
    /// <paramref name="end"/> that is all holes (<paramref name="hole"/>) or all memory that exists;
    /// returns where it ends. Default: no holes.
    /// </summary>
    protected virtual long AllocationRun(long offset, long end, out bool hole)
    {
        hole = false;
        return end;
    }

    /// <summary>Holes as <see cref="AllocationRun"/> finds them; elsewhere all-zero 4 KiB pages (read from memory) are zero, the rest data.</summary>
    public virtual AllocationState QueryAllocation(long sector, long sectors, out long run)
    {
        if (IsDisposed)
        {
            run = sectors; // the memory may be unmapped already
            return AllocationState.Data;
        }
        long offset = sector << Bio.SectorShift, end = offset + (sectors << Bio.SectorShift);
        long stop = Math.Clamp(AllocationRun(offset, end, out bool hole) & ~(long)(Bio.SectorSize - 1), offset + Bio.SectorSize, end);
        if (hole)
        {
            run = (stop - offset) >> Bio.SectorShift;
            return AllocationState.Hole;
        }
        // Page by page: a page of data usually shows a non-zero byte in its first line.
        long p = Math.Min((offset | (Pfn.PageSize - 1)) + 1, stop);
        bool zero = IsZero(_base + offset, p - offset);
        while (p < stop)
        {
            long n = Math.Min(Pfn.PageSize, stop - p);
            if (IsZero(_base + p, n) != zero) break;
            p += n;
        }
        run = (p - offset) >> Bio.SectorShift;
        return zero ? AllocationState.Zero : AllocationState.Data;
    }

    private static bool IsZero(byte* p, long length) => !new ReadOnlySpan<byte>(p, (int)length).ContainsAnyExcept((byte)0);

    /// <inheritdoc/>
    protected override void SubmitCore(Bio bio) => bio.Complete(Process(bio));

    /// <summary>Carries out a validated bio (preflush, data, FUA) without completing it; the status to complete it with.</summary>
    protected BlockStatus Process(Bio bio)
    {
        BlockStatus status = BlockStatus.Ok;
        if ((bio.Flags & BioFlags.Preflush) != 0) status = FlushCache();
        if (status == BlockStatus.Ok)
        {
            switch (bio.Op)
            {
                case BioOp.Read: status = Transfer(bio, write: false); break;
                case BioOp.Write: status = Transfer(bio, write: true); break;
                case BioOp.Flush: break; // PREFLUSH semantics already ran above for flush bios
                case BioOp.Discard:
                case BioOp.WriteZeroes:
                    status = ZeroRange(bio.Sector << Bio.SectorShift, bio.Size, (bio.Flags & BioFlags.NoUnmap) == 0);
                    WriteDone();
                    break;
            }
        }
        if (bio.Op == BioOp.Flush && (bio.Flags & BioFlags.Preflush) == 0) status = FlushCache();
        if (status == BlockStatus.Ok && (bio.Flags & BioFlags.Fua) != 0 && bio.Op != BioOp.Read)
            status = PersistRange(bio.Sector << Bio.SectorShift, bio.Size);
        return status;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private BlockStatus Transfer(Bio bio, bool write)
    {
        PhysicalAddressSpace space = AddressSpace;
        byte* dev = _base + (bio.Sector << Bio.SectorShift);
        foreach (BioVec seg in bio.Segments)
        {
            byte* mem = space.TryKmap(seg.Pfn, seg.Offset, seg.Length);
            // A pfn the CPU cannot reach is a submitter bug; fail the bio rather than the process.
            if (mem == null) return BlockStatus.Invalid;
            if (write) WriteData(dev, mem, seg.Length);
            else Buffer.MemoryCopy(dev, mem, seg.Length, seg.Length);
            dev += seg.Length;
        }
        if (write && (bio.Flags & BioFlags.DeferFence) == 0) WriteDone();
        return BlockStatus.Ok;
    }
}
