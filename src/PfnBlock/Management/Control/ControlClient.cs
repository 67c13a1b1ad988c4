using System.Net.Sockets;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace PfnBlock.Management.Control;

/// <summary>
/// A connection to a server's control socket: sends a request, reads its reply line. Used by
/// <c>pfnblock ctl</c> and <c>pfnblock stat</c>; one request at a time.
/// </summary>
public sealed class ControlClient : IDisposable
{
    private readonly Socket _socket;
    private readonly ControlLineReader _reader;

    /// <summary>How long a reply may take before the call fails (a server stuck or stopped, not one that is busy).</summary>
    public static readonly TimeSpan ReplyTimeout = TimeSpan.FromSeconds(30);

    private ControlClient(Socket socket)
    {
        _socket = socket;
        // Replies (stats of many devices) may be longer than requests may.
        _reader = new ControlLineReader(socket, 64 << 20);
    }

    /// <summary>Connects to the control socket at <paramref name="path"/>.</summary>
    /// <exception cref="IOException">Nothing is there, nothing answers, or we may not connect; the message says which.</exception>
    public static ControlClient Connect(string path)
    {
        var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        try
        {
            socket.Connect(new UnixDomainSocketEndPoint(path));
            socket.ReceiveTimeout = socket.SendTimeout = (int)ReplyTimeout.TotalMilliseconds;
            return new ControlClient(socket);
        }
        catch (SocketException e)
        {
            socket.Dispose();
            string why = e.SocketErrorCode switch
            {
                SocketError.AddressNotAvailable or SocketError.ConnectionRefused when !File.Exists(path) => "no such socket (is 'pfnblock serve' running with this --control?)",
                SocketError.ConnectionRefused => "no server is listening there (a socket left by one that stopped)",
                SocketError.AccessDenied => "permission denied (the socket is its owner's only)",
                _ => e.Message,
            };
            throw new IOException($"cannot connect to the control socket {path}: {why}", e);
        }
        catch (ArgumentException e)
        {
            socket.Dispose();
            throw new ArgumentException($"invalid control socket path '{path}': {e.Message}", e);
        }
    }

    /// <summary>Sends <paramref name="command"/> with <paramref name="args"/> and returns the reply object.</summary>
    /// <exception cref="IOException">The server closed the connection, did not answer within <see cref="ReplyTimeout"/>, or sent something that is not a reply.</exception>
    public JsonObject Call(string command, params string[] args)
    {
        ReadOnlySpan<byte> line;
        try
        {
            _socket.Send(ControlProtocol.EncodeRequest(command, args));
            if (_reader.Next(out line) != ControlLineReader.Result.Line)
                throw new IOException("the control socket closed the connection without a reply");
        }
        catch (SocketException e)
        {
            throw new IOException(e.SocketErrorCode == SocketError.TimedOut
                ? $"the control socket did not answer '{command}' within {ReplyTimeout.TotalSeconds:0} s"
                : $"the control socket failed: {e.Message}", e);
        }
        try
        {
            return JsonNode.Parse(line) as JsonObject ?? throw new IOException($"not a reply: {Encoding.UTF8.GetString(line)}");
        }
        catch (JsonException e)
        {
            throw new IOException($"not a reply: {e.Message}", e);
        }
    }

    /// <summary>Calls <paramref name="command"/> and returns its result.</summary>
    /// <exception cref="ControlException">The server answered with an error (its message).</exception>
    /// <exception cref="IOException">The connection failed.</exception>
    public JsonNode? Result(string command, params string[] args)
    {
        JsonObject reply = Call(command, args);
        if (reply["ok"]?.GetValue<bool>() == true) return reply["result"];
        throw new ControlException(reply["error"]?.GetValue<string>() ?? "the server answered with an error and no message");
    }

    /// <summary>Closes the connection.</summary>
    public void Dispose() => _socket.Dispose();
}
