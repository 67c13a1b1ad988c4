using System.Text.Json.Nodes;

namespace PfnBlock.Cli.Commands;

/// <summary>
/// One device's iostat figures over an interval, from two <c>stats</c> replies of the control
/// socket: rates per second, average time per request (await) and average queue size. No %util:
/// it needs the time the device had any request in flight (the kernel's io_ticks), which a
/// device-wide in-flight count kept per I/O would give at the price of a shared atomic on every
/// I/O at every level (what the per-thread counters avoid); summing request times gives aqu-sz
/// exactly instead.
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
internal sealed record DeviceRates(string Device, double ReadsPerSecond, double WritesPerSecond, double DiscardsPerSecond, double FlushesPerSecond,
    double ReadMiBPerSecond, double WriteMiBPerSecond, double ReadAwaitMs, double WriteAwaitMs, double AwaitMs, double AverageQueueSize, long InFlight)
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
            double Per(string op) => Delta(op, "ios") / seconds;
            double Await(long ios, long ns) => ios > 0 ? ns / 1e6 / ios : 0;
            long reads = Delta("read", "ios"), writes = Delta("write", "ios");
            long readNs = Delta("read", "time_ns"), writeNs = Delta("write", "time_ns");
            long allNs = readNs + writeNs + Delta("discard", "time_ns") + Delta("flush", "time_ns");
            rates.Add(new DeviceRates(label, Per("read"), Per("write"), Per("discard"), Per("flush"),
                Delta("read", "sectors") / 2048.0 / seconds, Delta("write", "sectors") / 2048.0 / seconds,
                Await(reads, readNs), Await(writes, writeNs), Await(reads + writes, readNs + writeNs),
                allNs / 1e9 / seconds, Long(d["in_flight"])));
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
    };
}
