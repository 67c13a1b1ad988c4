namespace PfnBlock.Exports.Nbd;

/// <summary>
/// Numbers of the NBD protocol (NetworkBlockDevice/nbd doc/proto.md): magics, options, reply
/// types, commands, flags and error values. All fields travel big-endian.
/// </summary>
public static class NbdProtocol
{
    /// <summary>"NBDMAGIC", the first thing the server sends.</summary>
    public const ulong InitMagic = 0x4e42444d41474943;
    /// <summary>"IHAVEOPT": newstyle negotiation; also the prefix of every option.</summary>
    public const ulong OptionMagic = 0x49484156454F5054;
    /// <summary>Prefix of every option reply.</summary>
    public const ulong OptionReplyMagic = 0x3e889045565a9;
    /// <summary>Prefix of a transmission request.</summary>
    public const uint RequestMagic = 0x25609513;
    /// <summary>Prefix of a simple reply.</summary>
    public const uint SimpleReplyMagic = 0x67446698;
    /// <summary>Prefix of a structured reply chunk.</summary>
    public const uint StructuredReplyMagic = 0x668e33ef;

    /// <summary>Bytes in a request header.</summary>
    public const int RequestHeaderSize = 28;
    /// <summary>Bytes in a simple reply header.</summary>
    public const int SimpleReplySize = 16;
    /// <summary>Bytes in a structured reply chunk header.</summary>
    public const int StructuredHeaderSize = 20;
    /// <summary>Largest READ or WRITE payload this server takes (the spec's recommended 32 MiB).</summary>
    public const int MaxPayload = 32 << 20;
    /// <summary>Preferred block size advertised in INFO_BLOCK_SIZE.</summary>
    public const int PreferredBlockSize = 4096;
    /// <summary>Longest option payload accepted during negotiation.</summary>
    public const int MaxOptionLength = 64 << 10;
    /// <summary>Longest string (export name, query) the spec allows.</summary>
    public const int MaxStringLength = 4096;
    /// <summary>The one metadata context served.</summary>
    public const string BaseAllocation = "base:allocation";
    /// <summary>The id given to <see cref="BaseAllocation"/> by SET_META_CONTEXT.</summary>
    public const uint BaseAllocationId = 1;
}

/// <summary>Handshake flags sent by the server.</summary>
[Flags]
public enum NbdHandshakeFlags : ushort
{
    /// <summary>Fixed newstyle negotiation.</summary>
    FixedNewstyle = 1,
    /// <summary>The client may skip the 124 zero bytes after EXPORT_NAME.</summary>
    NoZeroes = 2,
}

/// <summary>Client flags sent in answer to the handshake.</summary>
[Flags]
public enum NbdClientFlags : uint
{
    /// <summary>The client speaks fixed newstyle.</summary>
    FixedNewstyle = 1,
    /// <summary>The client wants no zero padding after EXPORT_NAME.</summary>
    NoZeroes = 2,
}

/// <summary>Negotiation options.</summary>
public enum NbdOption : uint
{
    /// <summary>Choose an export and enter transmission (no error reply possible).</summary>
    ExportName = 1,
    /// <summary>End the session.</summary>
    Abort = 2,
    /// <summary>List the exports.</summary>
    List = 3,
    /// <summary>Upgrade to TLS.</summary>
    StartTls = 5,
    /// <summary>Describe an export.</summary>
    Info = 6,
    /// <summary>Describe an export and enter transmission.</summary>
    Go = 7,
    /// <summary>Use structured replies.</summary>
    StructuredReply = 8,
    /// <summary>List metadata contexts.</summary>
    ListMetaContext = 9,
    /// <summary>Select metadata contexts.</summary>
    SetMetaContext = 10,
}

/// <summary>Option reply types; errors have bit 31 set.</summary>
public enum NbdReply : uint
{
    /// <summary>The option succeeded; after LIST or INFO/GO items, the last reply of the option.</summary>
    Ack = 1,
    /// <summary>An export description (LIST).</summary>
    Server = 2,
    /// <summary>An information item (INFO, GO).</summary>
    Info = 3,
    /// <summary>A metadata context.</summary>
    MetaContext = 4,
    /// <summary>Unknown option.</summary>
    ErrUnsup = 0x80000001,
    /// <summary>Refused by policy.</summary>
    ErrPolicy = 0x80000002,
    /// <summary>Malformed option.</summary>
    ErrInvalid = 0x80000003,
    /// <summary>Needs TLS first.</summary>
    ErrTlsReqd = 0x80000005,
    /// <summary>No such export.</summary>
    ErrUnknown = 0x80000006,
    /// <summary>The server is shutting down.</summary>
    ErrShutdown = 0x80000007,
    /// <summary>The option is too large.</summary>
    ErrTooBig = 0x80000009,
}

/// <summary>Information items of INFO and GO.</summary>
public enum NbdInfo : ushort
{
    /// <summary>Size and transmission flags (always sent).</summary>
    Export = 0,
    /// <summary>The export's canonical name.</summary>
    Name = 1,
    /// <summary>A description for people.</summary>
    Description = 2,
    /// <summary>Minimum, preferred and maximum block sizes.</summary>
    BlockSize = 3,
}

/// <summary>Transmission flags of an export.</summary>
[Flags]
public enum NbdTransmissionFlags : ushort
{
    /// <summary>Always set.</summary>
    HasFlags = 1 << 0,
    /// <summary>Writes are refused.</summary>
    ReadOnly = 1 << 1,
    /// <summary>FLUSH is meaningful.</summary>
    SendFlush = 1 << 2,
    /// <summary>FUA is meaningful.</summary>
    SendFua = 1 << 3,
    /// <summary>TRIM is supported.</summary>
    SendTrim = 1 << 5,
    /// <summary>WRITE_ZEROES is supported.</summary>
    SendWriteZeroes = 1 << 6,
    /// <summary>READ honours DF (reads are never fragmented here).</summary>
    SendDf = 1 << 7,
    /// <summary>Flush and FUA are visible across connections.</summary>
    CanMultiConn = 1 << 8,
    /// <summary>CACHE is supported.</summary>
    SendCache = 1 << 10,
    /// <summary>WRITE_ZEROES honours FAST_ZERO.</summary>
    SendFastZero = 1 << 11,
}

/// <summary>Transmission commands.</summary>
public enum NbdCommand : ushort
{
    /// <summary>Read <c>length</c> bytes at <c>offset</c>; the reply carries them.</summary>
    Read = 0,
    /// <summary>Write (payload follows the header).</summary>
    Write = 1,
    /// <summary>Disconnect (no reply).</summary>
    Disc = 2,
    /// <summary>Make completed writes durable.</summary>
    Flush = 3,
    /// <summary>The client no longer needs the range (served as a discard bio).</summary>
    Trim = 4,
    /// <summary>Prefetch hint.</summary>
    Cache = 5,
    /// <summary>Zero a range.</summary>
    WriteZeroes = 6,
    /// <summary>Allocation status.</summary>
    BlockStatus = 7,
}

/// <summary>Command flags.</summary>
[Flags]
public enum NbdCommandFlags : ushort
{
    /// <summary>No flag.</summary>
    None = 0,
    /// <summary>Forced unit access.</summary>
    Fua = 1 << 0,
    /// <summary>WRITE_ZEROES must not punch holes.</summary>
    NoHole = 1 << 1,
    /// <summary>Do not fragment the read reply.</summary>
    DontFragment = 1 << 2,
    /// <summary>BLOCK_STATUS: one extent is enough.</summary>
    ReqOne = 1 << 3,
    /// <summary>WRITE_ZEROES: fail at once unless zeroing is fast.</summary>
    FastZero = 1 << 4,
}

/// <summary>Structured reply chunk types.</summary>
public enum NbdChunkType : ushort
{
    /// <summary>No payload (final chunk only).</summary>
    None = 0,
    /// <summary>Offset and data.</summary>
    OffsetData = 1,
    /// <summary>Offset and hole size.</summary>
    OffsetHole = 2,
    /// <summary>Metadata extents.</summary>
    BlockStatus = 5,
    /// <summary>An error.</summary>
    Error = 0x8001,
}

/// <summary>Error values on the wire (Linux errno numbers, as the spec fixes them).</summary>
public enum NbdError : uint
{
    /// <summary>Success.</summary>
    None = 0,
    /// <summary>Write to a read-only export.</summary>
    Perm = 1,
    /// <summary>I/O error.</summary>
    Io = 5,
    /// <summary>Out of memory.</summary>
    NoMem = 12,
    /// <summary>Bad request: range, alignment, command or flags.</summary>
    Inval = 22,
    /// <summary>Write past the end.</summary>
    NoSpc = 28,
    /// <summary>Request too large.</summary>
    Overflow = 75,
    /// <summary>Not supported (FAST_ZERO that would be slow).</summary>
    NotSup = 95,
    /// <summary>The server is shutting down.</summary>
    Shutdown = 108,
}
