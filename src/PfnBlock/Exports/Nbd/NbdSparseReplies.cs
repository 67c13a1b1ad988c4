using System.Buffers.Binary;
using PfnBlock.Block;

namespace PfnBlock.Exports.Nbd;

/// <summary>
/// Replies that tell zeros apart: BLOCK_STATUS extents of the <c>base:allocation</c> context from the
/// device's allocation map, and structured READ replies whose zero runs go as <c>OFFSET_HOLE</c>
/// chunks (no data sent) between <c>OFFSET_DATA</c> chunks. Everything lives in the request's
/// preallocated header room and segment array: nothing is allocated per request.
/// </summary>
/// <remarks>
/// <para>Where a read's zeros come from: a direct-access read (pmem) asks the device's allocation
/// map before sending, so holes are never touched (reading a hole through a shared tmpfs mapping
/// would fill it); a read through a bio has its data in the connection's chunks already, and its
/// zero runs are found by reading them, 4 KiB at a time from the request's offset.</para>
/// <para>Limits: at most <see cref="MaxSegments"/> chunks per read reply (beyond that the rest of
/// the read goes as one data chunk) and <see cref="MaxExtents"/> extents per block-status reply
/// (the spec lets a reply cover a prefix of the range; clients ask again for the rest). With DF
/// (don't fragment) a read is one chunk: a hole when all of it is zero, else data.</para>
/// </remarks>
internal static unsafe class NbdSparseReplies
{
    /// <summary>Chunks in a read reply (32 headers of at most 32 bytes fill the header room).</summary>
    public const int MaxSegments = 32;
    /// <summary>Descriptors in a block-status reply (after its 24-byte chunk header and context id).</summary>
    public const int MaxExtents = (NbdConnectionBuffers.HeaderBytes - 24) / 8;
    /// <summary>Granule of the zero scan of read data.</summary>
    private const int ScanUnit = 4096;

    private const uint StateHole = 1, StateZero = 2;

    /// <summary>Plans a direct-access read from the device's allocation map (holes and zeros become hole chunks).</summary>
    public static void PlanFromMap(NbdRequest r, IAllocationMap map, bool dontFragment)
    {
        long first = (long)(r.Offset >> Bio.SectorShift);
        long sector = first, end = (long)((r.Offset + r.Length) >> Bio.SectorShift);
        while (sector < end)
        {
            AllocationState state = map.QueryAllocation(sector, end - sector, out long run);
            if (run < 1 || run > end - sector) { state = AllocationState.Data; run = end - sector; }
            sector += run;
            if (!Add(r, state != AllocationState.Data, (uint)((sector - first) << Bio.SectorShift))) break;
        }
        Finish(r, dontFragment);
    }

    /// <summary>Plans a read whose data sits in the request's chunks: all-zero 4 KiB units become hole chunks.</summary>
    public static void PlanFromChunks(NbdRequest r, NbdConnectionBuffers buffers, bool dontFragment)
    {
        uint pos = 0;
        while (pos < r.Length)
        {
            // Units never cross a chunk: both are counted from the request's first byte, and a chunk is a whole number of units.
            uint n = Math.Min(ScanUnit, r.Length - pos);
            byte* p = buffers.ChunkAddress(r.Chunks[pos / NbdConnectionBuffers.ChunkBytes]) + pos % NbdConnectionBuffers.ChunkBytes;
            bool zero = !new ReadOnlySpan<byte>(p, (int)n).ContainsAnyExcept((byte)0);
            pos += n;
            if (!Add(r, zero, pos)) break;
        }
        Finish(r, dontFragment);
    }

    /// <summary>
    /// Appends a run ending at <paramref name="end"/> (relative to the request), merging it with the
    /// last segment when of the same kind. When the segments run out, the rest of the read becomes
    /// one data segment and false stops the planning.
    /// </summary>
    private static bool Add(NbdRequest r, bool hole, uint end)
    {
        int n = r.SegmentCount;
        if (n == 0)
        {
            r.FirstSegmentIsHole = hole;
            r.SegmentEnds[0] = end;
            r.SegmentCount = 1;
            return true;
        }
        if (IsHole(r, n - 1) == hole)
        {
            r.SegmentEnds[n - 1] = end;
            return true;
        }
        if (n < MaxSegments - 1)
        {
            r.SegmentEnds[n] = end;
            r.SegmentCount = n + 1;
            return true;
        }
        // One segment left: data to the end (absorbing the last segment if it is data already).
        if (IsHole(r, n - 1)) r.SegmentCount = n + 1;
        r.SegmentEnds[r.SegmentCount - 1] = r.Length;
        return false;
    }

    /// <summary>A plan of one data segment is the plain reply; with DF only an all-hole plan survives.</summary>
    private static void Finish(NbdRequest r, bool dontFragment)
    {
        if (r.SegmentCount == 1 && r.FirstSegmentIsHole) return;
        if (r.SegmentCount == 1 || dontFragment) r.SegmentCount = 0;
    }

    /// <summary>Segment <paramref name="i"/> is a hole (segments alternate).</summary>
    public static bool IsHole(NbdRequest r, int i) => r.FirstSegmentIsHole == ((i & 1) == 0);

    /// <summary>Bytes of the chunk header of segment <paramref name="i"/> in the header room: OFFSET_HOLE carries offset and size, OFFSET_DATA the offset.</summary>
    public static int HeaderSize(NbdRequest r, int i) => NbdProtocol.StructuredHeaderSize + (IsHole(r, i) ? 12 : 8);

    /// <summary>Writes every chunk header of a planned read, one after another; the last carries DONE.</summary>
    public static void EncodeRead(NbdRequest r)
    {
        int at = 0;
        uint start = 0;
        for (int i = 0; i < r.SegmentCount; i++)
        {
            uint end = r.SegmentEnds[i];
            bool last = i == r.SegmentCount - 1;
            var h = new Span<byte>(r.Header + at, HeaderSize(r, i));
            if (IsHole(r, i))
            {
                r.WriteChunkHeader(h, NbdChunkType.OffsetHole, 12, last);
                BinaryPrimitives.WriteUInt64BigEndian(h[20..], r.Offset + start);
                BinaryPrimitives.WriteUInt32BigEndian(h[28..], end - start);
            }
            else
            {
                r.WriteChunkHeader(h, NbdChunkType.OffsetData, 8 + end - start, last);
                BinaryPrimitives.WriteUInt64BigEndian(h[20..], r.Offset + start);
            }
            at += h.Length;
            start = end;
        }
        r.HeaderLength = at;
    }

    /// <summary>
    /// Writes the block-status descriptors of [offset, +length) after the chunk header: equal
    /// neighbours merged, at most <see cref="MaxExtents"/> (one with REQ_ONE). An offset or end
    /// inside a logical block takes that block's state (clients that never asked for block sizes may
    /// send any alignment).
    /// </summary>
    public static void PlanBlockStatus(NbdRequest r, IAllocationMap map, int minBlock)
    {
        int max = (r.Flags & NbdCommandFlags.ReqOne) != 0 ? 1 : MaxExtents;
        ulong end = r.Offset + r.Length;
        long sector = (long)((r.Offset & ~(ulong)(minBlock - 1)) >> Bio.SectorShift);
        long endSector = (long)(((end + (ulong)minBlock - 1) & ~(ulong)(minBlock - 1)) >> Bio.SectorShift);
        ulong pos = r.Offset;
        byte* d = r.Header + 24;
        int n = 0;
        uint lastFlags = uint.MaxValue;
        while (sector < endSector)
        {
            AllocationState state = map.QueryAllocation(sector, endSector - sector, out long run);
            if (run < 1 || run > endSector - sector) { state = AllocationState.Data; run = endSector - sector; }
            uint flags = state switch { AllocationState.Hole => StateHole | StateZero, AllocationState.Zero => StateZero, _ => 0 };
            if (flags != lastFlags && n == max) break;
            sector += run;
            ulong runEnd = Math.Min(end, (ulong)sector << Bio.SectorShift);
            uint length = (uint)(runEnd - pos);
            var desc = new Span<byte>(d + 8 * (flags == lastFlags ? n - 1 : n), 8);
            if (flags == lastFlags) length += BinaryPrimitives.ReadUInt32BigEndian(desc);
            else n++;
            BinaryPrimitives.WriteUInt32BigEndian(desc, length);
            BinaryPrimitives.WriteUInt32BigEndian(desc[4..], flags);
            lastFlags = flags;
            pos = runEnd;
        }
        r.ExtentCount = n;
    }
}
