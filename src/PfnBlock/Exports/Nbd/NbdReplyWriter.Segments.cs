namespace PfnBlock.Exports.Nbd;

/// <summary>The iovecs of a read reply in several chunks (<see cref="NbdSparseReplies"/>).</summary>
internal sealed unsafe partial class NbdReplyWriter
{
    /// <summary>Each chunk header in turn, each data chunk followed by its bytes (device memory or chunk frames); hole chunks carry none.</summary>
    private void AddSegments(NbdRequest request)
    {
        // A header per segment, and data pieces: at most one per chunk frame plus one per segment cut.
        int most = 2 * request.SegmentCount + (request.DirectData != null ? 0 : request.ChunkCount);
        if (_iovCount + most > Interop.Libc.IOV_MAX) Flush();
        Interop.Libc.IoVec* v = _iov + _iovCount;
        byte* header = request.Header;
        uint start = 0;
        for (int i = 0; i < request.SegmentCount; i++)
        {
            uint end = request.SegmentEnds[i];
            int size = NbdSparseReplies.HeaderSize(request, i);
            v->Base = header;
            v->Length = (nuint)size;
            v++;
            header += size;
            if (!NbdSparseReplies.IsHole(request, i)) v = AddData(v, request, start, end);
            start = end;
        }
        _iovCount = (int)(v - _iov);
    }

    /// <summary>Iovecs for bytes [<paramref name="start"/>, <paramref name="end"/>) of the request's data.</summary>
    private Interop.Libc.IoVec* AddData(Interop.Libc.IoVec* v, NbdRequest request, uint start, uint end)
    {
        if (request.DirectData != null)
        {
            v->Base = request.DirectData + start;
            v->Length = end - start;
            MarkSplice(v, request);
            return v + 1;
        }
        while (start < end)
        {
            uint inChunk = start % NbdConnectionBuffers.ChunkBytes;
            uint n = Math.Min(end - start, NbdConnectionBuffers.ChunkBytes - inChunk);
            v->Base = _buffers.ChunkAddress(request.Chunks[start / NbdConnectionBuffers.ChunkBytes]) + inChunk;
            v->Length = n;
            v++;
            start += n;
        }
        return v;
    }
}
