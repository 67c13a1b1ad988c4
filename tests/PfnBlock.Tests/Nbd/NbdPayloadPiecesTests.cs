using System.Buffers.Binary;
using CsCheck;
using PfnBlock.Block;
using PfnBlock.Devices.Pmem;
using PfnBlock.Exports.Nbd;

namespace PfnBlock.Tests.Nbd;

/// <summary>
/// Short receives: a stream of write requests cut into arbitrary pieces (headers and payloads split
/// anywhere), with pauses, leaves the export as a simple model says, with busy-polling
/// (<see cref="NbdServerOptions.BusyPoll"/>) on and off; a client that leaves mid-payload while the
/// connection polls leaves no pin and no broken server behind.
/// </summary>
public sealed class NbdPayloadPiecesTests
{
    private const int Size = 4 << 20;

    /// <summary>One write: offset and length in 4 KiB pages, and the byte it is filled with.</summary>
    private readonly record struct Write(int Page, int Pages, byte Fill);

    private static readonly Gen<Write> Writes = Gen.Select(Gen.Int[0, Size / 4096 - 64], Gen.Frequency((4, Gen.Int[1, 2]), (1, Gen.Int[3, 64])), Gen.Byte[1, 255],
        (p, n, f) => new Write(p, n, f));

    /// <summary>The bytes of the request stream are sent in pieces this large; a negative piece is a pause of that many hundred microseconds.</summary>
    private static readonly Gen<int[]> Pieces = Gen.Frequency((6, Gen.Int[1, 9000]), (2, Gen.Int[9000, 300_000]), (1, Gen.Int[-5, -1])).Array[1, 40];

    [Theory]
    [InlineData(0)]
    [InlineData(300)]
    public void AStreamInPiecesLeavesTheExportAsTheModelSays(int pollMicroseconds)
    {
        // The namespace's info block and alignment take some of it: room for Size bytes of data.
        (IBlockDevice dev, string path) = NbdTestServer.Pmem(Size + (4 << 20));
        using var server = new NbdTestServer(new NbdServerOptions { BusyPoll = TimeSpan.FromMicroseconds(pollMicroseconds) }, ("disk", dev, false));
        server.DeleteOnDispose(path);
        byte[] model = new byte[Size];
        byte[] back = new byte[Size];
        Gen.Select(Writes.Array[2, 24], Pieces).Sample((writes, pieces) =>
        {
            using NbdRawClient c = NbdRawClient.Connect(server.SocketPath);
            c.Negotiate("disk");
            byte[] stream = Encode(writes, model);
            // A dedicated thread sends while this one reads the replies: neither side's socket buffer can fill up and stall the other.
            var sender = new Thread(() => SendInPieces(c, stream, pieces));
            sender.Start();
            for (int i = 0; i < writes.Length; i++) Assert.Equal(NbdError.None, c.ReadReply(default).Error);
            sender.Join();
            c.Request(NbdCommand.Read, 0, 1, 0, Size);
            Assert.Equal(NbdError.None, c.ReadReply(back, Size).Error);
            Assert.True(model.AsSpan().SequenceEqual(back), "the export differs from the model");
            c.Request(NbdCommand.Disc, 0, 2, 0, 0);
        }, iter: 25, threads: 1);
        long polled = server.Registry.Find("disk")!.Stats.Snapshot().PolledReceives;
        if (pollMicroseconds > 0) Assert.True(polled > 0, "no receive found its data while polling");
        else Assert.Equal(0, polled);
    }

    /// <summary>The requests' bytes as a client sends them, applied to <paramref name="model"/> too.</summary>
    private static byte[] Encode(Write[] writes, byte[] model)
    {
        var stream = new MemoryStream();
        Span<byte> h = stackalloc byte[28];
        for (int i = 0; i < writes.Length; i++)
        {
            Write w = writes[i];
            int offset = w.Page * 4096, length = w.Pages * 4096;
            BinaryPrimitives.WriteUInt32BigEndian(h, NbdProtocol.RequestMagic);
            BinaryPrimitives.WriteUInt16BigEndian(h[4..], 0);
            BinaryPrimitives.WriteUInt16BigEndian(h[6..], (ushort)NbdCommand.Write);
            BinaryPrimitives.WriteUInt64BigEndian(h[8..], (ulong)i);
            BinaryPrimitives.WriteUInt64BigEndian(h[16..], (ulong)offset);
            BinaryPrimitives.WriteUInt32BigEndian(h[24..], (uint)length);
            stream.Write(h);
            byte[] payload = new byte[length];
            // Each 4 KiB page of a write gets its own byte, so a page landing at the wrong place shows.
            for (int p = 0; p < w.Pages; p++) payload.AsSpan(p * 4096, 4096).Fill((byte)(w.Fill + p));
            stream.Write(payload);
            payload.CopyTo(model, offset);
        }
        return stream.ToArray();
    }

    private static void SendInPieces(NbdRawClient c, byte[] stream, int[] pieces)
    {
        int at = 0;
        for (int i = 0; at < stream.Length; i++)
        {
            int piece = pieces[i % pieces.Length];
            if (piece < 0)
            {
                // A pause longer than most polls: the server must also find the rest after sleeping.
                Thread.Sleep(TimeSpan.FromMicroseconds(-100 * piece));
                continue;
            }
            int n = Math.Min(piece, stream.Length - at);
            c.Send(stream.AsSpan(at, n));
            at += n;
        }
    }

    [Fact]
    public void AClientLeavingMidPayloadWhileTheConnectionPollsLeavesNoPinAndTheServerServing()
    {
        (IBlockDevice dev, string path) = NbdTestServer.Pmem(Size);
        using var server = new NbdTestServer(new NbdServerOptions { BusyPoll = TimeSpan.FromMilliseconds(50) }, ("disk", dev, false));
        server.DeleteOnDispose(path);
        byte[] data = new byte[65536];
        data.AsSpan().Fill(0x5a);
        using (NbdRawClient c = NbdRawClient.Connect(server.SocketPath))
        {
            c.Negotiate("disk", structured: true);
            // Two reads from the device's frames (pinned until their replies left) and two writes.
            c.Request(NbdCommand.Read, 0, 1, 0, 65536);
            c.Request(NbdCommand.Read, 0, 2, 65536, 65536);
            c.Request(NbdCommand.Write, 0, 3, 0, 65536, data);
            c.Request(NbdCommand.Write, 0, 4, 131072, 65536, data);
            byte[] back = new byte[65536];
            for (int i = 0; i < 4; i++) Assert.Equal(NbdError.None, c.ReadReply(back).Error);
            // Half of a write's payload, then gone.
            c.Request(NbdCommand.Write, 0, 5, 262144, 65536, data.AsSpan(0, 32768));
        }
        var pmem = (PmemDevice)dev;
        Assert.True(SpinWait.SpinUntil(() => server.Server.ActiveConnections == 0 && !pmem.Pins.AnyPinned, TimeSpan.FromSeconds(10)),
            "the connection did not end, or left frames pinned");
        using NbdRawClient next = NbdRawClient.Connect(server.SocketPath);
        next.Negotiate("disk");
        byte[] read = new byte[65536];
        next.Request(NbdCommand.Read, 0, 6, 131072, 65536);
        Assert.Equal(NbdError.None, next.ReadReply(read, 65536).Error);
        Assert.True(data.AsSpan().SequenceEqual(read), "an acknowledged write was lost");
    }
}
