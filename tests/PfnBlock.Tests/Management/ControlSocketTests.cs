using System.Net.Sockets;
using System.Text;
using System.Text.Json.Nodes;
using PfnBlock.Interop;
using PfnBlock.Management.Control;
using PfnBlock.Tests.Nbd;

namespace PfnBlock.Tests.Management;

/// <summary>
/// The control socket: newline-delimited JSON over a Unix socket, commands from a registry, bad
/// input answered with an error while the connection keeps serving, owner-only permissions and
/// the NBD listener's socket-file hygiene.
/// </summary>
public sealed class ControlSocketTests
{
    /// <summary>A raw client: writes bytes, reads reply lines.</summary>
    private sealed class RawClient : IDisposable
    {
        private readonly Socket _socket = new(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        private readonly List<byte> _pending = [];

        public RawClient(string path)
        {
            _socket.ReceiveTimeout = 30_000;
            _socket.Connect(new UnixDomainSocketEndPoint(path));
        }

        public void Send(string text) => _socket.Send(Encoding.UTF8.GetBytes(text));
        public void Send(byte[] data) => _socket.Send(data);

        public JsonObject Reply()
        {
            byte[] buffer = new byte[65536];
            while (true)
            {
                int nl = _pending.IndexOf((byte)'\n');
                if (nl >= 0)
                {
                    string line = Encoding.UTF8.GetString([.. _pending.Take(nl)]);
                    _pending.RemoveRange(0, nl + 1);
                    return (JsonObject)JsonNode.Parse(line)!;
                }
                int n = _socket.Receive(buffer);
                if (n == 0) throw new Xunit.Sdk.XunitException("the control socket closed the connection");
                _pending.AddRange(buffer.AsSpan(0, n));
            }
        }

        public JsonObject Call(string line)
        {
            Send(line + "\n");
            return Reply();
        }

        public void Dispose() => _socket.Dispose();
    }

    private static string Error(JsonObject reply)
    {
        Assert.False(reply["ok"]!.GetValue<bool>(), reply.ToJsonString());
        return reply["error"]!.GetValue<string>();
    }

    private static JsonNode? Result(JsonObject reply)
    {
        Assert.True(reply["ok"]!.GetValue<bool>(), reply.ToJsonString());
        return reply["result"];
    }

    [Fact]
    public void StatsDevicesAndExportsDescribeTheServer()
    {
        using var server = new ManagedTestServer();
        string path = Path.Combine(server.Directory, "control.sock");
        using var control = new ControlServer(server.Context);
        control.Start(path);
        Tool.Run("nbdcopy", Tool.RandomFile(server.Directory, 4 << 20, seed: 3), server.Uri("plain"));

        using var client = new RawClient(path);
        var devices = (JsonArray)Result(client.Call("{\"command\":\"devices\"}"))!;
        Assert.Equal([server.TableLabel, ManagedTestServer.TableLine0, ManagedTestServer.TableLine1, ManagedTestServer.Plain],
            devices.Select(d => d!["device"]!.GetValue<string>()));
        JsonNode table = devices[0]!;
        Assert.Equal([$"0 32768 linear {ManagedTestServer.TableLine0} 0", $"32768 32768 linear {ManagedTestServer.TableLine1} 0"],
            table["table"]!.AsArray().Select(l => l!.GetValue<string>()));
        Assert.Equal(["stack"], table["exports"]!.AsArray().Select(e => e!.GetValue<string>()));
        Assert.Equal([ManagedTestServer.TableLine0, ManagedTestServer.TableLine1], table["lower"]!.AsArray().Select(e => e!.GetValue<string>()));
        Assert.Contains("mapped device", table["description"]!.GetValue<string>());
        Assert.Equal(32L << 20, table["size_bytes"]!.GetValue<long>());
        Assert.Null(devices[3]!["table"]);

        JsonObject exports = Result(client.Call("{\"command\":\"exports\",\"args\":[]}"))!.AsObject();
        Assert.Equal(["stack", "plain"], exports["exports"]!.AsArray().Select(e => e!["name"]!.GetValue<string>()));
        Assert.Equal(ManagedTestServer.Plain, exports["exports"]![1]!["device"]!.GetValue<string>());
        Assert.Equal(["unix:" + server.SocketPath], exports["listening"]!.AsArray().Select(e => e!.GetValue<string>()));

        JsonObject stats = Result(client.Call("{\"command\":\"stats\",\"id\":7}"))!.AsObject();
        JsonObject plain = stats["devices"]!.AsArray().Single(d => d!["device"]!.GetValue<string>() == ManagedTestServer.Plain)!.AsObject();
        Assert.Equal((4 << 20) / 512, plain["write"]!["sectors"]!.GetValue<long>());
        Assert.True(plain["write"]!["ios"]!.GetValue<long>() > 0);
        Assert.True(plain["write"]!["time_ns"]!.GetValue<long>() > 0);
        JsonObject export = stats["exports"]!.AsArray().Single(e => e!["export"]!.GetValue<string>() == "plain")!.AsObject();
        Assert.Equal(4L << 20, export["bytes_written"]!.GetValue<long>());
        Assert.True(export["requests"]!["write"]!.GetValue<long>() > 0);
        Assert.True(stats["uptime_ns"]!.GetValue<long>() > 0);
        Assert.Equal(0, stats["nbd"]!["connections_refused"]!.GetValue<long>());

        JsonArray help = Result(client.Call("{\"command\":\"help\"}"))!.AsArray();
        Assert.Superset(new HashSet<string> { "stats", "devices", "exports", "help" }, help.Select(h => h!["command"]!.GetValue<string>()).ToHashSet());
    }

    [Fact]
    public void BadRequestsGetAnErrorReplyAndTheConnectionKeepsServing()
    {
        using var server = new ManagedTestServer();
        string path = Path.Combine(server.Directory, "control.sock");
        var commands = ControlCommandRegistry.CreateDefault();
        commands.Register(new ControlCommand("explode", "", "a handler with a bug", _ => throw new InvalidOperationException("boom")));
        commands.Register(new ControlCommand("echo", "ARGS…", "its arguments back", r => new JsonArray([.. r.Args.Select(a => (JsonNode?)a)])));
        var logged = new List<string>();
        using var control = new ControlServer(server.Context, commands, m => { lock (logged) logged.Add(m); });
        control.Start(path);
        using var client = new RawClient(path);

        Assert.StartsWith("malformed JSON", Error(client.Call("{\"command\": \"stats\"")));
        Assert.StartsWith("malformed JSON", Error(client.Call("\u00ff\u00fe not even text")));
        Assert.StartsWith("a request must be a JSON object", Error(client.Call("[\"stats\"]")));
        Assert.Contains("no \"command\"", Error(client.Call("{\"args\":[]}")));
        Assert.Contains("no \"command\"", Error(client.Call("{\"command\":3}")));
        Assert.Contains("\"args\" must be an array", Error(client.Call("{\"command\":\"echo\",\"args\":\"x\"}")));
        Assert.Contains("\"args\" must hold strings", Error(client.Call("{\"command\":\"echo\",\"args\":[{}]}")));
        JsonObject unknown = client.Call("{\"command\":\"nosuch\",\"id\":\"q1\"}");
        Assert.StartsWith("unknown command 'nosuch' (known: devices, echo, explode, exports, help, md, stats", Error(unknown));
        Assert.Equal("q1", unknown["id"]!.GetValue<string>());
        Assert.Equal("stats: expected 0 arguments, got 1", Error(client.Call("{\"command\":\"stats\",\"args\":[\"x\"]}")));
        Assert.Equal("explode: internal error: boom", Error(client.Call("{\"command\":\"explode\"}")));
        Assert.Contains(logged, m => m.Contains("explode failed") && m.Contains("boom"));
        Assert.Equal(["a b", "3", "true"], Result(client.Call("{\"command\":\"echo\",\"args\":[\"a b\",3,true]}"))!.AsArray().Select(a => a!.GetValue<string>()));

        // An oversized line: one error for it, then the connection goes on, also for a request sent in the same write.
        byte[] huge = Encoding.UTF8.GetBytes("{\"command\":\"echo\",\"args\":[\"" + new string('x', ControlProtocol.MaxLineBytes * 3) + "\"]}\n{\"command\":\"echo\",\"args\":[\"after\"]}\n");
        client.Send(huge);
        Assert.Equal($"request line longer than {ControlProtocol.MaxLineBytes} bytes", Error(client.Reply()));
        Assert.Equal("after", Result(client.Reply())!.AsArray()[0]!.GetValue<string>());
        // A line of exactly the limit is still a request.
        string exact = "{\"command\":\"echo\",\"args\":[\"" + new string('y', ControlProtocol.MaxLineBytes - 30) + "\"]}";
        Assert.Equal(ControlProtocol.MaxLineBytes, Encoding.UTF8.GetByteCount(exact));
        Assert.Equal(ControlProtocol.MaxLineBytes - 30, Result(client.Call(exact))!.AsArray()[0]!.GetValue<string>().Length);

        // Pipelined requests are answered in order; blank lines are skipped.
        client.Send("{\"command\":\"echo\",\"args\":[\"1\"],\"id\":1}\n\n{\"command\":\"echo\",\"args\":[\"2\"],\"id\":2}\n");
        Assert.Equal(1, client.Reply()["id"]!.GetValue<int>());
        Assert.Equal(2, client.Reply()["id"]!.GetValue<int>());
        Assert.NotNull(Result(client.Call("{\"command\":\"stats\"}"))!["devices"]);
    }

    [Fact]
    public void TheSocketIsOwnerOnlyALiveOneIsInUseAStaleOneIsReplacedAndOnlyOursIsRemoved()
    {
        using var server = new ManagedTestServer();
        string path = Path.Combine(server.Directory, "control.sock");
        var first = new ControlServer(server.Context);
        first.Start(path);
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(path));

        using (var second = new ControlServer(server.Context))
        {
            IOException e = Assert.Throws<IOException>(() => second.Start(path));
            Assert.Equal($"cannot listen on unix:{path}: in use by another server (it holds '{path}.lock')", e.Message);
        }
        Assert.True(File.Exists(path), "the refused control server removed the first one's socket");
        using (ControlClient c = ControlClient.Connect(path)) Assert.NotNull(c.Result("stats"));

        // A CLI server told to use the live socket fails with one line and exit 1.
        (int exit, _, string stderr) = ChildProcess.Run(ChildProcess.CliDll,
            ["serve", "--export", "r=ram:16M", "--listen", $"unix:{server.Directory}/other.sock", "--control", path]);
        Assert.Equal(1, exit);
        Assert.Equal($"pfnblock: error: cannot listen on unix:{path}: in use by another server (it holds '{path}.lock')", stderr.Trim());
        Assert.True(File.Exists(path));
        Assert.True(File.Exists(path + ControlServer.LockSuffix));

        // The first one stops: its socket and lock file go. A socket left by a server that died
        // (and the lock file it held, which nobody holds now) is taken over.
        first.Dispose();
        Assert.False(File.Exists(path));
        Assert.False(File.Exists(path + ControlServer.LockSuffix));
        BindAndClose(path);
        File.WriteAllText(path + ControlServer.LockSuffix, "");
        Assert.True(File.Exists(path), "no stale socket to take over");
        var third = new ControlServer(server.Context);
        third.Start(path);
        using (ControlClient c = ControlClient.Connect(path)) Assert.NotNull(c.Result("devices"));
        // Another server's socket replaced ours meanwhile: not ours to remove at exit.
        File.Delete(path);
        BindAndClose(path);
        third.Dispose();
        Assert.True(File.Exists(path), "the control server removed a socket file that was not its own");
    }

    /// <summary>
    /// Two servers start at the same moment on a stale socket, again and again: exactly one gets
    /// it, the other is refused, and the path always reaches the winner. Without the lock file both
    /// could find the socket stale, and the later one unlink the earlier one's fresh socket.
    /// </summary>
    [Fact]
    public void ServersStartingAtOnceOnAStaleSocketNeverStealTheWinnersSocket()
    {
        using var server = new ManagedTestServer();
        string path = Path.Combine(server.Directory, "race.sock");
        for (int round = 0; round < 20; round++)
        {
            BindAndClose(path);
            var contenders = new[] { new ControlServer(server.Context), new ControlServer(server.Context) };
            var errors = new Exception?[2];
            using var go = new Barrier(2);
            Thread[] threads = [.. Enumerable.Range(0, 2).Select(i => new Thread(() =>
            {
                go.SignalAndWait();
                try { contenders[i].Start(path); }
                catch (IOException e) { errors[i] = e; }
            }))];
            foreach (Thread t in threads) t.Start();
            foreach (Thread t in threads) t.Join();
            int winner = Array.FindIndex(errors, e => e is null);
            Assert.True(winner >= 0 && errors[1 - winner] is not null, $"round {round}: {errors[0]?.Message} / {errors[1]?.Message}");
            Assert.Contains("in use by another server", errors[1 - winner]!.Message);
            using (ControlClient c = ControlClient.Connect(path)) Assert.NotNull(c.Result("help"));
            foreach (ControlServer c in contenders) c.Dispose();
            Assert.False(File.Exists(path), $"round {round}: the winner's socket was not removed at exit");
        }
    }

    /// <summary>Leaves a socket file nobody listens on, as a server that died does (a .NET socket would unlink it on dispose).</summary>
    private static unsafe void BindAndClose(string path)
    {
        int fd = Libc.socket(Libc.AF_UNIX, Libc.SOCK_STREAM | Libc.SOCK_CLOEXEC, 0);
        Assert.True(fd >= 0);
        byte* sun = stackalloc byte[110];
        new Span<byte>(sun, 110).Clear();
        *(ushort*)sun = Libc.AF_UNIX;
        int n = Encoding.UTF8.GetBytes(path, new Span<byte>(sun + 2, 107));
        int rc = Libc.bind(fd, sun, (uint)(2 + n + 1));
        _ = Libc.close(fd);
        Assert.Equal(0, rc);
    }

    [Fact]
    public void TheRegistryFindsEveryCommandAndRefusesDuplicates()
    {
        ControlCommandRegistry registry = ControlCommandRegistry.CreateDefault();
        Assert.Equal(["devices", "exports", "help", "stats"], registry.All.Select(c => c.Name).Where(n => n is "devices" or "exports" or "help" or "stats"));
        Assert.Throws<ArgumentException>(() => registry.Register(new ControlCommand("stats", "", "again", _ => null)));
        Assert.Throws<ArgumentException>(() => registry.Register(new ControlCommand("two words", "", "bad name", _ => null)));
        Assert.Null(registry.Find("nosuch"));
    }
}
