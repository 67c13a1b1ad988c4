using System.Buffers.Binary;
using System.Net.Security;
using System.Security.Authentication;
using System.Security.Cryptography.X509Certificates;
using System.Text;

namespace PfnBlock.Exports.Nbd;

/// <summary>What option haggling settled: the export and how to talk about it.</summary>
/// <param name="Export">The export chosen.</param>
/// <param name="StructuredReplies">Structured replies were negotiated.</param>
/// <param name="BaseAllocation">The <c>base:allocation</c> context is selected (BLOCK_STATUS allowed).</param>
/// <param name="Tls">The TLS stream transmission must use, or null for plaintext.</param>
/// <param name="BlockSizesRequested">
/// The client asked for NBD_INFO_BLOCK_SIZE in its GO, so it honours the minimum block size and
/// misaligned requests are its error (EINVAL); other clients' misaligned requests are carried out
/// by read-modify-write.
/// </param>
public sealed record NbdNegotiation(NbdExport Export, bool StructuredReplies, bool BaseAllocation, SslStream? Tls = null, bool BlockSizesRequested = true);

/// <summary>
/// The fixed newstyle handshake and option haggling, server side, over a blocking stream.
/// Malformed input ends in <see cref="NbdProtocolException"/> (the caller drops the connection);
/// well-formed options the server cannot satisfy get error replies and haggling goes on.
/// </summary>
public sealed class NbdHandshake
{
    private static readonly byte[] s_zeroes = new byte[124];
    private Stream _stream;
    private SslStream? _tls;
    private readonly X509Certificate2? _certificate;
    private readonly bool _tlsRequired;
    private readonly NbdExportRegistry _exports;
    private readonly Func<bool> _shuttingDown;
    private readonly Func<bool> _enterTransmission;
    private readonly byte[] _header = new byte[20];
    private bool _structured;
    private bool _noZeroes;
    private string? _metaExport;
    private bool _baseAllocation;

    /// <summary>Prepares a handshake on <paramref name="stream"/>.</summary>
    /// <param name="stream">The connection.</param>
    /// <param name="exports">The exports offered.</param>
    /// <param name="shuttingDown">True once the server is stopping; options then get ERR_SHUTDOWN.</param>
    /// <param name="certificate">The certificate STARTTLS offers; null refuses STARTTLS with ERR_POLICY.</param>
    /// <param name="tlsRequired">Refuse every option but STARTTLS and ABORT until TLS is up.</param>
    /// <param name="enterTransmission">
    /// Called once an export is chosen (GO or EXPORT_NAME), before the reply that ends the
    /// handshake; false drops the connection (the server evicted it meanwhile). From this call on
    /// the connection counts as served, so it is never evicted after the client saw it accepted.
    /// </param>
    public NbdHandshake(Stream stream, NbdExportRegistry exports, Func<bool>? shuttingDown = null,
        X509Certificate2? certificate = null, bool tlsRequired = false, Func<bool>? enterTransmission = null)
    {
        _enterTransmission = enterTransmission ?? (() => true);
        if (tlsRequired && certificate is null) throw new ArgumentException("requiring TLS needs a certificate", nameof(tlsRequired));
        _stream = stream;
        _exports = exports;
        _shuttingDown = shuttingDown ?? (() => false);
        _certificate = certificate;
        _tlsRequired = tlsRequired;
    }

    /// <summary>Runs the handshake.</summary>
    /// <returns>The negotiation, or null when the client aborted.</returns>
    /// <exception cref="NbdProtocolException">The client broke the protocol; drop the connection.</exception>
    /// <exception cref="EndOfStreamException">The client went away.</exception>
    /// <exception cref="AuthenticationException">The TLS handshake after STARTTLS failed; drop the connection.</exception>
    public NbdNegotiation? Run()
    {
        Span<byte> greet = stackalloc byte[18];
        BinaryPrimitives.WriteUInt64BigEndian(greet, NbdProtocol.InitMagic);
        BinaryPrimitives.WriteUInt64BigEndian(greet[8..], NbdProtocol.OptionMagic);
        BinaryPrimitives.WriteUInt16BigEndian(greet[16..], (ushort)(NbdHandshakeFlags.FixedNewstyle | NbdHandshakeFlags.NoZeroes));
        _stream.Write(greet);
        _stream.Flush();

        ReadExactly(_header.AsSpan(0, 4));
        uint clientFlags = BinaryPrimitives.ReadUInt32BigEndian(_header);
        if ((clientFlags & ~(uint)(NbdClientFlags.FixedNewstyle | NbdClientFlags.NoZeroes)) != 0)
            throw new NbdProtocolException($"unknown client flags 0x{clientFlags:x}");
        _noZeroes = (clientFlags & (uint)NbdClientFlags.NoZeroes) != 0;

        while (true)
        {
            ReadExactly(_header.AsSpan(0, 16));
            if (BinaryPrimitives.ReadUInt64BigEndian(_header) != NbdProtocol.OptionMagic)
                throw new NbdProtocolException("bad option magic");
            uint option = BinaryPrimitives.ReadUInt32BigEndian(_header.AsSpan(8));
            uint length = BinaryPrimitives.ReadUInt32BigEndian(_header.AsSpan(12));
            if (length > NbdProtocol.MaxOptionLength) throw new NbdProtocolException($"option {option} of {length} bytes is too long");
            byte[] data = new byte[length];
            ReadExactly(data);

            if ((NbdOption)option == NbdOption.Abort)
            {
                TryReply(option, NbdReply.Ack);
                return null;
            }
            if (_tlsRequired && _tls is null && (NbdOption)option != NbdOption.StartTls)
            {
                // EXPORT_NAME has no error reply: without TLS the session must end.
                if ((NbdOption)option == NbdOption.ExportName) throw new NbdProtocolException("EXPORT_NAME before STARTTLS on a TLS-only server");
                Reply(option, NbdReply.ErrTlsReqd, "this server requires TLS: send STARTTLS first"u8);
                continue;
            }
            if ((NbdOption)option == NbdOption.ExportName)
            {
                // No error reply exists for EXPORT_NAME: an unknown export ends the session.
                NbdExport export = _exports.Find(DecodeString(data)) ?? throw new NbdProtocolException("EXPORT_NAME names no export");
                if (_shuttingDown()) throw new NbdProtocolException("server is shutting down");
                if (!_enterTransmission()) throw new NbdProtocolException("evicted during the handshake");
                Span<byte> reply = stackalloc byte[10];
                BinaryPrimitives.WriteUInt64BigEndian(reply, (ulong)export.Size);
                BinaryPrimitives.WriteUInt16BigEndian(reply[8..], (ushort)export.TransmissionFlags(_structured));
                _stream.Write(reply);
                if (!_noZeroes) _stream.Write(s_zeroes);
                _stream.Flush();
                return Finish(export, blockSizesRequested: false); // EXPORT_NAME cannot ask for block sizes
            }
            if (_shuttingDown()) { Reply(option, NbdReply.ErrShutdown); continue; }

            NbdNegotiation? done = (NbdOption)option switch
            {
                NbdOption.List => List(option, data),
                NbdOption.StartTls => StartTls(option, data),
                NbdOption.Info or NbdOption.Go => InfoOrGo(option, data),
                NbdOption.StructuredReply => StructuredReply(option, data),
                NbdOption.ListMetaContext or NbdOption.SetMetaContext => MetaContext(option, data),
                _ => ReplyNull(option, NbdReply.ErrUnsup, "unsupported option"),
            };
            if (done is not null) return done;
        }
    }

    private NbdNegotiation Finish(NbdExport export, bool blockSizesRequested) =>
        new(export, _structured, _baseAllocation && _structured && _metaExport == export.Name, _tls, blockSizesRequested);

    private NbdNegotiation? StartTls(uint option, byte[] data)
    {
        if (_certificate is null) return ReplyNull(option, NbdReply.ErrPolicy, "TLS is not configured on this server");
        if (_tls is not null) return ReplyNull(option, NbdReply.ErrInvalid, "TLS is already active");
        if (data.Length != 0) return ReplyNull(option, NbdReply.ErrInvalid, "STARTTLS takes no data");
        Reply(option, NbdReply.Ack);
        var tls = new SslStream(_stream, leaveInnerStreamOpen: true);
        try
        {
            tls.AuthenticateAsServer(new SslServerAuthenticationOptions
            {
                ServerCertificate = _certificate,
                EnabledSslProtocols = SslProtocols.Tls12 | SslProtocols.Tls13,
                ClientCertificateRequired = false,
            });
        }
        catch
        {
            tls.Dispose();
            throw;
        }
        _tls = tls;
        _stream = tls;
        // Nothing negotiated in plaintext carries over into the TLS session.
        _structured = false;
        _baseAllocation = false;
        _metaExport = null;
        return null;
    }

    private NbdNegotiation? List(uint option, byte[] data)
    {
        if (data.Length != 0) return ReplyNull(option, NbdReply.ErrInvalid, "LIST takes no data");
        foreach (NbdExport e in _exports.All)
        {
            byte[] name = Encoding.UTF8.GetBytes(e.Name);
            byte[] payload = new byte[4 + name.Length];
            BinaryPrimitives.WriteUInt32BigEndian(payload, (uint)name.Length);
            name.CopyTo(payload, 4);
            Reply(option, NbdReply.Server, payload);
        }
        return ReplyNull(option, NbdReply.Ack);
    }

    private NbdNegotiation? StructuredReply(uint option, byte[] data)
    {
        if (data.Length != 0) return ReplyNull(option, NbdReply.ErrInvalid, "STRUCTURED_REPLY takes no data");
        _structured = true;
        return ReplyNull(option, NbdReply.Ack);
    }

    private NbdNegotiation? InfoOrGo(uint option, byte[] data)
    {
        // name length u32, name, count u16, count x info type u16
        if (data.Length < 6) return ReplyNull(option, NbdReply.ErrInvalid, "INFO/GO request too short");
        uint nameLength = BinaryPrimitives.ReadUInt32BigEndian(data);
        if (nameLength > data.Length - 6) return ReplyNull(option, NbdReply.ErrInvalid, "export name runs past the option");
        int at = 4 + (int)nameLength;
        int count = BinaryPrimitives.ReadUInt16BigEndian(data.AsSpan(at));
        if (data.Length != at + 2 + 2 * count) return ReplyNull(option, NbdReply.ErrInvalid, "INFO/GO request length does not match its items");
        string name = DecodeString(data.AsSpan(4, (int)nameLength));
        NbdExport? export = _exports.Find(name);
        if (export is null) return ReplyNull(option, NbdReply.ErrUnknown, $"no export named '{name}'");

        if ((NbdOption)option == NbdOption.Go && !_enterTransmission()) throw new NbdProtocolException("evicted during the handshake");
        bool wantName = false, wantDescription = false, wantBlockSize = false;
        for (int i = 0; i < count; i++)
        {
            var item = (NbdInfo)BinaryPrimitives.ReadUInt16BigEndian(data.AsSpan(at + 2 + 2 * i));
            wantName |= item == NbdInfo.Name;
            wantDescription |= item == NbdInfo.Description;
            wantBlockSize |= item == NbdInfo.BlockSize;
        }
        byte[] info = new byte[12];
        BinaryPrimitives.WriteUInt16BigEndian(info, (ushort)NbdInfo.Export);
        BinaryPrimitives.WriteUInt64BigEndian(info.AsSpan(2), (ulong)export.Size);
        BinaryPrimitives.WriteUInt16BigEndian(info.AsSpan(10), (ushort)export.TransmissionFlags(_structured));
        Reply(option, NbdReply.Info, info);
        if (wantName) Reply(option, NbdReply.Info, InfoString(NbdInfo.Name, export.Name));
        if (wantDescription) Reply(option, NbdReply.Info, InfoString(NbdInfo.Description, export.Description));
        // Block sizes are always sent (the spec allows it); only clients that asked for them are held to them.
        byte[] sizes = new byte[14];
        BinaryPrimitives.WriteUInt16BigEndian(sizes, (ushort)NbdInfo.BlockSize);
        BinaryPrimitives.WriteUInt32BigEndian(sizes.AsSpan(2), (uint)export.MinBlockSize);
        BinaryPrimitives.WriteUInt32BigEndian(sizes.AsSpan(6), (uint)Math.Max(export.MinBlockSize, NbdProtocol.PreferredBlockSize));
        BinaryPrimitives.WriteUInt32BigEndian(sizes.AsSpan(10), NbdProtocol.MaxPayload);
        Reply(option, NbdReply.Info, sizes);
        Reply(option, NbdReply.Ack);
        return (NbdOption)option == NbdOption.Go ? Finish(export, wantBlockSize) : null;
    }

    private NbdNegotiation? MetaContext(uint option, byte[] data)
    {
        bool set = (NbdOption)option == NbdOption.SetMetaContext;
        if (!_structured) return ReplyNull(option, NbdReply.ErrInvalid, "metadata contexts need structured replies");
        // name length u32, name, query count u32, count x (length u32, query)
        var span = data.AsSpan();
        if (!TakeString(ref span, out string name) || span.Length < 4)
            return ReplyNull(option, NbdReply.ErrInvalid, "malformed metadata context request");
        uint queries = BinaryPrimitives.ReadUInt32BigEndian(span);
        span = span[4..];
        bool match = !set && queries == 0;
        for (uint i = 0; i < queries; i++)
        {
            if (!TakeString(ref span, out string query)) return ReplyNull(option, NbdReply.ErrInvalid, "malformed metadata context query");
            match |= query == NbdProtocol.BaseAllocation || (!set && query == "base:");
        }
        if (span.Length != 0) return ReplyNull(option, NbdReply.ErrInvalid, "trailing bytes in metadata context request");
        if (_exports.Find(name) is null) return ReplyNull(option, NbdReply.ErrUnknown, $"no export named '{name}'");
        if (set)
        {
            _metaExport = name.Length == 0 ? _exports.Find("")!.Name : name;
            _baseAllocation = match;
        }
        if (match)
        {
            byte[] context = Encoding.UTF8.GetBytes(NbdProtocol.BaseAllocation);
            byte[] payload = new byte[4 + context.Length];
            BinaryPrimitives.WriteUInt32BigEndian(payload, set ? NbdProtocol.BaseAllocationId : 0);
            context.CopyTo(payload, 4);
            Reply(option, NbdReply.MetaContext, payload);
        }
        return ReplyNull(option, NbdReply.Ack);
    }

    private static bool TakeString(ref Span<byte> span, out string value)
    {
        value = "";
        if (span.Length < 4) return false;
        uint length = BinaryPrimitives.ReadUInt32BigEndian(span);
        if (length > span.Length - 4 || length > NbdProtocol.MaxStringLength) return false;
        value = DecodeString(span.Slice(4, (int)length));
        span = span[(4 + (int)length)..];
        return true;
    }

    private static string DecodeString(ReadOnlySpan<byte> bytes)
    {
        if (bytes.Length > NbdProtocol.MaxStringLength) throw new NbdProtocolException("string longer than 4096 bytes");
        return Encoding.UTF8.GetString(bytes);
    }

    private static byte[] InfoString(NbdInfo type, string text)
    {
        byte[] bytes = Encoding.UTF8.GetBytes(text);
        byte[] payload = new byte[2 + bytes.Length];
        BinaryPrimitives.WriteUInt16BigEndian(payload, (ushort)type);
        bytes.CopyTo(payload, 2);
        return payload;
    }

    private NbdNegotiation? ReplyNull(uint option, NbdReply type, string? message = null)
    {
        Reply(option, type, message is null ? [] : Encoding.UTF8.GetBytes(message));
        return null;
    }

    private void Reply(uint option, NbdReply type, ReadOnlySpan<byte> payload = default)
    {
        BinaryPrimitives.WriteUInt64BigEndian(_header, NbdProtocol.OptionReplyMagic);
        BinaryPrimitives.WriteUInt32BigEndian(_header.AsSpan(8), option);
        BinaryPrimitives.WriteUInt32BigEndian(_header.AsSpan(12), (uint)type);
        BinaryPrimitives.WriteUInt32BigEndian(_header.AsSpan(16), (uint)payload.Length);
        _stream.Write(_header, 0, 20);
        _stream.Write(payload);
        _stream.Flush();
    }

    private void TryReply(uint option, NbdReply type)
    {
        // The client may already have closed after ABORT; that is allowed.
        try { Reply(option, type); }
        catch (IOException) { }
    }

    private void ReadExactly(Span<byte> buffer) => _stream.ReadExactly(buffer);
}

/// <summary>The peer broke the NBD protocol; the connection is dropped.</summary>
public sealed class NbdProtocolException(string message) : Exception(message);
