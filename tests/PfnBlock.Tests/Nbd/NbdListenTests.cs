using System.Net;
using System.Net.Sockets;
using PfnBlock.Block;
using PfnBlock.Exports.Nbd;

namespace PfnBlock.Tests.Nbd;

/// <summary>An address another server listens on is refused, never shared or taken over (issue 14, findings 1 and 2).</summary>
public sealed class NbdListenTests
{
    [Fact]
    public void ASecondServeOnABusyTcpPortFailsAddressInUse()
    {
        using ServeProcess first = ServeProcess.Start("--export", "first=ram:16M", "--listen", "tcp:127.0.0.1:0");
        int port = first.TcpPort;
        using ServeProcess second = ServeProcess.Launch("--export", "second=ram:16M", "--listen", $"tcp:127.0.0.1:{port}");
        Assert.True(second.WaitForExit(TimeSpan.FromSeconds(30)), $"the second server is running on port {port} too:\n{second.Output}");
        Assert.Equal(1, second.Process.ExitCode);
        Assert.Contains($"pfnblock: error: cannot listen on tcp:127.0.0.1:{port}: address in use", second.Error);
        // Every connection still reaches the first server.
        for (int i = 0; i < 4; i++)
            Assert.Contains("export=\"first\"", Tool.Run("nbdinfo", "--list", $"nbd://127.0.0.1:{port}"));
    }

    [Fact]
    public void ListeningSocketsSetReuseAddressButNotReusePort()
    {
        using var server = new NbdServer(Registry());
        var ep = (IPEndPoint)server.Start([NbdListenAddress.Parse("tcp:127.0.0.1:0")])[0];
        // A would-be second server that asks for SO_REUSEPORT must not get in either.
        using var intruder = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        intruder.SetRawSocketOption(1, 15 /* SO_REUSEPORT */, BitConverter.GetBytes(1));
        SocketException e = Assert.Throws<SocketException>(() => intruder.Bind(ep));
        Assert.Equal(SocketError.AddressAlreadyInUse, e.SocketErrorCode);
        using var second = new NbdServer(Registry());
        IOException io = Assert.Throws<IOException>(() => second.Start([NbdListenAddress.Parse($"tcp:127.0.0.1:{ep.Port}")]));
        Assert.Contains("address in use", io.Message);
    }

    [Fact]
    public void ALiveUnixSocketIsRefusedAndKeepsWorking()
    {
        using var first = new NbdTestServer(("disk", NbdTestServer.Ram(16 << 20), false));
        using var second = new NbdServer(Registry());
        IOException e = Assert.Throws<IOException>(() => second.Start([NbdListenAddress.Parse("unix:" + first.SocketPath)]));
        Assert.Contains("in use by another server", e.Message);
        second.Stop();
        Assert.True(File.Exists(first.SocketPath), "the refused server removed the first server's socket");
        using NbdRawClient c = NbdRawClient.Connect(first.SocketPath);
        c.Negotiate("disk");
        Assert.Equal((ulong)(16 << 20), c.ExportSize);
    }

    [Fact]
    public void ASecondServeOnALiveUnixSocketFailsInUse()
    {
        string dir = Directory.CreateTempSubdirectory("pfnblock-listen-").FullName;
        try
        {
            string sock = Path.Combine(dir, "nbd.sock");
            using ServeProcess first = ServeProcess.Start("--export", "first=ram:16M", "--listen", $"unix:{sock}");
            using ServeProcess second = ServeProcess.Launch("--export", "second=ram:16M", "--listen", $"unix:{sock}");
            Assert.True(second.WaitForExit(TimeSpan.FromSeconds(30)), "the second server took over the socket");
            Assert.Equal(1, second.Process.ExitCode);
            Assert.Contains($"pfnblock: error: cannot listen on unix:{sock}: in use by another server", second.Error);
            Assert.Contains("export=\"first\"", Tool.Run("nbdinfo", "--list", $"nbd+unix:///?socket={sock}"));
            first.Terminate();
            Assert.False(File.Exists(sock), "a clean stop leaves its socket file behind");
        }
        finally { Directory.Delete(dir, recursive: true); }
    }

    [Fact]
    public void AStaleSocketIsReplacedAndAnythingElseIsRefused()
    {
        string dir = Directory.CreateTempSubdirectory("pfnblock-listen-").FullName;
        try
        {
            // Stale: bound once, nobody listening any more.
            string stale = Path.Combine(dir, "stale.sock");
            using (var s = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified)) s.Bind(new UnixDomainSocketEndPoint(stale));
            using (var server = new NbdServer(Registry()))
            {
                server.Start([NbdListenAddress.Parse("unix:" + stale)]);
                using NbdRawClient c = NbdRawClient.Connect(stale);
                c.Negotiate("disk");
            }
            Assert.False(File.Exists(stale));

            // A regular file, even an empty one, is not ours to delete.
            string file = Path.Combine(dir, "file");
            File.WriteAllBytes(file, []);
            using (var server = new NbdServer(Registry()))
                Assert.Contains("exists and is not a socket", Assert.Throws<IOException>(() => server.Start([NbdListenAddress.Parse("unix:" + file)])).Message);
            Assert.True(File.Exists(file));

            // A missing directory is named as such.
            string missing = Path.Combine(dir, "no-such-dir", "nbd.sock");
            using (var server = new NbdServer(Registry()))
                Assert.Contains($"directory '{Path.Combine(dir, "no-such-dir")}' does not exist",
                    Assert.Throws<IOException>(() => server.Start([NbdListenAddress.Parse("unix:" + missing)])).Message);
        }
        finally { Directory.Delete(dir, recursive: true); }
    }

    [Fact]
    public void OnExitOnlyOurOwnSocketIsRemoved()
    {
        string dir = Directory.CreateTempSubdirectory("pfnblock-listen-").FullName;
        try
        {
            string sock = Path.Combine(dir, "nbd.sock");
            var server = new NbdServer(Registry());
            server.Start([NbdListenAddress.Parse("unix:" + sock)]);
            // Someone removes our socket and binds their own at the same path.
            File.Delete(sock);
            using var other = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
            other.Bind(new UnixDomainSocketEndPoint(sock));
            other.Listen();
            server.Stop();
            Assert.True(File.Exists(sock), "stopping removed another program's socket");
        }
        finally { Directory.Delete(dir, recursive: true); }
    }

    [Fact]
    public void AUnixSocketInAMissingDirectoryIsNamedByTheCli()
    {
        string missing = Path.Combine(Path.GetTempPath(), $"pfnblock-no-such-dir-{Guid.NewGuid():N}");
        (int exit, string stdout, string stderr) = ChildProcess.Run(ChildProcess.CliDll, ["serve", "--export", "r=ram:16M", "--listen", $"unix:{missing}/nbd.sock"]);
        Assert.Equal(1, exit);
        Assert.Equal($"pfnblock: error: cannot listen on unix:{missing}/nbd.sock: directory '{missing}' does not exist", stderr.Trim());
        Assert.DoesNotContain("serving", stdout);
    }

    private static NbdExportRegistry Registry()
    {
        var r = new NbdExportRegistry();
        IBlockDevice dev = NbdTestServer.Ram(1 << 20);
        r.Add(new NbdExport("disk", dev));
        return r;
    }
}
