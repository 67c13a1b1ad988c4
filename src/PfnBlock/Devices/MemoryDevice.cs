using System.Diagnostics;
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

    /// <summary>Bios larger than this are carried out alone even under a plug: a copy that long streams on its own.</summary>
    private const uint MaxBatchedBioBytes = 64 * 1024;
    /// <summary>Segments one batch copies side by side, per direction.</summary>
    private const int MaxBatchPieces = 64;

    /// <inheritdoc/>
    protected override bool TakesBatches => true;

    /// <summary>
    /// Carries out a plug's reads and writes together: every segment of them is copied side by side
    /// (<see cref="InterleavedCopy"/>), the writes get one store fence between them, and the clock is
    /// read once for all their completions. A bio that does not fit (preflush or FUA, longer than
    /// 64 KiB, segments that are not whole cache lines, or one its device wants alone, see
    /// <see cref="PrepareBatched"/>) is carried out by itself first.
    /// </summary>
    protected override void SubmitBatchCore(ReadOnlySpan<Bio> bios)
    {
        Span<CopyPiece> reads = stackalloc CopyPiece[MaxBatchPieces];
        Span<CopyPiece> writes = stackalloc CopyPiece[MaxBatchPieces];
        int readCount = 0, writeCount = 0;
        ulong batched = 0; // bit i: bios[i] is in the batch
        bool fence = false;
        for (int i = 0; i < bios.Length; i++)
        {
            Bio bio = bios[i];
            bool write = bio.Op == BioOp.Write;
            ref int count = ref write ? ref writeCount : ref readCount;
            int mark = count;
            if (i < 64 && (bio.Flags & (BioFlags.Preflush | BioFlags.Fua)) == 0 && bio.Size <= MaxBatchedBioBytes
                && AddPieces(bio, write, write ? writes : reads, ref count) && PrepareBatched(bio))
            {
                batched |= 1UL << i;
                fence |= write && (bio.Flags & BioFlags.DeferFence) == 0;
                continue;
            }
            count = mark;
            SubmitCore(bio);
        }
        if (readCount > 0) InterleavedCopy.Copy(reads[..readCount]);
        if (writeCount > 0) WriteBatch(writes[..writeCount]);
        if (fence) WriteDone();
        if (batched == 0) return;
        long now = Stopwatch.GetTimestamp();
        for (int i = 0; i < bios.Length; i++)
            if ((batched & (1UL << i)) != 0) bios[i].CompleteAt(FinishBatched(bios[i]), now);
    }

    /// <summary>Adds the bio's segments to a batch's pieces; false when one does not fit (the caller rolls back).</summary>
    private bool AddPieces(Bio bio, bool write, Span<CopyPiece> pieces, ref int count)
    {
        PhysicalAddressSpace space = AddressSpace;
        byte* dev = _base + (bio.Sector << Bio.SectorShift);
        // Streaming stores need whole, aligned lines on the device side.
        if (write && ((nint)dev & (InterleavedCopy.Granule - 1)) != 0) return false;
        foreach (BioVec seg in bio.Segments)
        {
            if (count == pieces.Length || !InterleavedCopy.Fits(seg.Length)) return false;
            byte* mem = space.TryKmap(seg.Pfn, seg.Offset, seg.Length);
            if (mem == null) return false; // carried out alone, it fails as Invalid
            pieces[count++] = write ? new CopyPiece(dev, mem, seg.Length) : new CopyPiece(mem, dev, seg.Length);
            dev += seg.Length;
        }
        return true;
    }

    /// <summary>Stores a batch's writes, unfenced (<see cref="WriteDone"/> follows once for all). Default: cached stores.</summary>
    protected virtual void WriteBatch(ReadOnlySpan<CopyPiece> pieces) => InterleavedCopy.Copy(pieces);

    /// <summary>Before a read or write joins a batch; false carries it out alone (<see cref="SubmitCore"/>) instead, e.g. a range with media errors.</summary>
    protected virtual bool PrepareBatched(Bio bio) => true;

    /// <summary>After a batch was copied and fenced: the status a batched bio completes with.</summary>
    protected virtual BlockStatus FinishBatched(Bio bio) => BlockStatus.Ok;

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
