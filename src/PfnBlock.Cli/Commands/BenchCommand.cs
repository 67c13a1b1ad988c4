using System.CommandLine;
using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using PfnBlock.Block;
using PfnBlock.Cli.Bench;
using PfnBlock.Common;
using PfnBlock.Devices;
using PfnBlock.Namespaces;
using Spectre.Console;

namespace PfnBlock.Cli.Commands;

/// <summary><c>pfnblock bench</c>: a fio-like runner on any device spec.</summary>
internal static class BenchCommand
{
    /// <summary>Size of the namespace the bench creates when no device is named.</summary>
    public const long DefaultNamespaceSize = 1L << 30;

    public static Command Create()
    {
        Option<DeviceSpec?> device = Cli.DeviceOption($"Device spec ({DeviceTypes.SpecSummary}; 'pfnblock devices' lists every kind and option). Default: a 1G pmem namespace in the data directory.");
        var rw = new Option<RwMode?>("--rw") { Description = "read, write, randread, randwrite or randrw. Default: a suite of 4k randread/randwrite and 1M read/write." };
        rw.AcceptOnlyFromAmong("read", "write", "randread", "randwrite", "randrw");
        Option<long> bs = Cli.SizeOption("--bs", "Block size (default 4k).", 4096);
        var iodepth = new Option<int>("--iodepth") { Description = "I/Os in flight per job.", DefaultValueFactory = _ => 1 };
        var jobs = new Option<int>("--jobs", "--numjobs") { Description = "Parallel jobs (threads).", DefaultValueFactory = _ => 1 };
        var runtime = new Option<double?>("--runtime") { Description = "Measured seconds (time-based run). Default 5, or 3 per workload in the suite; with --size alone the run is size-based." };
        var ramp = new Option<double>("--ramp") { Description = "Unmeasured warm-up seconds before a time-based run.", DefaultValueFactory = _ => 1 };
        Option<long> size = Cli.SizeOption("--size", "Bytes of the device each job addresses; without --runtime, each job transfers this much once.", 0);
        var mix = new Option<int>("--rwmixread") { Description = "Percentage of reads for randrw.", DefaultValueFactory = _ => 50 };
        var verify = new Option<bool>("--verify") { Description = "Write self-checking patterns and check every block read; a mismatch fails the run." };
        var fua = new Option<bool>("--fua") { Description = "Set FUA on every write (durable on completion)." };
        var noPlug = new Option<bool>("--no-plug") { Description = "Submit every I/O on its own instead of plugging the ones a job issues together (at --iodepth above 1; a memory device copies a plugged batch side by side)." };
        var noPoll = new Option<bool>("--no-poll") { Description = "Do not poll: wait for every completion from the device's own thread instead of reaping it on the job's thread (devices that poll: the file device on io_uring)." };
        var json = new Option<bool>("--json") { Description = "Print one JSON document with fio-like field names." };
        Option<DeviceSpec?> vs = Cli.DeviceOption("Compare with this device in the same run: the workload alternates between --device (A) and this one (B) in short slices, and the median of the per-pair ratios B/A is printed.", "--vs");
        var slices = new Option<int>("--slices") { Description = "With --vs: pairs of slices the runtime is cut into.", DefaultValueFactory = _ => 20 };
        var cmd = new Command("bench", "Run a fio-like benchmark on a device.")
        {
            device, rw, bs, iodepth, jobs, runtime, ramp, size, mix, verify, fua, noPoll, noPlug, json, vs, slices,
        };
        cmd.SetAction(r => Cli.Run(() =>
        {
            DeviceSpec spec = r.GetValue(device) ?? DefaultDevice();
            RwMode? mode = r.GetValue(rw);
            double? seconds = r.GetValue(runtime);
            long sizeBytes = r.GetValue(size);
            var template = new BenchOptions
            {
                Device = spec,
                BlockSize = checked((int)r.GetValue(bs)),
                IoDepth = r.GetValue(iodepth),
                Jobs = r.GetValue(jobs),
                RampSeconds = r.GetValue(ramp),
                Size = sizeBytes,
                ReadMixPercent = r.GetValue(mix),
                Verify = r.GetValue(verify),
                Fua = r.GetValue(fua),
                Poll = !r.GetValue(noPoll),
                Plug = !r.GetValue(noPlug),
            };
            List<BenchOptions> workloads = mode is RwMode m
                ? [template with { Rw = m, RuntimeSeconds = seconds ?? (sizeBytes > 0 ? 0 : 5) }]
                : DefaultSuite(template, seconds ?? 3, r.GetResult(bs) is { Implicit: false });
            foreach (BenchOptions w in workloads)
                if (w.Check() is string bad) throw new ArgumentException(bad);
            if (r.GetValue(vs) is DeviceSpec other)
            {
                int n = r.GetValue(slices);
                if (n < 1) throw new ArgumentException("--slices must be at least 1");
                if (workloads.Any(w => w.RuntimeSeconds <= 0)) throw new ArgumentException("--vs needs a time-based run (--runtime)");
                return Compare(spec, other, workloads, n, r.GetValue(json));
            }
            return Execute(spec, workloads, r.GetValue(json));
        }));
        return cmd;
    }

    private static List<BenchOptions> DefaultSuite(BenchOptions t, double seconds, bool bsGiven) =>
    [
        t with { Rw = RwMode.RandRead, RuntimeSeconds = seconds },
        t with { Rw = RwMode.RandWrite, RuntimeSeconds = seconds },
        t with { Rw = RwMode.Read, BlockSize = bsGiven ? t.BlockSize : 1 << 20, RuntimeSeconds = seconds },
        t with { Rw = RwMode.Write, BlockSize = bsGiven ? t.BlockSize : 1 << 20, RuntimeSeconds = seconds },
    ];

    /// <summary>The default pmem namespace, created on first use.</summary>
    private static DeviceSpec DefaultDevice()
    {
        string path = Path.Combine(Cli.DataDirectory(), "bench-pmem0");
        if (!File.Exists(path))
        {
            Console.Error.WriteLine($"creating a {SizeParser.Format(DefaultNamespaceSize)} pmem namespace at {path}");
            PmemNamespace.Create(path, new NamespaceCreateOptions { Size = DefaultNamespaceSize, Name = "bench" }).Dispose();
        }
        return DeviceSpec.Parse("pmem:" + DeviceSpec.Quote(path));
    }

    private static int Execute(DeviceSpec spec, List<BenchOptions> workloads, bool json)
    {
        using var devices = new DeviceSet();
        IBlockDevice dev = devices.Acquire(spec).Device;
        var results = new List<BenchResult>();
        bool live = !json && !Console.IsOutputRedirected && AnsiConsole.Profile.Capabilities.Interactive;
        if (!json) Console.WriteLine($"device: {dev.Description}");
        foreach (BenchOptions w in workloads)
        {
            BenchResult result = live ? RunWithProgress(dev, w) : new BenchRunner(dev, w).Run();
            results.Add(result);
            if (!json) PrintText(result);
            if (result.Error is not null) break;
        }
        if (json)
        {
            var doc = new JsonObject
            {
                ["fio version"] = "pfnblock-bench-1",
                ["timestamp"] = DateTimeOffset.UtcNow.ToUnixTimeSeconds(),
                ["jobs"] = new JsonArray(results.Select(r => (JsonNode)r.ToJson()).ToArray()),
            };
            Console.WriteLine(doc.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
        }
        else if (results.Count > 1) PrintSummary(results);
        string? error = results.Select(r => r.Error).FirstOrDefault(e => e is not null);
        if (error is not null)
        {
            Console.Error.WriteLine($"pfnblock: error: {error}");
            return Cli.ExitFailure;
        }
        return 0;
    }

    private static int Compare(DeviceSpec a, DeviceSpec b, List<BenchOptions> workloads, int slices, bool json)
    {
        // One set: a table naming A's spec shares A's open device, as in a server.
        using var devices = new DeviceSet();
        IBlockDevice da = devices.Acquire(a).Device, db = devices.Acquire(b).Device;
        if (!json) Console.WriteLine($"A: {da.Description}\nB: {db.Description}");
        var results = new List<BenchComparison.Result>();
        foreach (BenchOptions w in workloads)
        {
            BenchComparison.Result r = new BenchComparison(da, db, w, slices).Run();
            results.Add(r);
            if (!json) Console.WriteLine(r);
        }
        if (json) Console.WriteLine(new JsonObject { ["comparisons"] = new JsonArray([.. results.Select(r => (JsonNode)r.ToJson())]) }.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
        return 0;
    }

    private static BenchResult RunWithProgress(IBlockDevice dev, BenchOptions w)
    {
        BenchResult? result = null;
        AnsiConsole.Progress()
            .AutoClear(true)
            .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new RemainingTimeColumn())
            .Start(ctx =>
            {
                ProgressTask task = ctx.AddTask(Label(w), maxValue: w.RuntimeSeconds > 0 ? w.RuntimeSeconds : 1);
                var runner = new BenchRunner(dev, w)
                {
                    Progress = (elapsed, bytes, ios) =>
                    {
                        task.Value = w.RuntimeSeconds > 0 ? Math.Min(elapsed, w.RuntimeSeconds) : 0;
                        task.Description = $"{Label(w)}  {Iops(ios / Math.Max(elapsed, 1e-9))} IOPS  {Bandwidth(bytes / Math.Max(elapsed, 1e-9))}";
                    },
                };
                result = runner.Run();
                task.Value = task.MaxValue;
            });
        return result!;
    }

    private static string Label(BenchOptions w) => $"{w.RwName} bs={SizeParser.Format(w.BlockSize)} iodepth={w.IoDepth} jobs={w.Jobs}";

    private static void PrintText(BenchResult r)
    {
        Console.WriteLine($"{Label(r.Options)}{(r.Options.Verify ? " verify" : "")}{(r.Options.Fua ? " fua" : "")}:");
        foreach ((string name, DirectionResult d) in new[] { ("read", r.Read), ("write", r.Write) })
        {
            if (d.Ios == 0) continue;
            Console.WriteLine($"  {name}: IOPS={Iops(d.Iops)}, BW={Bandwidth(d.BytesPerSecond)} ({d.Ios} ios in {d.Seconds:F2}s)");
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"    lat (ns): min={d.Percentile(0)}, avg={d.Mean:F0}, max={d.Max}, stdev={d.StdDev:F0}"));
            Console.WriteLine($"    lat percentiles (ns): 50th={d.Percentile(50)}, 90th={d.Percentile(90)}, 99th={d.Percentile(99)}, 99.9th={d.Percentile(99.9)}, 99.99th={d.Percentile(99.99)}");
        }
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"  allocated: {r.AllocatedBytesPerIo:F3} bytes/IO   cpu: usr={r.CpuPercent.User:F1}% sys={r.CpuPercent.System:F1}% ({r.CpuSecondsUser:F2}s + {r.CpuSecondsSystem:F2}s, {r.CpuNanosPerIo:F0} ns/IO)   requeued (Busy): {r.Requeues}"));
    }

    private static void PrintSummary(List<BenchResult> results)
    {
        var table = new Table().AddColumns("workload", "IOPS", "bandwidth", "p50 lat", "p99 lat", "CPU/IO", "bytes alloc/IO");
        foreach (BenchResult r in results)
        {
            DirectionResult d = r.Read.Ios >= r.Write.Ios ? r.Read : r.Write;
            table.AddRow($"{r.Options.RwName} {SizeParser.Format(r.Options.BlockSize)} qd{r.Options.IoDepth} j{r.Options.Jobs}", Iops(r.Read.Iops + r.Write.Iops), Bandwidth(r.Read.BytesPerSecond + r.Write.BytesPerSecond),
                $"{d.Percentile(50)} ns", $"{d.Percentile(99)} ns", $"{r.CpuNanosPerIo:F0} ns", r.AllocatedBytesPerIo.ToString("F3", CultureInfo.InvariantCulture));
        }
        AnsiConsole.Write(table);
    }

    private static string Iops(double v) => v >= 1e6 ? $"{v / 1e6:F2}M" : v >= 1e3 ? $"{v / 1e3:F1}k" : $"{v:F0}";
    private static string Bandwidth(double bytesPerSecond) => bytesPerSecond >= 1 << 30
        ? $"{bytesPerSecond / (1 << 30):F2} GiB/s"
        : $"{bytesPerSecond / (1 << 20):F1} MiB/s";
}
