using System.Diagnostics;
using System.Net;
using System.Net.Sockets;

namespace PfnBlock.Exports.Nbd;

// Who gets a connection slot. Every client here may come from 127.0.0.1, so limits by source
// alone cannot keep an attacker from holding every slot with connections that never finish the
// handshake: when the slots are full, the oldest connection still in its handshake makes room.
// A real client's handshake takes milliseconds, so it is never the oldest for long; an attacker
// reconnecting only ever evicts its own earlier connections. The handshake deadline bounds how
// long any connection can hold a slot without being served.
public sealed partial class NbdServer
{
    private readonly Dictionary<string, (long Ticks, int Suppressed)> _lastLog = [];
    private long _refused, _evicted, _handshakeTimeouts;

    /// <summary>Connections closed at once because every slot (or every slot of their source) was taken by a connection past its handshake.</summary>
    public long ConnectionsRefused => Interlocked.Read(ref _refused);
    /// <summary>Connections dropped during their handshake to make room for a new one.</summary>
    public long ConnectionsEvicted => Interlocked.Read(ref _evicted);
    /// <summary>Connections dropped because their handshake ran past <see cref="NbdServerOptions.HandshakeTimeout"/>.</summary>
    public long HandshakeTimeouts => Interlocked.Read(ref _handshakeTimeouts);

    /// <summary>Decides whether <paramref name="client"/> may have a slot, evicting a connection still in handshake if that makes room. Caller holds the lock.</summary>
    private bool TryAdmit(Socket client)
    {
        IPAddress? source = (client.RemoteEndPoint as IPEndPoint)?.Address;
        int active = 0, fromSource = 0;
        NbdConnection? oldest = null, oldestFromSource = null;
        foreach (NbdConnection c in _connections.Keys)
        {
            if (c.Evicted) continue; // its thread is on its way out; the slot is free
            active++;
            bool same = source is not null && source.Equals(c.Source);
            if (same) fromSource++;
            if (!c.InHandshake) continue;
            if (oldest is null || c.AcceptedTicks < oldest.AcceptedTicks) oldest = c;
            if (same && (oldestFromSource is null || c.AcceptedTicks < oldestFromSource.AcceptedTicks)) oldestFromSource = c;
        }
        int perSource = Options.MaxConnectionsPerSource;
        if (perSource > 0 && source is not null && fromSource >= perSource)
        {
            if (oldestFromSource is null || !oldestFromSource.TryEvict())
            {
                Interlocked.Increment(ref _refused);
                LogThrottled("per-source", $"nbd: connection from {source} refused: {perSource} connections from it are being served (--max-connections-per-source)");
                return false;
            }
            LogThrottled("evict", $"nbd: evicted a connection from {source} still in handshake to admit a new one from it (--max-connections-per-source {perSource})");
            Interlocked.Increment(ref _evicted);
            if (oldestFromSource == oldest) oldest = null;
            active--;
        }
        if (active < Options.MaxConnections) return true;
        if (oldest is null || !oldest.TryEvict())
        {
            Interlocked.Increment(ref _refused);
            LogThrottled("full", $"nbd: connection from {Describe(client)} refused: all {Options.MaxConnections} connections are past their handshake (--max-connections)");
            return false;
        }
        Interlocked.Increment(ref _evicted);
        LogThrottled("evict", $"nbd: evicted the oldest connection still in handshake (from {Describe(oldest.Source)}) to admit one from {Describe(client)}: all {Options.MaxConnections} slots were taken");
        return true;
    }

    /// <summary>A connection's handshake ran past <see cref="NbdServerOptions.HandshakeTimeout"/>.</summary>
    internal void HandshakeExpired(NbdConnection connection)
    {
        if (!connection.TryEvict()) return;
        Interlocked.Increment(ref _handshakeTimeouts);
        LogThrottled("deadline", $"nbd: dropped a connection from {Describe(connection.Source)}: no handshake within {Options.HandshakeTimeout.TotalSeconds:0.###} s (--handshake-timeout)");
    }

    private static string Describe(Socket socket) => Describe((socket.RemoteEndPoint as IPEndPoint)?.Address);

    private static string Describe(IPAddress? source) => source?.ToString() ?? "a unix socket client";

    /// <summary>Logs at most one line per second per kind of event, so that a flood of connections cannot flood the log.</summary>
    private void LogThrottled(string kind, string message)
    {
        if (Options.Log is not { } log) return;
        long now = Stopwatch.GetTimestamp();
        lock (_lastLog)
        {
            if (_lastLog.TryGetValue(kind, out (long Ticks, int Suppressed) last) && Stopwatch.GetElapsedTime(last.Ticks, now) < TimeSpan.FromSeconds(1))
            {
                _lastLog[kind] = (last.Ticks, last.Suppressed + 1);
                return;
            }
            _lastLog[kind] = (now, 0);
            if (last.Suppressed > 0) message += $" ({last.Suppressed} more like it since the last report)";
        }
        log(message);
    }
}
