using System.Globalization;
using System.Text.Json.Nodes;
using PfnBlock.Management.Control;
using Spectre.Console;

namespace PfnBlock.Cli.Commands;

/// <summary>
/// <c>pfnblock ctl md [NAME …] --watch</c>: follows the md arrays' resync, rebuild and check until
/// none runs or waits, polling the control socket's <c>md</c> status. On a terminal, one live
/// progress bar per array with its speed and ETA; otherwise one progress line per array a second.
/// </summary>
internal static class MdWatch
{
    private static readonly TimeSpan s_poll = TimeSpan.FromMilliseconds(250);

    /// <summary>Watches <paramref name="name"/> (null: every array) until idle; prints the final status lines.</summary>
    public static void Run(ControlClient client, string? name)
    {
        bool live = !Console.IsOutputRedirected && AnsiConsole.Profile.Capabilities.Interactive;
        if (live) RunLive(client, name);
        else RunLines(client, name);
        foreach (JsonObject a in Poll(client, name)) Console.WriteLine(a["summary"]!.GetValue<string>());
    }

    private static List<JsonObject> Poll(ControlClient client, string? name)
    {
        JsonNode? result = name is null ? client.Result("md") : client.Result("md", name, "status");
        return name is null ? [.. result!["arrays"]!.AsArray().OfType<JsonObject>()] : [result!.AsObject()];
    }

    /// <summary>True while the array syncs or has a sync waiting (a failed array never syncs again).</summary>
    private static bool Busy(JsonObject a) => a["state"]!.GetValue<string>() != "failed"
        && (a["sync_action"]!.GetValue<string>() != "idle" || a["sync_pending"]!.AsArray().Count > 0);

    /// <summary>"recovery 41.2% 120000K/sec ETA 0:12" for a syncing array.</summary>
    private static string Progress(JsonObject a, out double percent)
    {
        string action = a["sync_action"]!.GetValue<string>();
        long done = a["sync_done_sectors"]!.GetValue<long>(), total = a["sync_total_sectors"]!.GetValue<long>();
        long speed = a["sync_speed_kib"]!.GetValue<long>();
        percent = action == "idle" ? 0 : total == 0 ? 100 : 100.0 * done / total;
        if (action == "idle") return $"{a["name"]}: waiting ({string.Join(", ", a["sync_pending"]!.AsArray().Select(p => p!.GetValue<string>()))})";
        string eta = speed > 0 ? TimeSpan.FromSeconds((total - done) / 2.0 / speed).ToString(@"h\:mm\:ss", CultureInfo.InvariantCulture) : "?";
        return string.Create(CultureInfo.InvariantCulture, $"{a["name"]}: {action} {percent:F1}% ({done}/{total}) {speed}K/sec ETA {eta}");
    }

    private static void RunLines(ControlClient client, string? name)
    {
        long nextLine = 0;
        while (true)
        {
            List<JsonObject> arrays = Poll(client, name);
            List<JsonObject> busy = [.. arrays.Where(Busy)];
            if (busy.Count == 0) return;
            if (Environment.TickCount64 >= nextLine)
            {
                foreach (JsonObject a in busy) Console.WriteLine(Progress(a, out _));
                nextLine = Environment.TickCount64 + 1000;
            }
            Thread.Sleep(s_poll);
        }
    }

    private static void RunLive(ControlClient client, string? name)
    {
        AnsiConsole.Progress()
            .AutoClear(true)
            .Columns(new TaskDescriptionColumn { Alignment = Justify.Left }, new ProgressBarColumn(), new PercentageColumn())
            .Start(ctx =>
            {
                var tasks = new Dictionary<string, ProgressTask>(StringComparer.Ordinal);
                while (true)
                {
                    List<JsonObject> arrays = Poll(client, name);
                    if (!arrays.Any(Busy)) return;
                    foreach (JsonObject a in arrays)
                    {
                        string key = a["device"]!.GetValue<string>();
                        if (!tasks.TryGetValue(key, out ProgressTask? task))
                        {
                            if (!Busy(a)) continue;
                            tasks[key] = task = ctx.AddTask(key, maxValue: 100);
                        }
                        task.Description = Markup.Escape(Progress(a, out double percent));
                        task.Value = Busy(a) ? percent : 100;
                    }
                    Thread.Sleep(s_poll);
                }
            });
    }
}
