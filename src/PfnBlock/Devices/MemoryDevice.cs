using System.Runtime.CompilerServices;
using PfnBlock.Block;
using PfnBlock.Memory;

namespace PfnBlock.Devices;

/// <summary>
/// The data path shared by devices whose sectors are CPU-addressable memory (pmem, RAM): each
/// segment's frame is kmapped and copied to or from the device's memory; no per-I/O allocation.
/// Subclasses decide how writes are stored and made durable.
/// </summary>
public abstract unsafe class MemoryDevice : BlockDevice
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
    /// <summary>Called once after all segments of a write were stored (e.g. a store fence).</summary>
    protected virtual void WriteDone() { }
    /// <summary>Makes all completed writes durable (FLUSH, PREFLUSH).</summary>
    protected virtual BlockStatus FlushCache() => BlockStatus.Ok;
    /// <summary>Makes the byte range durable (FUA).</summary>
    protected virtual BlockStatus PersistRange(long offset, long length) => BlockStatus.Ok;

    /// <inheritdoc/>
    protected override void SubmitCore(Bio bio)
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
                    ZeroData(_base + (bio.Sector << Bio.SectorShift), bio.Size);
                    WriteDone();
                    break;
            }
        }
        if (bio.Op == BioOp.Flush && (bio.Flags & BioFlags.Preflush) == 0) status = FlushCache();
        if (status == BlockStatus.Ok && (bio.Flags & BioFlags.Fua) != 0 && bio.Op != BioOp.Read)
            status = PersistRange(bio.Sector << Bio.SectorShift, bio.Size);
        bio.Complete(status);
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
        if (write) WriteDone();
        return BlockStatus.Ok;
    }
}
