using System.Text.Json.Nodes;
using PfnBlock.Block;
using PfnBlock.Targets.WriteCache;

namespace PfnBlock.Management.Control.Commands;

/// <summary>
/// <c>writecache [DEVICE [status|pause|resume|writeback|cleaner on|off]]</c>: the state of every
/// write cache the server serves (used, dirty, hits and misses, write-back rate, oldest dirty age,
/// errors, cleaner progress with its ETA), or one of them, and its controls: pause and resume
/// write-back, write everything back now (the reply comes when it is done), cleaner mode.
/// </summary>
public sealed class WriteCacheCommand : IRegisteredControlCommand
{
    private static readonly TimeSpan s_writebackWait = TimeSpan.FromMinutes(10);

    /// <inheritdoc/>
    public static ControlCommand Command { get; } = new("writecache", "[DEVICE [status|pause|resume|writeback|cleaner on|off]]",
        "write caches: status (used, dirty, hits, read cache, write-back rate, oldest dirty age, cleaner ETA), pause/resume write-back, write back now, cleaner mode", Run);

    private static JsonNode Run(ControlRequest request)
    {
        request.RequireArgs(0, 3);
        List<(string Label, WriteCacheTarget Cache)> caches = [.. request.Server.ServedDevices()
            .Where(d => d.Device is MappedDevice)
            .SelectMany(d => ((MappedDevice)d.Device).Table.Select(e => (d.Label, e.Target)))
            .Where(t => t.Target is WriteCacheTarget)
            .Select(t => (t.Label, (WriteCacheTarget)t.Target))];
        if (request.Args.Count == 0) return new JsonArray([.. caches.Select(c => (JsonNode?)Status(c.Label, c.Cache))]);
        string name = request.Args[0];
        (string label, WriteCacheTarget? cache) = caches.FirstOrDefault(c => c.Label == name);
        if (cache is null) throw new ControlException($"no write cache '{name}' (served: {(caches.Count == 0 ? "none" : string.Join(", ", caches.Select(c => c.Label)))})");
        string action = request.Args.Count > 1 ? request.Args[1] : "status";
        switch (action)
        {
            case "status": break;
            case "pause": cache.PauseWriteback(); break;
            case "resume": cache.ResumeWriteback(); break;
            case "writeback":
                if (!cache.WriteBackAll(s_writebackWait)) throw new ControlException($"write-back of '{name}' did not finish in {s_writebackWait.TotalMinutes} minutes: {cache.Status}");
                break;
            case "cleaner" when request.Args.Count == 3 && request.Args[2] is "on" or "off":
                cache.SetCleaner(request.Args[2] == "on");
                break;
            default: throw new ControlException($"unknown action '{string.Join(' ', request.Args.Skip(1))}' (status, pause, resume, writeback, cleaner on|off)");
        }
        return Status(label, cache);
    }

    private static JsonObject Status(string label, WriteCacheTarget cache)
    {
        WriteCacheStatus s = cache.Status;
        return new JsonObject
        {
            ["device"] = label,
            ["entries"] = s.Entries,
            ["used"] = s.Used,
            ["used_percent"] = Math.Round(s.UsedPercent, 1),
            ["dirty"] = s.Dirty,
            ["read_hits"] = s.ReadHits,
            ["read_misses"] = s.ReadMisses,
            ["write_hits"] = s.WriteHits,
            ["entries_logged"] = s.Writes,
            ["written_back"] = s.WrittenBack,
            ["writeback_blocks_per_second"] = Math.Round(s.WritebackBlocksPerSecond),
            ["oldest_dirty_seconds"] = s.OldestDirtyAge?.TotalSeconds,
            ["writeback_errors"] = s.WritebackErrors,
            ["last_writeback_error"] = s.LastWritebackError,
            ["cleaner"] = s.Cleaner,
            ["pass_through"] = s.PassThrough,
            ["paused"] = s.Paused,
            ["lost"] = s.Lost,
            ["writeback_eta_seconds"] = s.WritebackEta?.TotalSeconds,
            ["read_cache"] = s.ReadCache is { } rc
                ? new JsonObject
                {
                    ["percent"] = rc.Percent,
                    ["clean_blocks"] = rc.CleanBlocks,
                    ["hits"] = rc.Hits,
                    ["misses"] = s.ReadMisses,
                    ["inserts"] = rc.Inserts,
                    ["evictions"] = rc.Evictions,
                    ["dropped"] = rc.Dropped,
                    ["refused"] = rc.Refused,
                }
                : null,
            ["summary"] = s.ToString(),
        };
    }
}
