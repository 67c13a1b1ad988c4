using System.Buffers.Binary;
using System.Net.Sockets;
using System.Text;
using PfnBlock.Exports.Nbd;

namespace PfnBlock.Tests.Nbd;

/// <summary>A minimal NBD client speaking raw bytes, for protocol tests (allocation-free on the request path).</summary>
internal sealed class NbdRawClient : IDisposable
{
    private readonly Socket _socket;
    private readonly byte[] _hdr = new byte[32];
    // Offset and length of each read in flight, by cookie (slot = cookie mod 1024): a structured
    // read reply may come in several chunks (data and holes) placed by their absolute offsets.
    private readonly ulong[] _readCookies = new ulong[1024];
    private readonly ulong[] _readOffsets = new ulong[1024];
    private readonly uint[] _readLengths = new uint[1024];

    private NbdRawClient(Socket socket) => _socket = socket;

    public static NbdRawClient Connect(string socketPath, int timeoutMs = 10000)
    {
        var s = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        s.Connect(new UnixDomainSocketEndPoint(socketPath));
        s.ReceiveTimeout = timeoutMs;
        s.SendTimeout = timeoutMs;
        return new NbdRawClient(s);
    }

    public static NbdRawClient ConnectTcp(System.Net.EndPoint endPoint, int timeoutMs = 10000)
    {
        var s = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        s.Connect(endPoint);
        s.ReceiveTimeout = timeoutMs;
        s.SendTimeout = timeoutMs;
        return new NbdRawClient(s);
    }

    public Socket Socket => _socket;
    public ulong ExportSize { get; private set; }
    public NbdTransmissionFlags Flags { get; private set; }
    public bool Structured { get; private set; }

    public void Send(ReadOnlySpan<byte> bytes)
    {
        while (bytes.Length > 0) bytes = bytes[_socket.Send(bytes)..];
    }

    public void ReadExactly(Span<byte> into)
    {
        while (into.Length > 0)
        {
            int n = _socket.Receive(into);
            if (n == 0) throw new EndOfStreamException("server closed the connection");
            into = into[n..];
        }
    }

    /// <summary>True when the server has closed the connection (reads EOF within the timeout).</summary>
    public bool ServerClosed()
    {
        byte[] b = new byte[4096];
        try
        {
            while (true) if (_socket.Receive(b) == 0) return true;
        }
        catch (SocketException) { return false; }
    }

    public void Greet(NbdClientFlags flags = NbdClientFlags.FixedNewstyle | NbdClientFlags.NoZeroes)
    {
        ReadExactly(_hdr.AsSpan(0, 18));
        Assert.Equal(NbdProtocol.InitMagic, BinaryPrimitives.ReadUInt64BigEndian(_hdr));
        Assert.Equal(NbdProtocol.OptionMagic, BinaryPrimitives.ReadUInt64BigEndian(_hdr.AsSpan(8)));
        Span<byte> f = stackalloc byte[4];
        BinaryPrimitives.WriteUInt32BigEndian(f, (uint)flags);
        Send(f);
    }

    public void SendOption(uint option, ReadOnlySpan<byte> data)
    {
        byte[] h = new byte[16];
        BinaryPrimitives.WriteUInt64BigEndian(h, NbdProtocol.OptionMagic);
        BinaryPrimitives.WriteUInt32BigEndian(h.AsSpan(8), option);
        BinaryPrimitives.WriteUInt32BigEndian(h.AsSpan(12), (uint)data.Length);
        Send(h);
        Send(data);
    }

    public (uint Option, NbdReply Type, byte[] Data) ReadOptionReply()
    {
        byte[] h = new byte[20];
        ReadExactly(h);
        Assert.Equal(NbdProtocol.OptionReplyMagic, BinaryPrimitives.ReadUInt64BigEndian(h));
        byte[] data = new byte[BinaryPrimitives.ReadUInt32BigEndian(h.AsSpan(16))];
        ReadExactly(data);
        return (BinaryPrimitives.ReadUInt32BigEndian(h.AsSpan(8)), (NbdReply)BinaryPrimitives.ReadUInt32BigEndian(h.AsSpan(12)), data);
    }

    public static byte[] InfoRequest(string export, params NbdInfo[] items)
    {
        byte[] name = Encoding.UTF8.GetBytes(export);
        byte[] d = new byte[4 + name.Length + 2 + 2 * items.Length];
        BinaryPrimitives.WriteUInt32BigEndian(d, (uint)name.Length);
        name.CopyTo(d, 4);
        BinaryPrimitives.WriteUInt16BigEndian(d.AsSpan(4 + name.Length), (ushort)items.Length);
        for (int i = 0; i < items.Length; i++) BinaryPrimitives.WriteUInt16BigEndian(d.AsSpan(6 + name.Length + 2 * i), (ushort)items[i]);
        return d;
    }

    public static byte[] MetaRequest(string export, params string[] queries)
    {
        var ms = new MemoryStream();
        void U32(uint v) { byte[] b = new byte[4]; BinaryPrimitives.WriteUInt32BigEndian(b, v); ms.Write(b); }
        byte[] name = Encoding.UTF8.GetBytes(export);
        U32((uint)name.Length); ms.Write(name);
        U32((uint)queries.Length);
        foreach (string q in queries) { byte[] qb = Encoding.UTF8.GetBytes(q); U32((uint)qb.Length); ms.Write(qb); }
        return ms.ToArray();
    }

    /// <summary>Greets, optionally negotiates structured replies and base:allocation, then GO (asking for block sizes unless told not to).</summary>
    public void Negotiate(string export, bool structured = false, bool baseAllocation = false, bool blockSizes = true)
    {
        Greet();
        if (structured)
        {
            SendOption((uint)NbdOption.StructuredReply, []);
            Assert.Equal(NbdReply.Ack, ReadOptionReply().Type);
            Structured = true;
        }
        if (baseAllocation)
        {
            SendOption((uint)NbdOption.SetMetaContext, MetaRequest(export, NbdProtocol.BaseAllocation));
            Assert.Equal(NbdReply.MetaContext, ReadOptionReply().Type);
            Assert.Equal(NbdReply.Ack, ReadOptionReply().Type);
        }
        SendOption((uint)NbdOption.Go, blockSizes ? InfoRequest(export, NbdInfo.BlockSize) : InfoRequest(export));
        while (true)
        {
            (_, NbdReply type, byte[] data) = ReadOptionReply();
            if (type == NbdReply.Ack) break;
            Assert.Equal(NbdReply.Info, type);
            if (BinaryPrimitives.ReadUInt16BigEndian(data) == (ushort)NbdInfo.Export)
            {
                ExportSize = BinaryPrimitives.ReadUInt64BigEndian(data.AsSpan(2));
                Flags = (NbdTransmissionFlags)BinaryPrimitives.ReadUInt16BigEndian(data.AsSpan(10));
            }
        }
    }

    public void Request(NbdCommand command, NbdCommandFlags flags, ulong cookie, ulong offset, uint length, ReadOnlySpan<byte> payload = default)
    {
        Span<byte> h = _hdr.AsSpan(0, 28);
        BinaryPrimitives.WriteUInt32BigEndian(h, NbdProtocol.RequestMagic);
        BinaryPrimitives.WriteUInt16BigEndian(h[4..], (ushort)flags);
        BinaryPrimitives.WriteUInt16BigEndian(h[6..], (ushort)command);
        BinaryPrimitives.WriteUInt64BigEndian(h[8..], cookie);
        BinaryPrimitives.WriteUInt64BigEndian(h[16..], offset);
        BinaryPrimitives.WriteUInt32BigEndian(h[24..], length);
        if (command == NbdCommand.Read)
        {
            int slot = (int)(cookie & 1023);
            _readCookies[slot] = cookie;
            _readOffsets[slot] = offset;
            _readLengths[slot] = length;
        }
        Send(h);
        Send(payload);
    }

    /// <summary>
    /// Reads one reply (simple, or structured: one chunk, or for a read every chunk up to the one
    /// flagged DONE, data and holes placed by offset). Read data lands in <paramref name="data"/>
    /// (a simple reply's data length must be known by the caller: <paramref name="simpleReadLength"/>).
    /// <see cref="HoleChunks"/> counts the hole chunks of the last reply.
    /// </summary>
    public (ulong Cookie, NbdError Error, NbdChunkType Chunk, int DataLength) ReadReply(Span<byte> data, int simpleReadLength = 0)
    {
        HoleChunks = 0;
        DataChunks = 0;
        while (true)
        {
            ReadExactly(_hdr.AsSpan(0, 4));
            uint magic = BinaryPrimitives.ReadUInt32BigEndian(_hdr);
            if (magic == NbdProtocol.SimpleReplyMagic)
            {
                ReadExactly(_hdr.AsSpan(4, 12));
                var error = (NbdError)BinaryPrimitives.ReadUInt32BigEndian(_hdr.AsSpan(4));
                ulong cookie = BinaryPrimitives.ReadUInt64BigEndian(_hdr.AsSpan(8));
                int n = error == NbdError.None ? simpleReadLength : 0;
                if (n > 0) ReadExactly(data[..n]);
                return (cookie, error, NbdChunkType.None, n);
            }
            Assert.Equal(NbdProtocol.StructuredReplyMagic, magic);
            ReadExactly(_hdr.AsSpan(4, 16));
            bool done = (BinaryPrimitives.ReadUInt16BigEndian(_hdr.AsSpan(4)) & 1) != 0;
            var type = (NbdChunkType)BinaryPrimitives.ReadUInt16BigEndian(_hdr.AsSpan(6));
            ulong c = BinaryPrimitives.ReadUInt64BigEndian(_hdr.AsSpan(8));
            int length = (int)BinaryPrimitives.ReadUInt32BigEndian(_hdr.AsSpan(16));
            int slot = (int)(c & 1023);
            bool isRead = _readCookies[slot] == c && _readLengths[slot] != 0;
            switch (type)
            {
                case NbdChunkType.OffsetData:
                    Assert.True(isRead, "OFFSET_DATA chunk for a request that is not a read");
                    ReadExactly(_hdr.AsSpan(0, 8));
                    int at = checked((int)(BinaryPrimitives.ReadUInt64BigEndian(_hdr) - _readOffsets[slot]));
                    Assert.InRange(at + length - 8, 0, (int)_readLengths[slot]);
                    ReadExactly(data.Slice(at, length - 8));
                    DataChunks++;
                    break;
                case NbdChunkType.OffsetHole:
                    Assert.True(isRead, "OFFSET_HOLE chunk for a request that is not a read");
                    Assert.Equal(12, length);
                    ReadExactly(_hdr.AsSpan(0, 12));
                    int hole = checked((int)(BinaryPrimitives.ReadUInt64BigEndian(_hdr) - _readOffsets[slot]));
                    int holeLength = (int)BinaryPrimitives.ReadUInt32BigEndian(_hdr.AsSpan(8));
                    Assert.InRange(hole + holeLength, 1, (int)_readLengths[slot]);
                    data.Slice(hole, holeLength).Clear();
                    HoleChunks++;
                    break;
                case NbdChunkType.Error:
                    byte[] e = new byte[length];
                    ReadExactly(e);
                    Assert.True(done, "error chunk without DONE");
                    return (c, (NbdError)BinaryPrimitives.ReadUInt32BigEndian(e), type, 0);
                default:
                    Assert.True(done, $"{type} chunk without DONE");
                    ReadExactly(data[..length]);
                    return (c, NbdError.None, type, length);
            }
            if (done)
            {
                int total = (int)_readLengths[slot];
                _readLengths[slot] = 0;
                return (c, NbdError.None, NbdChunkType.OffsetData, total);
            }
        }
    }

    /// <summary>Hole chunks in the last reply read.</summary>
    public int HoleChunks { get; private set; }
    /// <summary>Data chunks in the last reply read.</summary>
    public int DataChunks { get; private set; }

    public void Dispose() => _socket.Dispose();
}
