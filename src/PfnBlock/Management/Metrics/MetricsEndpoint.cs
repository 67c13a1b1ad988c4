using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Text;
using PfnBlock.Exports.Nbd;

namespace PfnBlock.Management.Metrics;

/// <summary>
/// The HTTP endpoint Prometheus scrapes: <c>GET /metrics</c> answers the text exposition format
/// of a <see cref="ServerMetrics"/>. A plain HTTP/1.1 responder on a socket of our own rather
/// than HttpListener, so the listening socket follows the server's rules: SO_REUSEADDR without
/// SO_REUSEPORT (a busy port is an error, never shared), any port including 0. Each connection
/// gets one response and is closed; a few are served at once, each on its own thread, with a
/// deadline for the request. When all are busy the next connection waits in the listen backlog
/// for a place rather than being reset, so a client that connects and sends nothing delays a
/// scrape by at most the deadline and cannot hold the endpoint.
/// </summary>
public sealed class MetricsEndpoint : IDisposable
{
    /// <summary>Connections served at once; more wait in the listen backlog until one ends.</summary>
    public const int MaxConcurrent = 4;
    private const int MaxRequestBytes = 8192;
    private static readonly TimeSpan s_requestTimeout = TimeSpan.FromSeconds(5);

    private readonly ServerMetrics _metrics;
    private readonly Action<string>? _log;
    private readonly Lock _lock = new();
    private readonly List<Thread> _threads = [];
    private readonly SemaphoreSlim _slots = new(MaxConcurrent, MaxConcurrent);
    private Socket? _listener;
    private Thread? _acceptThread;
    private volatile bool _stopping;

    /// <summary>Creates an endpoint for <paramref name="metrics"/>; <see cref="Start"/> binds it.</summary>
    /// <param name="metrics">What it serves.</param>
    /// <param name="log">Where failures of single requests are reported, or null.</param>
    public MetricsEndpoint(ServerMetrics metrics, Action<string>? log = null)
    {
        ArgumentNullException.ThrowIfNull(metrics);
        _metrics = metrics;
        _log = log;
    }

    /// <summary>Parses <c>tcp:HOST:PORT</c> (HOST an IP address) or a bare <c>PORT</c>, which means 127.0.0.1:PORT.</summary>
    /// <exception cref="FormatException">Neither; a Unix socket is refused too (Prometheus scrapes over TCP).</exception>
    public static NbdListenAddress ParseAddress(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        if (int.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out int port) && port <= 65535)
            return new NbdListenAddress(new IPEndPoint(IPAddress.Loopback, port));
        if (text.StartsWith("tcp:", StringComparison.Ordinal))
        {
            try { return NbdListenAddress.Parse(text); }
            catch (FormatException) { }
        }
        throw new FormatException($"invalid metrics address '{text}': expected tcp:HOST:PORT (HOST an IP address) or PORT (on 127.0.0.1)");
    }

    /// <summary>Binds <paramref name="address"/> and starts answering.</summary>
    /// <returns>The bound endpoint (with the real port where port 0 was asked for).</returns>
    /// <exception cref="IOException">The address is in use or cannot be bound; the message says which and why.</exception>
    public IPEndPoint Start(NbdListenAddress address)
    {
        ArgumentNullException.ThrowIfNull(address);
        if (address.EndPoint is not IPEndPoint) throw new ArgumentException("metrics are served over TCP only", nameof(address));
        lock (_lock)
        {
            if (_listener is not null) throw new InvalidOperationException("the metrics endpoint is started already");
            _listener = NbdListener.Listen(address, out _);
            _acceptThread = new Thread(() => AcceptLoop(_listener)) { IsBackground = true, Name = "metrics-accept" };
            _acceptThread.Start();
            return (IPEndPoint)_listener.LocalEndPoint!;
        }
    }

    private void AcceptLoop(Socket listener)
    {
        while (!_stopping)
        {
            // A place first, then the connection: while all are taken, new ones wait in the backlog.
            if (!_slots.Wait(TimeSpan.FromMilliseconds(200))) continue;
            Socket client;
            try { client = listener.Accept(); }
            catch (Exception e) when (e is SocketException or ObjectDisposedException)
            {
                _slots.Release();
                if (_stopping) return;
                Thread.Sleep(10);
                continue;
            }
            lock (_lock)
            {
                if (_stopping)
                {
                    client.Dispose();
                    _slots.Release();
                    return;
                }
                var thread = new Thread(() => Serve(client)) { IsBackground = true, Name = "metrics-http" };
                _threads.Add(thread);
                thread.Start();
            }
        }
    }

    private void Serve(Socket client)
    {
        try
        {
            client.ReceiveTimeout = client.SendTimeout = (int)s_requestTimeout.TotalMilliseconds;
            string? head = ReadHead(client);
            if (head is null) return; // closed, timed out or oversized: nothing worth answering
            string[] requestLine = head[..head.IndexOf('\r')].Split(' ');
            if (requestLine.Length != 3 || !requestLine[2].StartsWith("HTTP/1.", StringComparison.Ordinal))
            {
                Respond(client, 400, "Bad Request", "text/plain; charset=utf-8", "bad request line\n"u8.ToArray(), head: false);
                return;
            }
            string method = requestLine[0], path = requestLine[1].Split('?')[0];
            if (path != "/metrics")
                Respond(client, 404, "Not Found", "text/plain; charset=utf-8", "pfnblock serves its metrics at /metrics\n"u8.ToArray(), method == "HEAD");
            else if (method is not ("GET" or "HEAD"))
                Respond(client, 405, "Method Not Allowed", "text/plain; charset=utf-8", "GET or HEAD\n"u8.ToArray(), head: false, "Allow: GET, HEAD\r\n");
            else
                Respond(client, 200, "OK", "text/plain; version=0.0.4; charset=utf-8", _metrics.Scrape(), method == "HEAD");
        }
        catch (Exception e) when (e is SocketException or IOException or ObjectDisposedException)
        {
            // The client went away or was too slow: routine.
        }
        catch (Exception e)
        {
            // A bug in one scrape must not take the server down.
            _log?.Invoke($"metrics: scrape failed: {e}");
        }
        finally
        {
            client.Dispose();
            lock (_lock) _threads.Remove(Thread.CurrentThread);
            _slots.Release();
        }
    }

    /// <summary>The request line and headers up to the empty line, or null if the client closed, stalled or sent too much.</summary>
    private static string? ReadHead(Socket client)
    {
        byte[] buffer = new byte[MaxRequestBytes];
        int filled = 0;
        while (filled < buffer.Length)
        {
            int n;
            try { n = client.Receive(buffer, filled, buffer.Length - filled, SocketFlags.None); }
            catch (SocketException e) when (e.SocketErrorCode == SocketError.TimedOut) { return null; }
            if (n == 0) return null;
            filled += n;
            int end = buffer.AsSpan(0, filled).IndexOf("\r\n\r\n"u8);
            if (end >= 0) return Encoding.Latin1.GetString(buffer, 0, end + 2);
        }
        return null;
    }

    private static void Respond(Socket client, int status, string reason, string contentType, byte[] body, bool head, string extraHeaders = "")
    {
        string header = $"HTTP/1.1 {status} {reason}\r\nContent-Type: {contentType}\r\nContent-Length: {body.Length}\r\n{extraHeaders}Connection: close\r\n\r\n";
        client.Send(Encoding.ASCII.GetBytes(header));
        if (!head) client.Send(body);
        client.Shutdown(SocketShutdown.Send);
    }

    /// <summary>Stops accepting and waits (briefly) for the responses being written.</summary>
    public void Dispose()
    {
        Thread[] threads;
        lock (_lock)
        {
            if (_stopping) return;
            _stopping = true;
            _listener?.Dispose();
            threads = [.. _threads, .. _acceptThread is null ? [] : new[] { _acceptThread }];
        }
        foreach (Thread t in threads) t.Join(s_requestTimeout + TimeSpan.FromSeconds(1));
    }
}
