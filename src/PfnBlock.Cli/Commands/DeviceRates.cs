using System.Text.Json.Nodes;

namespace PfnBlock.Cli.Commands;

/// <summary>
/// One device's iostat figures over an interval, from two <c>stats</c> replies of the control
/// socket: rates per second, average time per request (await), average queue size (request time
/// per second, exact) and %util (busy time per second, kept like the kernel's io_ticks to within
/// 100 µs per busy stretch; as with iostat, a device serving requests in parallel can be at 100 %
/// and far from saturated).
/// </summary>
/// <param name="Device">The device's label (its spec).</param>
/// <param name="ReadsPerSecond">Reads completed per second.</param>
/// <param name="WritesPerSecond">Writes (and write-zeroes) completed per second.</param>
/// <param name="DiscardsPerSecond">Discards completed per second.</param>
/// <param name="FlushesPerSecond">Flushes completed per second.</param>
/// <param name="ReadMiBPerSecond">MiB read per second (iostat's MB: 2048 sectors).</param>
/// <param name="WriteMiBPerSecond">MiB written or zeroed per second.</param>
/// <param name="ReadAwaitMs">Average time of a read completed in the interval, in milliseconds (0 without reads).</param>
/// <param name="WriteAwaitMs">The same for writes.</param>
/// <param name="AwaitMs">The same for reads and writes together.</param>
/// <param name="AverageQueueSize">Request time (all operations) per second of the interval: the average number in flight.</param>
/// <param name="InFlight">Requests in flight at the end of the interval.</param>
/// <param name="UtilPercent">Share of the interval the device had a request in flight, in percent.</param>
/// <param name="ErrorsPerSecond">Requests (all operations) completed with an error, per second.</param>
internal sealed record DeviceRates(string Device, double ReadsPerSecond, double WritesPerSecond, double DiscardsPerSecond, double FlushesPerSecond,
    double ReadMiBPerSecond, double WriteMiBPerSecond, double ReadAwaitMs, double WriteAwaitMs, double AwaitMs, double AverageQueueSize, long InFlight,
    double UtilPercent, double ErrorsPerSecond)
{
    /// <summary>
    /// The figures of every device in <paramref name="now"/> since <paramref name="before"/> (null:
    /// since the server started, as iostat's first report covers the time since boot).
    /// </summary>
    public static (double Seconds, IReadOnlyList<DeviceRates> Devices) Between(JsonObject? before, JsonObject now)
    {
        long nowNs = Long(now["uptime_ns"]);
        long beforeNs = before is null ? 0 : Long(before["uptime_ns"]);
        double seconds = Math.Max(nowNs - beforeNs, 1) / 1e9;
        var previous = new Dictionary<string, JsonObject>(StringComparer.Ordinal);
        if (before?["devices"] is JsonArray old)
            foreach (JsonObject d in old.OfType<JsonObject>()) previous[(string)d["device"]!] = d;
        var rates = new List<DeviceRates>();
        foreach (JsonObject d in (now["devices"] as JsonArray ?? []).OfType<JsonObject>())
        {
            string label = (string)d["device"]!;
            JsonObject? p = previous.GetValueOrDefault(label);
            long Delta(string op, string field) => Long(d[op]?[field]) - (p is null ? 0 : Long(p[op]?[field]));
            long busyNs = Long(d["busy_ns"]) - (p is null ? 0 : Long(p["busy_ns"]));
            long errors = Delta("read", "errors") + Delta("write", "errors") + Delta("discard", "errors") + Delta("flush", "errors");
            double Per(string op) => Delta(op, "ios") / seconds;
            double Await(long ios, long ns) => ios > 0 ? ns / 1e6 / ios : 0;
            long reads = Delta("read", "ios"), writes = Delta("write", "ios");
            long readNs = Delta("read", "time_ns"), writeNs = Delta("write", "time_ns");
            long allNs = readNs + writeNs + Delta("discard", "time_ns") + Delta("flush", "time_ns");
            rates.Add(new DeviceRates(label, Per("read"), Per("write"), Per("discard"), Per("flush"),
                Delta("read", "sectors") / 2048.0 / seconds, Delta("write", "sectors") / 2048.0 / seconds,
                Await(reads, readNs), Await(writes, writeNs), Await(reads + writes, readNs + writeNs),
                allNs / 1e9 / seconds, Long(d["in_flight"]),
                // The stamp may run up to one granularity ahead of the interval: never above 100 %.
                Math.Min(busyNs / 1e9 / seconds * 100, 100), errors / seconds));
        }
        return (seconds, rates);
    }

    private static long Long(JsonNode? node) => node is JsonValue v && v.TryGetValue(out long x) ? x : 0;

    /// <summary>The figures as one JSON object (snake_case keys, iostat's column names where it has them).</summary>
    public JsonObject ToJson() => new()
    {
        ["device"] = Device,
        ["r_s"] = ReadsPerSecond,
        ["w_s"] = WritesPerSecond,
        ["d_s"] = DiscardsPerSecond,
        ["f_s"] = FlushesPerSecond,
        ["rMB_s"] = ReadMiBPerSecond,
        ["wMB_s"] = WriteMiBPerSecond,
        ["r_await_ms"] = ReadAwaitMs,
        ["w_await_ms"] = WriteAwaitMs,
        ["await_ms"] = AwaitMs,
        ["aqu_sz"] = AverageQueueSize,
        ["in_flight"] = InFlight,
        ["util_pct"] = UtilPercent,
        ["errors_s"] = ErrorsPerSecond,
    };
}
