using PfnBlock.Devices.Pmem;
using PfnBlock.Exports.Nbd;
using PfnBlock.Memory;
using PfnBlock.Namespaces;

namespace PfnBlock.Tests.Nbd;

/// <summary>
/// NBD read replies are sent straight from the namespace's frames, pinned through the region's
/// pin seam (whatever descriptor map keeps the pins) while they wait to leave: a trim of the same
/// range from another connection waits, so the reply carries the data as it was, never zeros.
/// </summary>
public sealed class NbdPinTests : IDisposable
{
    private const int ReadBytes = 4 << 20;
    private readonly Scratch _scratch = new();
    public void Dispose() => _scratch.Dispose();

    public static TheoryData<DescriptorMapKind> Kinds => [.. DescriptorMaps.All];

    [Theory]
    [MemberData(nameof(Kinds))]
    public void ATrimWaitsForTheReplySentFromTheFramesItWouldZero(DescriptorMapKind kind) => TrimBehindAnUnreadReply(kind, 0);

    /// <summary>The same with the reply spliced (the socket holds references to the frames themselves until the client reads them).</summary>
    [Theory]
    [MemberData(nameof(Kinds))]
    public void ATrimWaitsForTheSplicedReplyFromTheFramesItWouldZero(DescriptorMapKind kind) => TrimBehindAnUnreadReply(kind, 64 << 10);

    private unsafe void TrimBehindAnUnreadReply(DescriptorMapKind kind, int spliceBytes)
    {
        var dev = new PmemDevice(PmemNamespace.Create(_scratch.NewPath(DescriptorMaps.Name(kind)),
            new NamespaceCreateOptions { Size = 6 << 20, Align = 4096, MapKind = kind }, new PhysicalAddressSpace()));
        var expected = new byte[ReadBytes];
        new Random((int)kind).NextBytes(expected);
        expected.AsSpan().Replace((byte)0, (byte)1); // a zeroed byte must stand out
        expected.CopyTo(new Span<byte>(dev.Namespace.DataAddress, ReadBytes));
        // A small send buffer: a 4 MiB reply cannot leave until the client reads it.
        using var server = new NbdTestServer(new NbdServerOptions { SocketBufferBytes = 64 << 10, SpliceReadBytes = spliceBytes }, ("ns", dev, false));
        using NbdRawClient reader = NbdRawClient.Connect(server.SocketPath);
        using NbdRawClient trimmer = NbdRawClient.Connect(server.SocketPath);
        reader.Negotiate("ns");
        trimmer.Negotiate("ns");

        // The reader asks for 4 MiB and does not read: the reply cannot leave, its frames stay pinned.
        reader.Request(NbdCommand.Read, 0, 1, 0, ReadBytes);
        Assert.True(SpinWait.SpinUntil(() => dev.Pins.IsPinned(0, 1), TimeSpan.FromSeconds(30)), "the reply was not sent from pinned frames");
        trimmer.Request(NbdCommand.Trim, 0, 2, 0, ReadBytes);

        var got = new byte[ReadBytes];
        (ulong cookie, NbdError error, _, _) = reader.ReadReply(got, ReadBytes);
        Assert.Equal((1UL, NbdError.None), (cookie, error));
        Assert.True(got.AsSpan().SequenceEqual(expected), "the trim zeroed frames under a reply still being sent");
        (cookie, error, _, _) = trimmer.ReadReply([]);
        Assert.Equal((2UL, NbdError.None), (cookie, error));

        // Now the trim has run, and the pins are gone.
        trimmer.Request(NbdCommand.Read, 0, 3, 0, 4096);
        (_, error, _, _) = trimmer.ReadReply(got, 4096);
        Assert.Equal(NbdError.None, error);
        Assert.True(got.AsSpan(0, 4096).IndexOfAnyExcept((byte)0) < 0);
        // The last read's own pins go once its reply has left, which the client may see first.
        Assert.True(SpinWait.SpinUntil(() => !dev.Pins.AnyPinned, TimeSpan.FromSeconds(10)), "frames still pinned after every reply left");
    }
}
