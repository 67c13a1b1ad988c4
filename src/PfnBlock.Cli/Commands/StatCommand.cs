using System.CommandLine;
using System.Globalization;
using System.Runtime.InteropServices;
using System.Text;
using System.Text.Json.Nodes;
using PfnBlock.Management.Control;

namespace PfnBlock.Cli.Commands;

/// <summary>
/// <c>pfnblock stat</c>: an iostat-like live view of a running server, from its control socket's
/// <c>stats</c>: per device r/s, w/s, rMB/s, wMB/s, r_await, w_await (ms), aqu-sz, %util and
/// requests in flight, every <c>--interval</c> seconds. The first report covers the time since the server
/// started (as iostat's first covers the time since boot), each later one the interval before it.
/// It runs until <c>--count</c> reports or SIGINT, which ends it with exit code 0.
/// </summary>
internal static partial class StatCommand
{
    /// <summary>The command's name, which <see cref="Program.Main"/> checks before the runtime sets up its signal handling.</summary>
    public const string Name = "stat";

    // <signal.h>
    private const int SIGINT = 2;
    private const nint SIG_DFL = 0;
    private const nint SIG_IGN = 1;

    [LibraryImport("libc", EntryPoint = "signal")]
    private static partial nint Signal(int signum, nint handler);

    /// <summary>
    /// Makes SIGINT reach stat even when stat was started with it ignored. A shell without job
    /// control (a script's <c>pfnblock stat &amp;</c>, a CI job, a test suite run in the background)
    /// starts its background commands with SIGINT ignored, and the runtime, like any Unix program,
    /// keeps an inherited SIG_IGN: <see cref="PosixSignalRegistration"/> then never sees the
    /// signal, and stat, whose stop is Ctrl-C, would ignore <c>kill -INT</c> and run forever. Like
    /// ping, stat takes SIGINT back. This must run before the first use of <see cref="Console"/>,
    /// <see cref="System.Diagnostics.Process"/> or <see cref="PosixSignalRegistration"/>: the
    /// runtime reads each signal's disposition once, when its signal handling starts, and leaves a
    /// signal it found ignored alone from then on. A SIGINT that arrives before this runs (while the
    /// runtime starts) is still ignored; one between this and the registration in <see cref="Run"/>
    /// ends stat by the default action.
    /// </summary>
    public static void TakeInterrupts()
    {
        // signal() both reads and sets; nothing in this process has a SIGINT handler yet, so the
        // previous disposition is SIG_DFL or SIG_IGN and SIG_DFL is right either way.
        nint previous = Signal(SIGINT, SIG_DFL);
        if (previous != SIG_DFL && previous != SIG_IGN) Signal(SIGINT, previous);
    }

    public static Command Create()
    {
        var control = ControlOption();
        var interval = new Option<double>("--interval") { Description = "Seconds between reports.", DefaultValueFactory = _ => 1 };
        var count = new Option<int?>("--count") { Description = "Stop after N reports (default: until Ctrl-C)." };
        var json = new Option<bool>("--json") { Description = "One JSON object per report, on one line." };
        var cmd = new Command(Name, "Show a running server's devices like iostat (r/s, w/s, MB/s, await, queue size, %util, in flight), over its control socket.")
        {
            control, interval, count, json,
        };
        cmd.SetAction(r => Cli.Run(() =>
        {
            double seconds = r.GetValue(interval);
            if (!(seconds is > 0 and <= 86400)) throw new ArgumentException("--interval must be between 0 and 86400 seconds");
            int? reports = r.GetValue(count);
            if (reports is <= 0) throw new ArgumentException("--count must be positive");
            return Run(r.GetValue(control) ?? ServeCommand.DefaultControlSocket(), TimeSpan.FromSeconds(seconds), reports, r.GetValue(json));
        }));
        return cmd;
    }

    /// <summary>The <c>--control PATH</c> option of the control socket's clients.</summary>
    public static Option<string?> ControlOption() => new("--control")
    {
        Description = $"The server's control socket (default: {ServeCommand.ControlSocketName} in the data directory, where 'serve' puts it).",
    };

    private static int Run(string path, TimeSpan interval, int? reports, bool json)
    {
        using var stop = new ManualResetEventSlim();
        using PosixSignalRegistration sigint = PosixSignalRegistration.Create(PosixSignal.SIGINT, c => { c.Cancel = true; stop.Set(); });
        using ControlClient client = ControlClient.Connect(path);
        JsonObject? before = null;
        DateTime next = DateTime.UtcNow;
        for (int n = 0; reports is null || n < reports; n++)
        {
            if (n > 0)
            {
                next += interval;
                TimeSpan wait = next - DateTime.UtcNow;
                if (stop.Wait(wait > TimeSpan.Zero ? wait : TimeSpan.Zero)) break;
            }
            JsonObject now = Stats(client);
            // Later reports are due an interval apart from the first reply (the first may be slow: the server's code is cold).
            if (n == 0) next = DateTime.UtcNow;
            (double seconds, IReadOnlyList<DeviceRates> devices) = DeviceRates.Between(before, now);
            before = now;
            if (json)
            {
                var report = new JsonObject
                {
                    ["uptime_s"] = (now["uptime_ns"]?.GetValue<long>() ?? 0) / 1e9,
                    ["interval_s"] = seconds,
                    ["devices"] = new JsonArray([.. devices.Select(d => (JsonNode?)d.ToJson())]),
                };
                Console.WriteLine(report.ToJsonString());
            }
            else Console.Write(Table(devices, n == 0));
            Console.Out.Flush();
        }
        return 0;
    }

    private static JsonObject Stats(ControlClient client)
    {
        try
        {
            return client.Result("stats") as JsonObject ?? throw new IOException("the server's stats reply is not an object");
        }
        catch (ControlException e)
        {
            throw new IOException($"the server refused 'stats': {e.Message}", e);
        }
    }

    private static string Table(IReadOnlyList<DeviceRates> devices, bool first)
    {
        CultureInfo c = CultureInfo.InvariantCulture;
        int width = Math.Max("Device".Length, devices.Count == 0 ? 0 : devices.Max(d => d.Device.Length));
        var sb = new StringBuilder();
        if (!first) sb.AppendLine();
        sb.AppendLine(c, $"{"Device".PadRight(width)} {"r/s",10} {"w/s",10} {"rMB/s",9} {"wMB/s",9} {"r_await",8} {"w_await",8} {"aqu-sz",7} {"%util",6} {"inflight",8}");
        foreach (DeviceRates d in devices)
            sb.AppendLine(c, $"{d.Device.PadRight(width)} {d.ReadsPerSecond,10:F1} {d.WritesPerSecond,10:F1} {d.ReadMiBPerSecond,9:F2} {d.WriteMiBPerSecond,9:F2} {d.ReadAwaitMs,8:F3} {d.WriteAwaitMs,8:F3} {d.AverageQueueSize,7:F2} {d.UtilPercent,6:F1} {d.InFlight,8}");
        return sb.ToString();
    }
}
