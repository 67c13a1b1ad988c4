using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using PfnBlock.Exports.Nbd;

namespace PfnBlock.Tests.Nbd;

/// <summary>Connections that never finish their handshake cannot lock real clients out (issue 14, finding 3).</summary>
public sealed class NbdAdmissionTests
{
    [Fact]
    public void AHandshakeThatStallsIsDroppedAtTheDeadline()
    {
        using var server = new NbdTestServer(new NbdServerOptions { HandshakeTimeout = TimeSpan.FromSeconds(1) }, ("disk", NbdTestServer.Ram(1 << 20), false));
        using NbdRawClient stalled = NbdRawClient.Connect(server.SocketPath, timeoutMs: 10000);
        var clock = Stopwatch.StartNew();
        stalled.Greet();
        // A client trickling valid bytes keeps each step short; the deadline covers the whole handshake.
        stalled.Send(new byte[8]);
        Thread.Sleep(400);
        stalled.Send(new byte[4]);
        Assert.True(stalled.ServerClosed(), "the server kept a stalled handshake past its deadline");
        Assert.InRange(clock.Elapsed.TotalSeconds, 0.9, 4);
        // The slot is given back once the connection's thread has ended.
        SpinWait.SpinUntil(() => server.Server.ActiveConnections == 0, TimeSpan.FromSeconds(5));
        Assert.Equal(0, server.Server.ActiveConnections);
    }

    [Fact]
    public void ARealClientGetsThroughWhileAnAttackerHoldsEverySlotAndReconnects()
    {
        using ServeProcess server = ServeProcess.Start("--export", "disk=ram:16M", "--listen", "tcp:127.0.0.1:0");
        var target = new IPEndPoint(IPAddress.Loopback, server.TcpPort);
        using var attacker = new Attacker(target, connections: 80, threads: 2);
        attacker.WaitUntilConnected(80, TimeSpan.FromSeconds(20));
        for (int i = 0; i < 3; i++)
        {
            var clock = Stopwatch.StartNew();
            string info = Tool.Run("nbdinfo", $"nbd://127.0.0.1:{server.TcpPort}/disk");
            Assert.Contains("export-size: 16777216", info);
            Assert.True(clock.Elapsed < TimeSpan.FromSeconds(5), $"nbdinfo took {clock.Elapsed.TotalSeconds:0.0} s");
        }
        Assert.True(attacker.Reconnects > 0, "the attacker was never evicted, so the test proved nothing");
        Assert.False(server.Process.HasExited);
        Assert.Contains("evicted the oldest connection still in handshake", server.Error);
    }

    [Fact]
    public void APerSourceLimitEvictsThatSourcesHandshakesButNeverItsServedConnections()
    {
        using var server = new NbdServer(Registry(), new NbdServerOptions { MaxConnectionsPerSource = 2 });
        var ep = (IPEndPoint)server.Start([NbdListenAddress.Parse("tcp:127.0.0.1:0")])[0];
        using Socket idle = ConnectTcp(ep);
        ReadGreeting(idle);
        using NbdRawClient served = NbdRawClient.ConnectTcp(ep);
        served.Negotiate("disk");
        // A third connection from 127.0.0.1 takes the place of the idle handshake.
        using NbdRawClient third = NbdRawClient.ConnectTcp(ep);
        third.Negotiate("disk");
        Assert.Equal(0, idle.Receive(new byte[1]));
        // With both served, a further one is refused, and the served ones carry on.
        using Socket refused = ConnectTcp(ep);
        Assert.Equal(0, refused.Receive(new byte[32]));
        byte[] buf = new byte[4096];
        served.Request(NbdCommand.Read, 0, 1, 0, 4096);
        Assert.Equal(NbdError.None, served.ReadReply(buf, 4096).Error);
        third.Request(NbdCommand.Read, 0, 2, 0, 4096);
        Assert.Equal(NbdError.None, third.ReadReply(buf, 4096).Error);
    }

    [Fact]
    public void ConnectionsPastTheirHandshakeAreNeverEvicted()
    {
        using var server = new NbdServer(Registry(), new NbdServerOptions { MaxConnections = 2 });
        var ep = (IPEndPoint)server.Start([NbdListenAddress.Parse("tcp:127.0.0.1:0")])[0];
        using NbdRawClient a = NbdRawClient.ConnectTcp(ep);
        a.Negotiate("disk");
        using NbdRawClient b = NbdRawClient.ConnectTcp(ep);
        b.Negotiate("disk");
        using Socket refused = ConnectTcp(ep);
        Assert.Equal(0, refused.Receive(new byte[32]));
        byte[] buf = new byte[512];
        a.Request(NbdCommand.Read, 0, 1, 0, 512);
        Assert.Equal(NbdError.None, a.ReadReply(buf, 512).Error);
        b.Request(NbdCommand.Read, 0, 1, 0, 512);
        Assert.Equal(NbdError.None, b.ReadReply(buf, 512).Error);
    }

    private static NbdExportRegistry Registry()
    {
        var r = new NbdExportRegistry();
        r.Add(new NbdExport("disk", NbdTestServer.Ram(1 << 20)));
        return r;
    }

    private static Socket ConnectTcp(EndPoint ep)
    {
        var s = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { ReceiveTimeout = 10000 };
        s.Connect(ep);
        return s;
    }

    private static void ReadGreeting(Socket s)
    {
        byte[] g = new byte[18];
        for (int got = 0; got < g.Length;)
        {
            int n = s.Receive(g, got, g.Length - got, SocketFlags.None);
            Assert.True(n > 0, "closed before the greeting");
            got += n;
        }
    }

    /// <summary>Holds <c>connections</c> TCP connections that never negotiate, reopening each one the server closes.</summary>
    private sealed class Attacker : IDisposable
    {
        private readonly EndPoint _target;
        private readonly Thread[] _threads;
        private volatile bool _stop;
        private int _connected;
        private int _reconnects;

        public Attacker(EndPoint target, int connections, int threads)
        {
            _target = target;
            _threads = new Thread[threads];
            for (int t = 0; t < threads; t++)
            {
                int share = connections / threads;
                _threads[t] = new Thread(() => Run(share)) { IsBackground = true, Name = "attacker" };
                _threads[t].Start();
            }
        }

        public int Reconnects => Volatile.Read(ref _reconnects);

        public void WaitUntilConnected(int count, TimeSpan timeout)
        {
            var clock = Stopwatch.StartNew();
            while (Volatile.Read(ref _connected) < count)
            {
                Assert.True(clock.Elapsed < timeout, $"the attacker opened only {_connected} connections");
                Thread.Sleep(10);
            }
        }

        private void Run(int count)
        {
            var sockets = new List<Socket>();
            byte[] sink = new byte[256];
            try
            {
                for (int i = 0; i < count && !_stop; i++) { sockets.Add(Open()); Interlocked.Increment(ref _connected); }
                while (!_stop)
                {
                    var readable = new List<Socket>(sockets);
                    Socket.Select(readable, null, null, 10_000);
                    foreach (Socket s in readable)
                    {
                        int n;
                        try { n = s.Receive(sink); }
                        catch (SocketException) { n = 0; }
                        if (n > 0) continue; // the greeting: read and ignored, like an idle client
                        sockets[sockets.IndexOf(s)] = Open();
                        s.Dispose();
                        Interlocked.Increment(ref _reconnects);
                    }
                }
            }
            finally
            {
                foreach (Socket s in sockets) s.Dispose();
            }
        }

        private Socket Open()
        {
            var s = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
            s.Connect(_target);
            return s;
        }

        public void Dispose()
        {
            _stop = true;
            foreach (Thread t in _threads) t.Join();
        }
    }
}
