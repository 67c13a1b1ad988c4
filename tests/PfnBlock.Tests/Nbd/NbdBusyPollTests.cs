using PfnBlock.Block;
using PfnBlock.Exports.Nbd;

namespace PfnBlock.Tests.Nbd;

/// <summary>
/// <see cref="NbdServerOptions.BusyPoll"/>: a connection that polls its socket after running out of
/// requests serves a ping-pong client from its polling loop, still serves requests that come after
/// the poll window (from the blocking receive), sees a client that leaves while it polls, and with
/// polling off never counts a polled receive.
/// </summary>
public sealed class NbdBusyPollTests
{
    private static (NbdTestServer Server, NbdRawClient Client) Start(TimeSpan busyPoll)
    {
        (IBlockDevice dev, string path) = NbdTestServer.Pmem(4 << 20);
        var server = new NbdTestServer(new NbdServerOptions { BusyPoll = busyPoll }, ("disk", dev, false));
        server.DeleteOnDispose(path);
        NbdRawClient client = NbdRawClient.Connect(server.SocketPath);
        client.Negotiate("disk");
        return (server, client);
    }

    /// <summary>Writes block i, reads it back and checks it, one request at a time (queue depth 1), pausing <paramref name="pauseMs"/> before each request.</summary>
    private static void PingPong(NbdRawClient c, int from, int count, int pauseMs = 0)
    {
        byte[] data = new byte[4096], back = new byte[4096];
        for (int i = from; i < from + count; i++)
        {
            Array.Fill(data, (byte)i);
            if (pauseMs > 0) Thread.Sleep(pauseMs);
            c.Request(NbdCommand.Write, 0, (ulong)i, (ulong)i * 4096, 4096, data);
            Assert.Equal(NbdError.None, c.ReadReply([]).Error);
            if (pauseMs > 0) Thread.Sleep(pauseMs);
            c.Request(NbdCommand.Read, 0, (ulong)i, (ulong)i * 4096, 4096);
            Assert.Equal(NbdError.None, c.ReadReply(back, 4096).Error);
            Assert.Equal(data, back);
        }
    }

    [Fact]
    public void APingPongClientIsServedFromThePollingLoop()
    {
        // A window far longer than the client's gap between a reply and its next request, so that
        // (almost) every request after the first is found by a polling receive, whatever the load.
        (NbdTestServer server, NbdRawClient c) = Start(TimeSpan.FromMilliseconds(300));
        using (server)
        using (c)
        {
            PingPong(c, 0, 100);
            long polled = server.Registry.Find("disk")!.Stats.Snapshot().PolledReceives;
            // Counted per receive: a request may take more than one (a write's payload after its header).
            Assert.True(polled >= 100, $"only {polled} receives of 200 requests were found by polling");
        }
    }

    [Fact]
    public void RequestsAfterThePollWindowAreServedByTheBlockingReceive()
    {
        // 2 ms of polling, and a 100 ms pause before every request: each finds the thread asleep in
        // the blocking receive, so no receive is counted as polled.
        (NbdTestServer server, NbdRawClient c) = Start(TimeSpan.FromMilliseconds(2));
        using (server)
        using (c)
        {
            PingPong(c, 0, 5, pauseMs: 100);
            Assert.Equal(0, server.Registry.Find("disk")!.Stats.Snapshot().PolledReceives);
        }
    }

    [Fact]
    public void AClientThatLeavesWhileTheConnectionPollsIsSeen()
    {
        (NbdTestServer server, NbdRawClient c) = Start(TimeSpan.FromMilliseconds(500));
        using (server)
        {
            PingPong(c, 0, 3);
            c.Dispose(); // the connection's thread is polling now
            NbdExportStats stats = server.Registry.Find("disk")!.Stats;
            var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(10);
            while (stats.Snapshot().ConnectionsOpen > 0 && DateTime.UtcNow < deadline) Thread.Sleep(5);
            Assert.Equal(0, stats.Snapshot().ConnectionsOpen);
        }
    }

    [Fact]
    public void WithoutBusyPollNothingIsPolled()
    {
        (NbdTestServer server, NbdRawClient c) = Start(TimeSpan.Zero);
        using (server)
        using (c)
        {
            PingPong(c, 0, 20);
            Assert.Equal(0, server.Registry.Find("disk")!.Stats.Snapshot().PolledReceives);
        }
    }

    [Theory]
    [InlineData(-1)]
    [InlineData(1000)] // as long as the default idle trim delay (1 s)
    public void ABusyPollThatIsNegativeOrNotShorterThanTheIdleTrimDelayIsRefused(int ms)
    {
        var exports = new NbdExportRegistry();
        using IBlockDevice dev = NbdTestServer.Ram(1 << 20);
        exports.Add(new NbdExport("disk", dev, false));
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => new NbdServer(exports, new NbdServerOptions { BusyPoll = TimeSpan.FromMilliseconds(ms) }));
        Assert.Contains("busy-poll", e.Message);
    }
}
