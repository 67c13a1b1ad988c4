using CsCheck;
using PfnBlock.Devices.Pmem;
using PfnBlock.Exports.Nbd;
using PfnBlock.Namespaces;

namespace PfnBlock.Tests.Nbd;

/// <summary>
/// Large direct-access reads are spliced into the socket (the client reads the namespace's pages
/// themselves): the byte stream keeps its order among copied replies, the data is right, and a
/// reply keeps its pin until the client has read it, so a write-zeroes of the range waits for it.
/// </summary>
public sealed class NbdSpliceTests : IDisposable
{
    private const int Size = 16 << 20;
    private const int ReadArea = 12 << 20; // reads and large writes here; the small writes of a mixed batch above it

    private readonly Scratch _scratch = new();
    public void Dispose() => _scratch.Dispose();

    private PmemDevice NewPmem() => new(PmemNamespace.Create(_scratch.NewPath("splice"), new NamespaceCreateOptions { Size = Size + (1 << 20) }));

    private record struct Op(bool Write, int Offset, int Length, byte Fill);

    // Page-aligned pieces: small ones (below the splice threshold) and large ones (a pipe-full and more).
    private static readonly Gen<int> Length = Gen.OneOf(Gen.Int[1, 8].Select(p => p * 4096), Gen.Int[16, 768].Select(p => p * 4096));
    private static readonly Gen<Op> LargeWrite = Gen.Select(Gen.Int[1, 256], Gen.Byte[1, 255], (p, fill) => new Op(true, 0, p * 4096, fill))
        .SelectMany(op => Gen.Int[0, (ReadArea - op.Length) / 4096].Select(o => op with { Offset = o * 4096 }));
    private static readonly Gen<Op> Read = Length.SelectMany(n => Gen.Int[0, (ReadArea - n) / 4096].Select(o => new Op(false, o * 4096, n, 0)));
    private static readonly Gen<Op> SmallWrite = Gen.Select(Gen.Int[0, ((Size - ReadArea) >> 12) - 4], Gen.Int[1, 4], Gen.Byte[1, 255],
        (o, p, fill) => new Op(true, ReadArea + o * 4096, p * 4096, fill));
    // A round: large writes (waited for), then reads with small writes elsewhere, all sent before any reply is read.
    private static readonly Gen<(Op[] Writes, Op[] Mixed)> Round = Gen.Select(LargeWrite.Array[1, 4], Gen.Frequency((3, Read), (1, SmallWrite)).Array[1, 12]);

    [Theory]
    [InlineData(0, false)]      // never spliced: the copying path, for reference
    [InlineData(4096, false)]   // nearly every read spliced
    [InlineData(4096, true)]    // structured: data chunks spliced between hole chunks
    [InlineData(65536, true)]   // the default threshold
    public void ReadsMatchTheModelWithRepliesSplicedAmongCopiedOnes(int spliceBytes, bool structured)
    {
        Round.Array[1, 3].Sample(rounds =>
        {
            PmemDevice dev = NewPmem();
            using var server = new NbdTestServer(new NbdServerOptions { SpliceReadBytes = spliceBytes }, ("ns", dev, false));
            using NbdRawClient c = NbdRawClient.Connect(server.SocketPath);
            c.Negotiate("ns", structured);
            byte[] model = new byte[Size];
            byte[] got = new byte[3 << 20];
            ulong cookie = 0;
            foreach ((Op[] writes, Op[] mixed) in rounds)
            {
                Send(c, writes, ref cookie);
                Check(c, writes, cookie - (ulong)writes.Length, model, got);
                Send(c, mixed, ref cookie);
                Check(c, mixed, cookie - (ulong)mixed.Length, model, got);
            }
        }, iter: 8, threads: 1);
    }

    private static void Send(NbdRawClient c, Op[] ops, ref ulong cookie)
    {
        foreach (Op op in ops)
        {
            byte[] payload = op.Write ? Filled(op) : [];
            c.Request(op.Write ? NbdCommand.Write : NbdCommand.Read, 0, cookie++, (ulong)op.Offset, (uint)op.Length, payload);
        }
    }

    /// <summary>Reads the replies in request order (a synchronous device completes in order) and checks read data against the model, which the writes then update.</summary>
    private static void Check(NbdRawClient c, Op[] ops, ulong firstCookie, byte[] model, byte[] got)
    {
        for (int i = 0; i < ops.Length; i++)
        {
            Op op = ops[i];
            (ulong cookie, NbdError error, _, _) = c.ReadReply(got, op.Write ? 0 : op.Length);
            Assert.Equal((firstCookie + (ulong)i, NbdError.None), (cookie, error));
            if (!op.Write)
            {
                int bad = got.AsSpan(0, op.Length).CommonPrefixLength(model.AsSpan(op.Offset, op.Length));
                Assert.True(bad == op.Length, $"read of [{op.Offset}, +{op.Length}) differs at byte {bad}");
            }
        }
        foreach (Op op in ops) if (op.Write) model.AsSpan(op.Offset, op.Length).Fill(op.Fill);
    }

    private static byte[] Filled(Op op)
    {
        byte[] b = new byte[op.Length];
        b.AsSpan().Fill(op.Fill);
        return b;
    }

    [Fact]
    public unsafe void ASplicedReplyHoldsItsPinUntilTheClientHasReadIt()
    {
        const int ReadBytes = 256 << 10; // spliced, and small enough to sit in the socket unread
        PmemDevice dev = NewPmem();
        var expected = new byte[ReadBytes];
        new Random(12).NextBytes(expected);
        expected.AsSpan().Replace((byte)0, (byte)1); // a zeroed byte must stand out
        expected.CopyTo(new Span<byte>(dev.Namespace.DataAddress, ReadBytes));
        using var server = new NbdTestServer(new NbdServerOptions { SpliceReadBytes = 64 << 10 }, ("ns", dev, false));
        using NbdRawClient reader = NbdRawClient.Connect(server.SocketPath);
        using NbdRawClient zeroer = NbdRawClient.Connect(server.SocketPath);
        reader.Negotiate("ns");
        zeroer.Negotiate("ns");

        reader.Request(NbdCommand.Read, 0, 1, 0, ReadBytes);
        // The whole reply has left the server: only the client's reading can free its pages now.
        Assert.True(SpinWait.SpinUntil(() => reader.Socket.Available >= ReadBytes + NbdProtocol.SimpleReplySize, TimeSpan.FromSeconds(10)), "the reply did not arrive");
        Assert.True(dev.Pins.IsPinned(0, 1), "a spliced reply the client has not read lost its pin");
        // Zeroing in place (NO_HOLE) writes the very pages the socket refers to: it must wait.
        zeroer.Request(NbdCommand.WriteZeroes, NbdCommandFlags.NoHole, 2, 0, ReadBytes);

        var got = new byte[ReadBytes];
        (ulong cookie, NbdError error, _, _) = reader.ReadReply(got, ReadBytes);
        Assert.Equal((1UL, NbdError.None), (cookie, error));
        Assert.True(got.AsSpan().SequenceEqual(expected), "the write-zeroes changed pages of a reply the client had not read yet");
        (cookie, error, _, _) = zeroer.ReadReply([]);
        Assert.Equal((2UL, NbdError.None), (cookie, error));
        zeroer.Request(NbdCommand.Read, 0, 3, 0, 4096);
        (_, error, _, _) = zeroer.ReadReply(got, 4096);
        Assert.Equal(NbdError.None, error);
        Assert.True(got.AsSpan(0, 4096).IndexOfAnyExcept((byte)0) < 0, "the write-zeroes did not run");
    }

    [Fact]
    public void AClientThatLeavesWithoutReadingSplicedRepliesLeavesNoPinBehind()
    {
        PmemDevice dev = NewPmem();
        using var server = new NbdTestServer(new NbdServerOptions { SpliceReadBytes = 64 << 10 }, ("ns", dev, false));
        using (NbdRawClient c = NbdRawClient.Connect(server.SocketPath))
        {
            c.Negotiate("ns");
            for (ulong i = 0; i < 8; i++) c.Request(NbdCommand.Read, 0, i, i << 20, 1 << 20);
            Assert.True(SpinWait.SpinUntil(() => dev.Pins.AnyPinned, TimeSpan.FromSeconds(10)), "no reply was spliced");
        }
        Assert.True(SpinWait.SpinUntil(() => !dev.Pins.AnyPinned, TimeSpan.FromSeconds(10)), "pins of a gone client's replies were kept");
        // The server goes on serving.
        using NbdRawClient next = NbdRawClient.Connect(server.SocketPath);
        next.Negotiate("ns");
        next.Request(NbdCommand.Read, 0, 9, 0, 1 << 20);
        (ulong cookie, NbdError error, _, _) = next.ReadReply(new byte[1 << 20], 1 << 20);
        Assert.Equal((9UL, NbdError.None), (cookie, error));
    }

    [Theory]
    [InlineData("0")]   // always copy
    [InlineData("4k")]  // splice nearly everything
    public unsafe void ServeTakesTheSpliceThreshold(string size)
    {
        string ns = _scratch.NewPath("cli");
        var expected = new byte[1 << 20];
        new Random(5).NextBytes(expected);
        using (var dev = new PmemDevice(PmemNamespace.Create(ns, new NamespaceCreateOptions { Size = 4 << 20 })))
            expected.CopyTo(new Span<byte>(dev.Namespace.DataAddress, expected.Length));
        string dir = Directory.CreateTempSubdirectory("pfnblock-splice-").FullName;
        try
        {
            string sock = Path.Combine(dir, "nbd.sock");
            using ServeProcess server = ServeProcess.Start("--export", $"ns=pmem:{ns}", "--listen", $"unix:{sock}", "--splice-reads", size);
            using NbdRawClient c = NbdRawClient.Connect(sock);
            c.Negotiate("ns");
            c.Request(NbdCommand.Read, 0, 1, 0, 1 << 20);
            var got = new byte[1 << 20];
            (ulong cookie, NbdError error, _, _) = c.ReadReply(got, got.Length);
            Assert.Equal((1UL, NbdError.None), (cookie, error));
            Assert.True(got.AsSpan().SequenceEqual(expected));
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [Fact]
    public void ANegativeSpliceThresholdIsAUsageError()
    {
        (int exit, _, string stderr) = ChildProcess.Run(ChildProcess.CliDll,
            ["serve", "--export", "r=ram:16M", "--listen", "tcp:127.0.0.1:0", "--splice-reads", "-1"]);
        Assert.Equal(2, exit);
        Assert.StartsWith("pfnblock: error: invalid size '-1'", stderr.Trim(), StringComparison.Ordinal);
    }
}
