using System.Net;
using System.Net.Sockets;
using PfnBlock.Management.Metrics;
using PfnBlock.Tests.Nbd;

namespace PfnBlock.Tests.Management;

/// <summary>
/// The Prometheus endpoint (issue 14, metrics): scraped over HTTP by a real client, parsed
/// strictly as the text format, its series labelled by device and export, and its counters
/// moving after real I/O through nbdcopy, lower devices of a stack included.
/// </summary>
public sealed class MetricsEndpointTests
{
    private static string Get(string url, out HttpStatusCode status, HttpMethod? method = null)
    {
        // The synchronous Send: no thread-pool thread is blocked waiting for the scrape.
        using var http = new HttpClient { Timeout = TimeSpan.FromSeconds(30) };
        using HttpResponseMessage response = http.Send(new HttpRequestMessage(method ?? HttpMethod.Get, url));
        status = response.StatusCode;
        if (status == HttpStatusCode.OK && method != HttpMethod.Head)
            Assert.Equal("text/plain; version=0.0.4; charset=utf-8", response.Content.Headers.ContentType?.ToString());
        using var reader = new StreamReader(response.Content.ReadAsStream());
        return reader.ReadToEnd();
    }

    private static PrometheusText Scrape(string url)
    {
        string body = Get(url, out HttpStatusCode status);
        Assert.Equal(HttpStatusCode.OK, status);
        return PrometheusText.Parse(body);
    }

    [Fact]
    public void AScrapeIsValidPrometheusTextAndItsCountersMoveAfterRealIo()
    {
        using var server = new ManagedTestServer();
        using var endpoint = new MetricsEndpoint(new ServerMetrics(server.Context));
        IPEndPoint ep = endpoint.Start(MetricsEndpoint.ParseAddress("tcp:127.0.0.1:0"));
        string url = $"http://127.0.0.1:{ep.Port}/metrics";
        string[] devices = [server.TableLabel, ManagedTestServer.TableLine0, ManagedTestServer.TableLine1, ManagedTestServer.Plain];

        PrometheusText before = Scrape(url);
        foreach (string d in devices)
        {
            Assert.Equal(0, before.Value("pfnblock_device_requests_total", ("device", d), ("op", "write")));
            Assert.Equal(0, before.Value("pfnblock_device_request_seconds_count", ("device", d), ("op", "read")));
            Assert.Equal(1, before.Value("pfnblock_device_info", ("device", d), ("name", d == server.TableLabel ? "stack" : d[(d.IndexOf("name=", StringComparison.Ordinal) + 5)..])));
        }
        Assert.Equal("counter", before.Families["pfnblock_device_requests_total"].Type);
        Assert.Equal("histogram", before.Families["pfnblock_device_request_seconds"].Type);
        Assert.Equal("histogram", before.Families["pfnblock_nbd_request_seconds"].Type);
        Assert.Equal(1, before.Value("pfnblock_export_info", ("export", "stack"), ("device", server.TableLabel)));
        Assert.Equal(0, before.Value("pfnblock_nbd_requests_total", ("export", "stack"), ("command", "write")));
        Assert.Equal(0, before.Value("pfnblock_nbd_connections_refused_total"));

        // 32 MiB of random data across both lines of the table, then read back.
        const long size = 32 << 20;
        string source = Tool.RandomFile(server.Directory, size, seed: 14);
        string copy = Path.Combine(server.Directory, "copy.img");
        Tool.Run("nbdcopy", source, server.Uri("stack"));
        Tool.Run("nbdcopy", server.Uri("stack"), copy);
        Assert.Equal(Tool.Sha256(source, size), Tool.Sha256(copy, size));
        // The connections' ends are seen by their threads a moment after the clients exit.
        Assert.True(SpinWait.SpinUntil(() => server.Server.ActiveConnections == 0, 10_000));

        PrometheusText after = Scrape(url);
        Assert.Equal(size, after.Value("pfnblock_nbd_written_bytes_total", ("export", "stack")));
        Assert.Equal(size, after.Value("pfnblock_nbd_read_bytes_total", ("export", "stack")));
        Assert.True(after.Value("pfnblock_nbd_requests_total", ("export", "stack"), ("command", "write")) > 0);
        Assert.True(after.Value("pfnblock_nbd_connections_total", ("export", "stack")) >= 2);
        Assert.Equal(0, after.Value("pfnblock_nbd_connections_open", ("export", "stack")));
        Assert.Equal(after.Value("pfnblock_nbd_requests_total", ("export", "stack"), ("command", "read"))
            + after.Value("pfnblock_nbd_requests_total", ("export", "stack"), ("command", "write"))
            + after.Value("pfnblock_nbd_requests_total", ("export", "stack"), ("command", "block_status"))
            + after.Value("pfnblock_nbd_requests_total", ("export", "stack"), ("command", "flush")),
            after.Value("pfnblock_nbd_request_seconds_count", ("export", "stack")));
        Assert.True(after.Value("pfnblock_nbd_request_seconds_sum", ("export", "stack")) > 0);

        // Every level counts what it received: the table all of it, each line's RAM disk its half.
        Assert.Equal(size / 512, after.Value("pfnblock_device_sectors_total", ("device", server.TableLabel), ("op", "write")));
        Assert.Equal(size / 512, after.Value("pfnblock_device_sectors_total", ("device", server.TableLabel), ("op", "read")));
        foreach (string lower in (string[])[ManagedTestServer.TableLine0, ManagedTestServer.TableLine1])
        {
            Assert.Equal(size / 2 / 512, after.Value("pfnblock_device_sectors_total", ("device", lower), ("op", "write")));
            Assert.Equal(size / 2 / 512, after.Value("pfnblock_device_sectors_total", ("device", lower), ("op", "read")));
        }
        foreach (string d in devices)
            foreach (string op in (string[])["read", "write", "discard", "flush"])
            {
                double requests = after.Value("pfnblock_device_requests_total", ("device", d), ("op", op));
                Assert.Equal(requests, after.Value("pfnblock_device_request_seconds_count", ("device", d), ("op", op)));
                if (d != ManagedTestServer.Plain && op is "read" or "write")
                {
                    Assert.True(requests > 0, $"{d} {op}: no requests counted");
                    Assert.True(after.Value("pfnblock_device_request_seconds_sum", ("device", d), ("op", op)) > 0);
                }
            }
        Assert.Equal(0, after.Value("pfnblock_device_requests_total", ("device", ManagedTestServer.Plain), ("op", "write")));
        Assert.Equal("counter", after.Families["pfnblock_device_busy_seconds_total"].Type);
        foreach (string d in devices)
        {
            Assert.Equal(0, after.Value("pfnblock_device_errors_total", ("device", d), ("op", "write")));
            // Busy no longer than the server has existed, and (a stamp moved by nothing) none on the idle device.
            Assert.InRange(after.Value("pfnblock_device_busy_seconds_total", ("device", d)), 0, server.Context.Uptime.TotalSeconds);
        }
        Assert.Equal(0, after.Value("pfnblock_device_busy_seconds_total", ("device", ManagedTestServer.Plain)));
        Assert.Equal(0, after.Value("pfnblock_device_in_flight", ("device", server.TableLabel)));

        // A third scrape with no I/O in between adds nothing (the histograms are fed deltas).
        PrometheusText again = Scrape(url);
        Assert.Equal(after.Value("pfnblock_device_request_seconds_count", ("device", server.TableLabel), ("op", "write")),
            again.Value("pfnblock_device_request_seconds_count", ("device", server.TableLabel), ("op", "write")));
        Assert.Equal(after.Value("pfnblock_device_request_seconds_sum", ("device", server.TableLabel), ("op", "write")),
            again.Value("pfnblock_device_request_seconds_sum", ("device", server.TableLabel), ("op", "write")));
    }

    [Fact]
    public void OtherPathsAndMethodsAreRefusedAndASilentClientDoesNotHoldTheEndpoint()
    {
        using var server = new ManagedTestServer();
        using var endpoint = new MetricsEndpoint(new ServerMetrics(server.Context));
        IPEndPoint ep = endpoint.Start(MetricsEndpoint.ParseAddress("tcp:127.0.0.1:0"));
        Assert.Equal(IPAddress.Loopback, ep.Address);
        string root = $"http://127.0.0.1:{ep.Port}";
        // Connections that send nothing wait for their request deadline on their own threads.
        var silent = new List<Socket>();
        try
        {
            // All places but one: each request below waits for the one before to end, never for the silent ones.
            for (int i = 0; i < MetricsEndpoint.MaxConcurrent - 1; i++)
            {
                var s = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
                s.Connect(ep);
                silent.Add(s);
            }
            Get(root + "/", out HttpStatusCode status);
            Assert.Equal(HttpStatusCode.NotFound, status);
            Get(root + "/metrics", out status, HttpMethod.Post);
            Assert.Equal(HttpStatusCode.MethodNotAllowed, status);
            Assert.Equal("", Get(root + "/metrics", out status, HttpMethod.Head));
            Assert.Equal(HttpStatusCode.OK, status);
            Assert.Contains("pfnblock_device_requests_total", Get(root + "/metrics?x=1", out status));
            Assert.Equal(HttpStatusCode.OK, status);
        }
        finally
        {
            foreach (Socket s in silent) s.Dispose();
        }
    }

    [Fact]
    public void TheAddressIsLoopbackUnlessToldAndUnixIsRefused()
    {
        Assert.Equal(new IPEndPoint(IPAddress.Loopback, 9100), MetricsEndpoint.ParseAddress("9100").EndPoint);
        Assert.Equal(new IPEndPoint(IPAddress.Parse("10.1.2.3"), 9100), MetricsEndpoint.ParseAddress("tcp:10.1.2.3:9100").EndPoint);
        Assert.Throws<FormatException>(() => MetricsEndpoint.ParseAddress("unix:/tmp/metrics.sock"));
        Assert.Throws<FormatException>(() => MetricsEndpoint.ParseAddress("tcp:example.com:9100"));
        Assert.Throws<FormatException>(() => MetricsEndpoint.ParseAddress("70000"));
    }

    [Fact]
    public void AServeOnABusyMetricsPortFailsWithOneErrorLine()
    {
        // The port is held by a metrics endpoint like serve's own (SO_REUSEADDR, no SO_REUSEPORT).
        using var server = new ManagedTestServer();
        using var holder = new MetricsEndpoint(new ServerMetrics(server.Context));
        int port = holder.Start(MetricsEndpoint.ParseAddress("tcp:127.0.0.1:0")).Port;
        (int exit, string stdout, string stderr) = ChildProcess.Run(ChildProcess.CliDll,
            ["serve", "--export", "r=ram:16M", "--listen", $"unix:{server.Directory}/second.sock", "--control", "none", "--metrics", $"tcp:127.0.0.1:{port}"]);
        Assert.Equal(1, exit);
        Assert.Equal($"pfnblock: error: cannot listen on tcp:127.0.0.1:{port}: address in use (another server is listening there)", stderr.Trim());
        Assert.DoesNotContain("serving", stdout);
        // The holder still answers.
        Assert.Contains("pfnblock_nbd_requests_total", Get($"http://127.0.0.1:{port}/metrics", out _));
    }

    [Fact]
    public void TheParserRefusesWhatTheFormatDoesNot()
    {
        const string good = "# HELP m_total a counter\n# TYPE m_total counter\nm_total{a=\"x\\\"y\"} 1\n" +
                            "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 3.5\nh_count 2\n";
        PrometheusText ok = PrometheusText.Parse(good);
        Assert.Equal(1, ok.Value("m_total", ("a", "x\"y")));
        Assert.Equal(2, ok.Value("h_count"));
        string[] bad =
        [
            good.TrimEnd('\n'),                                                    // no final newline
            good + "m_total{a=\"x\\\"y\"} 2\n",                                    // a series twice, and apart from its family
            "# TYPE h histogram\nh_bucket{le=\"1\"} 3\nh_bucket{le=\"+Inf\"} 2\nh_sum 1\nh_count 2\n", // not cumulative
            "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_sum 1\nh_count 1\n",     // no +Inf
            "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_sum 1\nh_count 3\n",  // +Inf != count
            "m 1\n",                                                               // no TYPE
            "# TYPE m gauge\nm{a=x} 1\n",                                          // unquoted label value
            "# TYPE m gauge\nm{a=\"\\q\"} 1\n",                                     // bad escape
            "# TYPE m gauge\nm one\n",                                             // bad value
            "# TYPE m gauge\n1m 1\n",                                              // bad name
            "# TYPE m widget\nm 1\n",                                              // unknown type
        ];
        foreach (string text in bad) Assert.Throws<FormatException>(() => PrometheusText.Parse(text));
    }
}
