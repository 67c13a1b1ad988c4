using System.Buffers.Binary;
using System.Net.Sockets;
using System.Text;
using CsCheck;
using PfnBlock.Exports.Nbd;

namespace PfnBlock.Tests.Nbd;

/// <summary>
/// Throws generated handshakes and requests, well-formed, malformed and truncated, at one server,
/// and checks that it answers or disconnects each client, never hangs or dies, and keeps serving
/// a well-behaved client.
/// </summary>
public sealed class NbdFuzzTests
{
    private const long Size = 8 << 20;

    private static byte[] U16(int v) { byte[] b = new byte[2]; BinaryPrimitives.WriteUInt16BigEndian(b, (ushort)v); return b; }
    private static byte[] U32(uint v) { byte[] b = new byte[4]; BinaryPrimitives.WriteUInt32BigEndian(b, v); return b; }
    private static byte[] U64(ulong v) { byte[] b = new byte[8]; BinaryPrimitives.WriteUInt64BigEndian(b, v); return b; }
    private static byte[] Cat(params byte[][] parts) => parts.SelectMany(p => p).ToArray();

    private static readonly Gen<byte[]> RandomBytes = Gen.Byte.Array[0, 300];

    private static readonly Gen<uint> ClientFlags = Gen.Frequency((8, Gen.Const(3u)), (1, Gen.Const(1u)), (1, Gen.UInt));

    private static readonly Gen<string> ExportName = Gen.OneOf("disk", "ro", "", "nope", new string('x', 5000));

    /// <summary>Option payloads: the right shape for the option, or junk.</summary>
    private static readonly Gen<byte[]> OptionData = Gen.OneOf(
        RandomBytes,
        Gen.Select(ExportName, Gen.UShort.Array[0, 5], (n, items) =>
            Cat(U32((uint)Encoding.UTF8.GetByteCount(n)), Encoding.UTF8.GetBytes(n), U16(items.Length), items.SelectMany(i => U16(i % 5)).ToArray())),
        Gen.Select(ExportName, Gen.OneOf("base:allocation", "base:", "", "qemu:dirty-bitmap:x").Array[0, 3], (n, qs) =>
            Cat(U32((uint)n.Length), Encoding.UTF8.GetBytes(n), U32((uint)qs.Length),
                qs.SelectMany(q => Cat(U32((uint)q.Length), Encoding.UTF8.GetBytes(q))).ToArray())));

    /// <summary>One option: usually well-framed, sometimes with a bad magic or a lying length.</summary>
    private static readonly Gen<byte[]> Option = Gen.Select(
        Gen.Int[0, 99], Gen.Frequency((10, Gen.UInt[1, 11]), (1, Gen.UInt)), OptionData, Gen.Int[-8, 8],
        (fault, option, data, lie) =>
        {
            ulong magic = fault < 4 ? NbdProtocol.OptionMagic ^ 1 : NbdProtocol.OptionMagic;
            long length = fault < 10 ? Math.Max(0, data.Length + lie) : data.Length;
            return Cat(U64(magic), U32(option), U32((uint)length), data);
        });

    private static readonly Gen<byte[]> Handshake = Gen.Select(ClientFlags, Option.Array[0, 6], (f, opts) => Cat(U32(f), opts.SelectMany(o => o).ToArray()));

    private static readonly Gen<ulong> Offset = Gen.Frequency(
        (4, Gen.Const(0UL)), (3, Gen.ULong[0, (ulong)Size / 512].Select(x => x * 512)), (2, Gen.OneOf((ulong)Size - 512, (ulong)Size, (ulong)Size + 512)),
        (1, Gen.OneOf(ulong.MaxValue, ulong.MaxValue - 511, 1UL << 63)), (1, Gen.ULong));

    private static readonly Gen<uint> Length = Gen.Frequency(
        (6, Gen.OneOf(512u, 4096u, 8192u)), (2, Gen.OneOf(0u, 1u, 511u, 4097u)),
        (1, Gen.OneOf(1u << 20, 32u << 20, (32u << 20) + 1, uint.MaxValue)), (1, Gen.UInt[0, 65536]));

    /// <summary>One request: plausible commands and flags, edge-case ranges, payloads that may be truncated.</summary>
    private static readonly Gen<byte[]> Request = Gen.Select(
        Gen.Int[0, 99], Gen.Frequency((10, Gen.UShort[0, 7]), (1, Gen.UShort)), Gen.Frequency((6, Gen.UShort[0, 31]), (1, Gen.UShort)), Offset, Length,
        (fault, cmd, flags, offset, length) =>
        {
            uint magic = fault < 3 ? 0xdeadbeef : NbdProtocol.RequestMagic;
            int payload = cmd == (ushort)NbdCommand.Write ? (int)Math.Min(length, 16384u) : 0;
            if (fault is >= 3 and < 6) payload /= 2; // truncated payload: the stream desynchronises from here
            return Cat(U32(magic), U16(flags), U16(cmd), U64((ulong)fault), U64(offset), U32(length), new byte[payload]);
        });

    private static readonly Gen<byte[]> Transmission = Gen.Select(
        Gen.Bool, Gen.Bool, Gen.OneOf("disk", "ro"), Request.Array[0, 12],
        (structured, meta, name, requests) =>
        {
            var parts = new List<byte[]> { U32(3) };
            if (structured) parts.Add(Cat(U64(NbdProtocol.OptionMagic), U32((uint)NbdOption.StructuredReply), U32(0)));
            if (meta)
            {
                byte[] m = Cat(U32((uint)name.Length), Encoding.UTF8.GetBytes(name), U32(1), U32(15), Encoding.UTF8.GetBytes(NbdProtocol.BaseAllocation));
                parts.Add(Cat(U64(NbdProtocol.OptionMagic), U32((uint)NbdOption.SetMetaContext), U32((uint)m.Length), m));
            }
            byte[] go = Cat(U32((uint)name.Length), Encoding.UTF8.GetBytes(name), U16(0));
            parts.Add(Cat(U64(NbdProtocol.OptionMagic), U32((uint)NbdOption.Go), U32((uint)go.Length), go));
            parts.AddRange(requests);
            return Cat([.. parts]);
        });

    private static readonly Gen<byte[]> Session = Gen.Frequency((1, RandomBytes), (3, Handshake), (6, Transmission));

    [Fact]
    public void ServerSurvivesMalformedClientsAndKeepsServing()
    {
        using var server = new NbdTestServer(("disk", NbdTestServer.Ram(Size), false), ("ro", NbdTestServer.Ram(Size), true));
        using NbdRawClient good = NbdRawClient.Connect(server.SocketPath);
        good.Negotiate("disk", structured: true);
        byte[] pattern = new byte[4096];
        byte[] back = new byte[4096];
        int round = 0;

        Session.Sample(bytes =>
        {
            Throw(server.SocketPath, bytes);
            // The well-behaved client, connected all along, still gets correct service.
            round++;
            pattern.AsSpan().Fill((byte)round);
            good.Request(NbdCommand.Write, NbdCommandFlags.Fua, 1, 4096, 4096, pattern);
            Assert.Equal(NbdError.None, good.ReadReply(back).Error);
            good.Request(NbdCommand.Read, 0, 2, 4096, 4096);
            Assert.Equal(NbdError.None, good.ReadReply(back).Error);
            Assert.True(back.AsSpan().SequenceEqual(pattern));
        }, iter: 400, threads: 1, seed: null);

        Assert.Equal(400, round);
        // The generator reached the transmission phase and its bad requests were answered with errors.
        NbdStatsSnapshot disk = server.Registry.Find("disk")!.Stats.Snapshot();
        NbdStatsSnapshot ro = server.Registry.Find("ro")!.Stats.Snapshot();
        Assert.True(disk.Connections + ro.Connections > 50, $"only {disk.Connections + ro.Connections} fuzz sessions reached transmission");
        Assert.True(disk.Errors + ro.Errors > 100, $"only {disk.Errors + ro.Errors} error replies");
        Assert.True(disk.Total - 2 * round > 100, "few fuzzed requests were served");

        // Every fuzzing connection was closed and its buffers returned.
        for (int i = 0; i < 100 && server.Server.ActiveConnections > 1; i++) Thread.Sleep(50);
        Assert.Equal(1, server.Server.ActiveConnections);
        using NbdRawClient late = NbdRawClient.Connect(server.SocketPath);
        late.Negotiate("disk");
        late.Request(NbdCommand.Read, 0, 3, 4096, 4096);
        Assert.Equal(NbdError.None, late.ReadReply(back, 4096).Error);
    }

    /// <summary>Sends <paramref name="bytes"/> as a client, ends its side, and reads until the server closes.</summary>
    private static void Throw(string socketPath, byte[] bytes)
    {
        using var s = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        s.Connect(new UnixDomainSocketEndPoint(socketPath));
        s.ReceiveTimeout = 10000;
        try
        {
            s.Send(bytes);
            s.Shutdown(SocketShutdown.Send);
        }
        catch (SocketException) { return; } // the server already hung up: allowed
        byte[] sink = new byte[1 << 16];
        try
        {
            while (s.Receive(sink) > 0) { }
        }
        catch (SocketException e) when (e.SocketErrorCode == SocketError.ConnectionReset) { }
        // A receive timeout (SocketException TimedOut) propagates: the server hung on a client that had finished.
    }
}
