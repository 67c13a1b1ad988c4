using System.Text.Json.Nodes;
using PfnBlock.Block;
using PfnBlock.Exports.Nbd;

namespace PfnBlock.Management.Control.Commands;

/// <summary>
/// <c>stats</c>: every served device's counters (/sys/block/*/stat's, with exact times, errors and
/// busy time) and every
/// export's NBD counters, with the server's uptime from the monotonic clock, so that a client
/// (<c>pfnblock stat</c>) divides differences of two replies by the time between them.
/// </summary>
public sealed class StatsCommand : IRegisteredControlCommand
{
    /// <inheritdoc/>
    public static ControlCommand Command { get; } = new("stats", "",
        "counters of every device (of every exported stack, lower devices too) and every export", Run);

    private static JsonObject Run(ControlRequest request)
    {
        request.RequireArgs(0, 0);
        ServerContext server = request.Server;
        var devices = new JsonArray();
        foreach (ServedDevice d in server.ServedDevices())
        {
            DiskStatsSnapshot s = d.Device.Stats.Snapshot();
            devices.Add(new JsonObject
            {
                ["device"] = d.Label,
                ["name"] = d.Device.Name,
                ["read"] = Op(s.Read),
                ["write"] = Op(s.Write),
                ["discard"] = Op(s.Discard),
                ["flush"] = Op(s.Flush),
                ["in_flight"] = s.InFlight,
                ["requeues"] = s.Requeues,
                ["busy_ns"] = (long)(s.BusySeconds * 1e9),
            });
        }
        var exports = new JsonArray();
        foreach (NbdExport e in server.Exports.All)
        {
            NbdStatsSnapshot s = e.Stats.Snapshot();
            var requests = new JsonObject();
            foreach (NbdCommand c in NbdCommandNames.All) requests[NbdCommandNames.Of(c)] = s.Count(c);
            exports.Add(new JsonObject
            {
                ["export"] = e.Name,
                ["requests"] = requests,
                ["bytes_read"] = s.BytesRead,
                ["bytes_written"] = s.BytesWritten,
                ["errors"] = s.Errors,
                ["connections"] = s.Connections,
                ["connections_open"] = s.ConnectionsOpen,
                ["polled_receives"] = s.PolledReceives,
                ["latency_ns"] = new JsonObject
                {
                    ["sum"] = (long)(LatencyBuckets.Seconds(s.LatencyTicks) * 1e9),
                    ["p50"] = s.LatencyPercentile(0.5),
                    ["p99"] = s.LatencyPercentile(0.99),
                    ["p999"] = s.LatencyPercentile(0.999),
                },
            });
        }
        var result = new JsonObject
        {
            ["uptime_ns"] = (long)(server.Uptime.Ticks * 100L),
            ["devices"] = devices,
            ["exports"] = exports,
        };
        if (server.Server is { } nbd)
        {
            result["nbd"] = new JsonObject
            {
                ["connections_active"] = nbd.ActiveConnections,
                ["connections_refused"] = nbd.ConnectionsRefused,
                ["connections_evicted"] = nbd.ConnectionsEvicted,
                ["handshake_timeouts"] = nbd.HandshakeTimeouts,
            };
        }
        return result;
    }

    private static JsonObject Op(OpStats s) => new()
    {
        ["ios"] = s.Ios,
        ["sectors"] = s.Sectors,
        ["time_ns"] = (long)(s.Seconds * 1e9),
        ["errors"] = s.Errors,
    };
}
