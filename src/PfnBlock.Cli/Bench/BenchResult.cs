using System.Text.Json.Nodes;
using HdrHistogram;

namespace PfnBlock.Cli.Bench;

/// <summary>Figures of one direction (reads or writes) of a run, in fio's terms.</summary>
internal sealed record DirectionResult(long Ios, long Bytes, double Seconds, LongHistogram Latency)
{
    public double Iops => Seconds > 0 ? Ios / Seconds : 0;
    public double BytesPerSecond => Seconds > 0 ? Bytes / Seconds : 0;

    /// <summary>The percentiles fio prints by default.</summary>
    public static readonly double[] Percentiles = [1, 5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95, 99, 99.5, 99.9, 99.95, 99.99];

    public long Percentile(double p) => Ios == 0 ? 0 : Latency.GetValueAtPercentile(p);
    public long Max => Ios == 0 ? 0 : Latency.GetMaxValue();
    public double Mean => Ios == 0 ? 0 : Latency.GetMean();
    public double StdDev => Ios == 0 ? 0 : Latency.GetStdDeviation();

    /// <summary>The direction as fio's JSON shape ("io_bytes", "bw_bytes", "iops", "lat_ns": {…}).</summary>
    public JsonObject ToJson()
    {
        var percentiles = new JsonObject();
        foreach (double p in Percentiles) percentiles[p.ToString("F6", System.Globalization.CultureInfo.InvariantCulture)] = Percentile(p);
        return new JsonObject
        {
            ["io_bytes"] = Bytes,
            ["bw_bytes"] = (long)BytesPerSecond,
            ["bw"] = (long)(BytesPerSecond / 1024),
            ["iops"] = Iops,
            ["runtime"] = (long)(Seconds * 1000),
            ["total_ios"] = Ios,
            ["lat_ns"] = new JsonObject
            {
                ["min"] = Percentile(0),
                ["max"] = Max,
                ["mean"] = Mean,
                ["stddev"] = StdDev,
                ["N"] = Ios,
                ["percentile"] = percentiles,
            },
        };
    }
}

/// <summary>
/// One interval of the measured phase: its end (seconds from the start of the phase) and the
/// rates over the interval — what a plot of IOPS over time draws (a cache filling, write-back
/// taking over, a rebuild competing with I/O).
/// </summary>
internal readonly record struct BenchSample(double Seconds, double ReadIops, double WriteIops, double BytesPerSecond)
{
    public JsonObject ToJson() => new()
    {
        ["t"] = Math.Round(Seconds, 3),
        ["read_iops"] = Math.Round(ReadIops),
        ["write_iops"] = Math.Round(WriteIops),
        ["bw_bytes"] = Math.Round(BytesPerSecond),
    };
}

/// <summary>The outcome of a benchmark workload.</summary>
internal sealed record BenchResult(
    BenchOptions Options,
    string DeviceDescription,
    DirectionResult Read,
    DirectionResult Write,
    double AllocatedBytesPerIo,
    double CpuSecondsUser,
    double CpuSecondsSystem,
    string? Error)
{
    /// <summary>Requests some device of the stack answered Busy during the measured pass and the block layer requeued.</summary>
    public long Requeues { get; init; }

    /// <summary>The measured phase sampled every <see cref="BenchRunner.SampleInterval"/>.</summary>
    public IReadOnlyList<BenchSample> Timeline { get; init; } = [];

    public long TotalIos => Read.Ios + Write.Ios;

    /// <summary>
    /// CPU time (user + system, the whole process: submitters, completion threads, the devices'
    /// own threads) per I/O of the measured pass, in nanoseconds — the cost fio shows as
    /// usr_cpu/sys_cpu, made comparable across queue depths and job counts.
    /// </summary>
    public double CpuNanosPerIo => TotalIos > 0 ? (CpuSecondsUser + CpuSecondsSystem) * 1e9 / TotalIos : 0;

    /// <summary>User and system CPU as a percentage of the pass's wall time (fio's usr_cpu and sys_cpu; 200 % is two busy cores).</summary>
    public (double User, double System) CpuPercent
    {
        get
        {
            double wall = Math.Max(Read.Seconds, Write.Seconds);
            return wall > 0 ? (100 * CpuSecondsUser / wall, 100 * CpuSecondsSystem / wall) : (0, 0);
        }
    }

    public JsonObject ToJson() => new()
    {
        ["jobname"] = $"{Options.RwName}-bs{Options.BlockSize}-qd{Options.IoDepth}-j{Options.Jobs}",
        ["device"] = Options.Device.ToString(),
        ["device_description"] = DeviceDescription,
        ["job options"] = new JsonObject
        {
            ["rw"] = Options.RwName,
            ["bs"] = Options.BlockSize,
            ["iodepth"] = Options.IoDepth,
            ["numjobs"] = Options.Jobs,
            ["runtime"] = Options.RuntimeSeconds,
            ["ramp_time"] = Options.RampSeconds,
            ["size"] = Options.Size,
            ["rwmixread"] = Options.ReadMixPercent,
            ["verify"] = Options.Verify,
            ["fua"] = Options.Fua,
            ["poll"] = Options.Poll,
        },
        ["read"] = Read.ToJson(),
        ["write"] = Write.ToJson(),
        ["usr_cpu"] = CpuPercent.User,
        ["sys_cpu"] = CpuPercent.System,
        ["usr_cpu_seconds"] = CpuSecondsUser,
        ["sys_cpu_seconds"] = CpuSecondsSystem,
        ["cpu_ns_per_io"] = CpuNanosPerIo,
        ["alloc_bytes_per_io"] = AllocatedBytesPerIo,
        ["requeues"] = Requeues,
        ["timeline"] = new JsonArray([.. Timeline.Select(t => (JsonNode)t.ToJson())]),
        ["error"] = Error,
    };
}
