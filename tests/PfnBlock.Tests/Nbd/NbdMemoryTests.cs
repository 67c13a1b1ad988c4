using System.Diagnostics;
using PfnBlock.Devices.DirectFile;
using PfnBlock.Exports.Nbd;
using PfnBlock.Namespaces;

namespace PfnBlock.Tests.Nbd;

/// <summary>All connection buffers share one memory budget and are given back when idle (issue 14, finding 7).</summary>
public sealed class NbdMemoryTests
{
    private const int Big = 32 << 20;
    private static readonly byte[] s_payload = MakePayload();
    private static readonly byte[] s_sink = new byte[Big];

    private static byte[] MakePayload()
    {
        byte[] p = new byte[Big];
        new Random(5).NextBytes(p);
        return p;
    }

    [Fact]
    public void ResidentMemoryStaysWithinTheBudgetUnderLoadAndComesBackWhenIdle()
    {
        using var scratch = new Scratch();
        // Exports whose data lives in shared file mappings (not anonymous memory): a raw namespace
        // (writes land in receive buffers, reads go straight from the mapping) and a sector one
        // (reads need data chunks). RssAnon is then the runtime plus connection buffers.
        string raw = scratch.NewNamespace(64 << 20);
        string sector = scratch.NewPath();
        PmemNamespace.Create(sector, new NamespaceCreateOptions { Size = 48 << 20, Mode = NamespaceMode.Sector, SectorSize = 4096 }).Dispose();
        string dir = Directory.CreateTempSubdirectory("pfnblock-memory-").FullName;
        try
        {
            string sock = Path.Combine(dir, "nbd.sock");
            using ServeProcess server = ServeProcess.Start("--export", $"raw=pmem:{raw}", "--export", $"sector=pmem:{sector}",
                "--listen", $"unix:{sock}", "--max-connections", "16", "--memory-budget", "80M");
            // Warm up (JIT, pools), then let the connection's buffers idle out.
            RunClient(sock, rounds: 1, writeBytes: 1 << 20, readBytes: 1 << 20, stayConnected: null);
            Thread.Sleep(2500);
            long idle = server.StatusBytes("RssAnon"), idleRss = server.StatusBytes("VmRSS");

            long peak = 0;
            using var stopSampling = new CancellationTokenSource();
            var sampler = new Thread(() =>
            {
                while (!stopSampling.IsCancellationRequested)
                {
                    try { peak = Math.Max(peak, server.StatusBytes("RssAnon")); } catch (IOException) { }
                    Thread.Sleep(5);
                }
            });
            sampler.Start();
            var idleClients = new List<NbdRawClient>();
            try
            {
                var clients = new Thread[8];
                var failures = new List<Exception>();
                for (int i = 0; i < clients.Length; i++)
                {
                    bool stay = i < 2; // two clients stay connected, idle, after their load
                    clients[i] = new Thread(() =>
                    {
                        try { RunClient(sock, rounds: 2, writeBytes: Big, readBytes: Big / 2, stayConnected: stay ? idleClients : null); }
                        catch (Exception e) { lock (failures) failures.Add(e); }
                    });
                    clients[i].Start();
                }
                foreach (Thread t in clients) t.Join();
                Assert.Empty(failures);
                stopSampling.Cancel();
                sampler.Join();

                Thread.Sleep(2500);
                long after = server.StatusBytes("RssAnon"), afterRss = server.StatusBytes("VmRSS");
                string figures = $"anonymous: idle {idle >> 20} MiB, peak {peak >> 20} MiB, after {after >> 20} MiB; resident: idle {idleRss >> 20} MiB, after {afterRss >> 20} MiB";
                // Without a budget 16 connections hold up to 8 x 33 + 8 x 32 MiB; with 80M, 80M at most (plus runtime slack).
                Assert.True(peak - idle <= (80L + 32) << 20, $"buffers grew past the 80M budget: {figures}");
                // Back near the idle figure, with two clients still connected (idle): the buffers' pages went back to the kernel.
                Assert.True(afterRss <= 2 * idleRss, $"memory was not given back: {figures}");
                Assert.True(after <= idle + (24L << 20), $"memory was not given back: {figures}");
            }
            finally
            {
                stopSampling.Cancel();
                sampler.Join();
                foreach (NbdRawClient c in idleClients) c.Dispose();
            }
        }
        finally { Directory.Delete(dir, recursive: true); }
    }

    /// <summary>Writes <paramref name="writeBytes"/> to the raw export and reads twice <paramref name="readBytes"/> from the sector export, pipelined, per round.</summary>
    private static void RunClient(string sock, int rounds, int writeBytes, int readBytes, List<NbdRawClient>? stayConnected)
    {
        NbdRawClient raw = NbdRawClient.Connect(sock, timeoutMs: 60_000);
        NbdRawClient sector = NbdRawClient.Connect(sock, timeoutMs: 60_000);
        try
        {
            raw.Negotiate("raw");
            sector.Negotiate("sector");
            for (int r = 0; r < rounds; r++)
            {
                raw.Request(NbdCommand.Write, 0, 1, 0, (uint)writeBytes, s_payload.AsSpan(0, writeBytes));
                sector.Request(NbdCommand.Read, 0, 2, 0, (uint)readBytes);
                sector.Request(NbdCommand.Read, 0, 3, (ulong)readBytes, (uint)readBytes);
                Assert.Equal(NbdError.None, raw.ReadReply([]).Error);
                Assert.Equal(NbdError.None, sector.ReadReply(s_sink, readBytes).Error);
                Assert.Equal(NbdError.None, sector.ReadReply(s_sink, readBytes).Error);
            }
        }
        finally
        {
            if (stayConnected is null)
            {
                raw.Dispose();
                sector.Dispose();
            }
            else lock (stayConnected) stayConnected.AddRange([raw, sector]);
        }
    }

    [Fact]
    public void LargeRequestsOnManyConnectionsShareASmallBudgetWithoutDeadlock()
    {
        // Four connections, each with 32 MiB requests in flight, on a budget that fits one such request:
        // every request completes, the budget is never exceeded, and it is all given back.
        using var scratch = new Scratch();
        string file = scratch.NewSizedFile(Scratch.Directory, 40 << 20);
        var options = new NbdServerOptions { MaxConnections = 4, MemoryBudget = (4 + 64) << 20, IdleTrimDelay = TimeSpan.FromMilliseconds(200) };
        using var server = new NbdTestServer(options,
            ("ram", NbdTestServer.Ram(40 << 20), false),
            ("file", FileDevice.Open(file, new FileDeviceOptions { Buffered = true }), false));
        var clock = Stopwatch.StartNew();
        var failures = new List<Exception>();
        var threads = new Thread[4];
        for (int i = 0; i < threads.Length; i++)
        {
            string export = i % 2 == 0 ? "ram" : "file";
            threads[i] = new Thread(() =>
            {
                try
                {
                    using NbdRawClient c = NbdRawClient.Connect(server.SocketPath, timeoutMs: 60_000);
                    c.Negotiate(export, structured: true); // replies of an asynchronous device come in any order
                    byte[] back = new byte[Big];
                    for (int round = 0; round < 2; round++)
                    {
                        // Reads last: this client does not read replies while it sends, so a large reply must not block its sends.
                        c.Request(NbdCommand.Write, 0, 1, 0, Big, s_payload);
                        c.Request(NbdCommand.Write, 0, 3, Big, 1 << 20, s_payload.AsSpan(0, 1 << 20));
                        c.Request(NbdCommand.Read, 0, 2, 0, Big);
                        for (int k = 0; k < 3; k++)
                        {
                            (ulong cookie, NbdError error, _, _) = c.ReadReply(back);
                            Assert.Equal(NbdError.None, error);
                            if (cookie == 2) Assert.True(back.AsSpan().SequenceEqual(s_payload), "read returned other data");
                        }
                    }
                }
                catch (Exception e) { lock (failures) failures.Add(e); }
            });
            threads[i].Start();
        }
        foreach (Thread t in threads) Assert.True(t.Join(TimeSpan.FromSeconds(90)), "a client is stuck: the budget deadlocked");
        Assert.Empty(failures);
        NbdMemoryBudget budget = server.Server.Budget;
        Assert.True(budget.Peak <= budget.Limit, $"budget exceeded: peak {budget.Peak}, limit {budget.Limit}");
        Assert.True(budget.Peak >= Big, "the test never needed the budget");
        SpinWait.SpinUntil(() => budget.Used == 0, TimeSpan.FromSeconds(10));
        Assert.Equal(0, budget.Used);
        Assert.False(budget.UnderPressure);
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(60), $"took {clock.Elapsed}");
    }

    [Fact]
    public void ABudgetTooSmallForTheConnectionsIsAOneLineUsageError()
    {
        (int exit, string stdout, string stderr) = ChildProcess.Run(ChildProcess.CliDll,
            ["serve", "--export", "r=ram:16M", "--listen", "tcp:127.0.0.1:0", "--memory-budget", "100M"]);
        Assert.Equal(2, exit);
        Assert.Equal("pfnblock: error: a memory budget of 100M is too small for 64 connections: it must be at least 128M (1M per connection plus 64M for the largest request)", stderr.Trim());
        Assert.DoesNotContain("serving", stdout);
    }
}
