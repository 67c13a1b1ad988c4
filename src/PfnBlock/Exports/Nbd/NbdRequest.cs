using System.Buffers.Binary;
using System.Runtime.CompilerServices;

namespace PfnBlock.Exports.Nbd;

/// <summary>
/// One request in flight on a connection: what was asked, where its reply data lives, and room
/// for its reply header. Slots are made once per connection and reused, so a request costs no
/// allocation.
/// </summary>
internal sealed unsafe class NbdRequest
{
    public NbdRequest(NbdConnection connection, PfnBlock.Block.Bio bio, int index, byte* header)
    {
        Connection = connection;
        Bio = bio;
        Index = index;
        Header = header;
    }

    public NbdConnection Connection { get; }
    /// <summary>The bio this request is the context of: it is the request's slot, and carries its I/O when there is one.</summary>
    public PfnBlock.Block.Bio Bio { get; }
    public int Index { get; }
    /// <summary>Reply header room (<see cref="NbdConnectionBuffers.HeaderBytes"/> bytes).</summary>
    public byte* Header { get; }
    /// <summary>The client's handle, kept as the raw 8 bytes it arrived as.</summary>
    public ulong Cookie;
    public NbdCommand Command;
    public NbdCommandFlags Flags;
    public ulong Offset;
    public uint Length;
    public long StartTicks;
    public NbdError Error;
    public int HeaderLength;
    /// <summary>Reply data straight from the device's memory (direct access), or null.</summary>
    public byte* DirectData;
    /// <summary>The pin that keeps <see cref="DirectData"/> valid until the reply has left.</summary>
    public PfnBlock.Block.DaxRange Pin;
    /// <summary>Chunks of the connection's pool holding data for this request.</summary>
    public readonly int[] Chunks = new int[NbdProtocol.MaxPayload / NbdConnectionBuffers.ChunkBytes];
    public int ChunkCount;
    /// <summary>Some of the reply's data was spliced: the request (and its pin) stays until the client has read the reply (NbdReplyWriter.Splice.cs).</summary>
    public bool Spliced;
    /// <summary>The request counts as a running write in its export's <see cref="NbdWriteGate"/> until it completes.</summary>
    public bool WriteGateHeld;
    /// <summary>A structured read reply in several chunks (NbdSparseReplies.cs): where each segment ends, relative to <see cref="Offset"/>; segments alternate between data and holes.</summary>
    public readonly uint[] SegmentEnds = new uint[NbdSparseReplies.MaxSegments];
    /// <summary>Segments planned; 0 sends the read as one data chunk.</summary>
    public int SegmentCount;
    /// <summary>The first segment is a hole (and so every second one after it).</summary>
    public bool FirstSegmentIsHole;
    /// <summary>Block-status descriptors already written into the header room (0: one extent of data for the whole range).</summary>
    public int ExtentCount;

    /// <summary>Clears the per-request state for a new request.</summary>
    public void Reset(ulong cookie, NbdCommand command, NbdCommandFlags flags, ulong offset, uint length, long startTicks)
    {
        Cookie = cookie;
        Command = command;
        Flags = flags;
        Offset = offset;
        Length = length;
        StartTicks = startTicks;
        Error = NbdError.None;
        HeaderLength = 0;
        DirectData = null;
        Spliced = false;
        ChunkCount = 0;
        WriteGateHeld = false;
        SegmentCount = 0;
        ExtentCount = 0;
    }

    /// <summary>True when the reply carries the read data after its header.</summary>
    public bool HasReplyData => Command == NbdCommand.Read && Error == NbdError.None;

    /// <summary>Writes the reply header: a structured chunk for reads and block status when negotiated, else a simple reply.</summary>
    public void EncodeReply(bool structured)
    {
        var h = new Span<byte>(Header, NbdConnectionBuffers.HeaderBytes);
        if (structured && Command == NbdCommand.Read)
        {
            if (Error == NbdError.None && SegmentCount > 0)
            {
                NbdSparseReplies.EncodeRead(this);
            }
            else if (Error == NbdError.None)
            {
                WriteChunkHeader(h, NbdChunkType.OffsetData, 8 + Length);
                BinaryPrimitives.WriteUInt64BigEndian(h[20..], Offset);
                HeaderLength = 28;
            }
            else
            {
                // ERROR chunk: error u32, message length u16 (no message).
                WriteChunkHeader(h, NbdChunkType.Error, 6);
                BinaryPrimitives.WriteUInt32BigEndian(h[20..], (uint)Error);
                BinaryPrimitives.WriteUInt16BigEndian(h[24..], 0);
                HeaderLength = 26;
            }
            return;
        }
        if (structured && Command == NbdCommand.BlockStatus && Error == NbdError.None && ExtentCount > 0)
        {
            // The descriptors are in place after the chunk header and context id (NbdSparseReplies.PlanBlockStatus).
            WriteChunkHeader(h, NbdChunkType.BlockStatus, 4 + 8 * (uint)ExtentCount);
            BinaryPrimitives.WriteUInt32BigEndian(h[20..], NbdProtocol.BaseAllocationId);
            HeaderLength = 24 + 8 * ExtentCount;
            return;
        }
        if (structured && Command == NbdCommand.BlockStatus && Error == NbdError.None)
        {
            // One extent for the whole range: a device without an allocation map is all data.
            WriteChunkHeader(h, NbdChunkType.BlockStatus, 12);
            BinaryPrimitives.WriteUInt32BigEndian(h[20..], NbdProtocol.BaseAllocationId);
            BinaryPrimitives.WriteUInt32BigEndian(h[24..], Length);
            BinaryPrimitives.WriteUInt32BigEndian(h[28..], 0);
            HeaderLength = 32;
            return;
        }
        BinaryPrimitives.WriteUInt32BigEndian(h, NbdProtocol.SimpleReplyMagic);
        BinaryPrimitives.WriteUInt32BigEndian(h[4..], (uint)Error);
        Unsafe.WriteUnaligned(Header + 8, Cookie);
        HeaderLength = NbdProtocol.SimpleReplySize;
    }

    /// <summary>Writes a structured chunk header at the start of <paramref name="h"/>; <paramref name="done"/> on the reply's last chunk.</summary>
    public void WriteChunkHeader(Span<byte> h, NbdChunkType type, uint length, bool done = true)
    {
        BinaryPrimitives.WriteUInt32BigEndian(h, NbdProtocol.StructuredReplyMagic);
        BinaryPrimitives.WriteUInt16BigEndian(h[4..], done ? (ushort)1 : (ushort)0); // NBD_REPLY_FLAG_DONE
        BinaryPrimitives.WriteUInt16BigEndian(h[6..], (ushort)type);
        Unsafe.WriteUnaligned(ref h[8], Cookie);
        BinaryPrimitives.WriteUInt32BigEndian(h[16..], length);
    }
}
