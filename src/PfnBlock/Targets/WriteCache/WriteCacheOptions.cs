using System.Globalization;
using System.Text;
using PfnBlock.Devices;

namespace PfnBlock.Targets.WriteCache;

/// <summary>
/// The optional arguments of a <c>writecache</c> table line, in dm-writecache's syntax: a count of
/// the words that follow, then <c>name</c> or <c>name value</c> pairs, e.g.
/// <c>4 high_watermark 60 low_watermark 40</c> or <c>1 cleaner</c>.
/// </summary>
public sealed record WriteCacheOptions
{
    /// <summary>Write-back starts when this percentage of the cache is in use (dm: <c>high_watermark</c>, default 50).</summary>
    public int HighWatermark { get; init; } = 50;
    /// <summary>Watermark-driven write-back stops when use falls to this percentage (dm: <c>low_watermark</c>, default 45).</summary>
    public int LowWatermark { get; init; } = 45;
    /// <summary>Most blocks written back in one batch (one run of the log; dm: <c>writeback_jobs</c>, default 256).</summary>
    public int WritebackJobs { get; init; } = 256;
    /// <summary>
    /// Milliseconds after which writes not followed by a flush are committed (made durable) anyway
    /// (dm: <c>autocommit_time</c>, default 1000; 0 = never). A commit is no flush: it does not end
    /// the flush epoch. Checked by the write-back thread when it is idle.
    /// </summary>
    public int AutocommitMs { get; init; } = 1000;
    /// <summary>
    /// Plain (not FUA) blocks written after which the writer commits them (dm: <c>autocommit_blocks</c>,
    /// default 64 as dm's for pmem; 0 = never). Bounds the unflushed writes a crash may lose, at
    /// the cost of one commit (a fence and an 8-byte store, or an msync) per that many blocks.
    /// </summary>
    public int AutocommitBlocks { get; init; } = 64;
    /// <summary>Write-back waits while foreground writes came in the last this many milliseconds, unless above the high watermark (dm: <c>pause_writeback</c>; 0 = never, the default).</summary>
    public int PauseWritebackMs { get; init; }
    /// <summary>Data older than this many milliseconds is written back whatever the watermarks say (dm: <c>max_age</c>; 0 = no limit, the default).</summary>
    public int MaxAgeMs { get; init; }
    /// <summary>
    /// When the cache is full and write-back has been failing for this many milliseconds (the
    /// origin is gone: a dead cluster, a failed disk), writes that need a slot fail with an I/O
    /// error instead of waiting without end; what the cache holds stays there. 0 = wait forever.
    /// Default 30000. Not a dm-writecache option (dm waits); <c>stall_timeout</c> in a table.
    /// </summary>
    public int StallTimeoutMs { get; init; } = 30000;
    /// <summary>
    /// Read caching of origin data (ours, not dm-writecache's; dm-pcache does it): 0, the default,
    /// is off; PCT from 1 to 100 keeps clean copies of blocks read from the origin in the free slots
    /// of the last PCT percent of the log ahead of its tail, in DRAM only (see <see cref="WriteCacheReadCache"/>).
    /// <c>read_cache PCT</c> in a table; <c>100 - high_watermark</c> keeps them out of the dirty data's way.
    /// </summary>
    public int ReadCachePercent { get; init; }
    /// <summary>Write everything back, then pass writes straight to the origin (dm: <c>cleaner</c>).</summary>
    public bool Cleaner { get; init; }
    /// <summary>Words the line gave (printed back in the same form).</summary>
    private string[] Words { get; init; } = [];

    /// <summary>Parses <paramref name="words"/> (the words after the count); the error names the bad word.</summary>
    /// <exception cref="TargetException">An unknown option, a missing or bad value, or inconsistent watermarks.</exception>
    public static WriteCacheOptions Parse(IReadOnlyList<string> words)
    {
        var o = new WriteCacheOptions { Words = [.. words] };
        for (int i = 0; i < words.Count; i++)
        {
            string name = words[i];
            if (name == "cleaner") { o = o with { Cleaner = true }; continue; }
            if (i + 1 >= words.Count) throw TargetContext.Fail($"Missing value for optional argument '{name}'");
            string text = words[++i];
            if (!int.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out int v))
                throw TargetContext.Fail($"Invalid value for '{name}': '{text}'");
            o = name switch
            {
                "high_watermark" when v <= 100 => o with { HighWatermark = v },
                "low_watermark" when v <= 100 => o with { LowWatermark = v },
                "writeback_jobs" when v is >= 1 and <= 1 << 20 => o with { WritebackJobs = v },
                "autocommit_time" => o with { AutocommitMs = v },
                "autocommit_blocks" => o with { AutocommitBlocks = v },
                "pause_writeback" => o with { PauseWritebackMs = v },
                "max_age" => o with { MaxAgeMs = v },
                "stall_timeout" => o with { StallTimeoutMs = v },
                "read_cache" when v <= 100 => o with { ReadCachePercent = v },
                "read_cache" => throw TargetContext.Fail($"Invalid read_cache: '{text}' (a percentage of the cache from 0, off, to 100)"),
                "high_watermark" or "low_watermark" => throw TargetContext.Fail($"Invalid {name}: '{text}' (a percentage from 0 to 100)"),
                "writeback_jobs" => throw TargetContext.Fail($"Invalid writeback_jobs: '{text}' (from 1 to {1 << 20})"),
                _ => throw TargetContext.Fail($"Invalid optional argument '{name}' (known: high_watermark, low_watermark, writeback_jobs, autocommit_blocks, autocommit_time, pause_writeback, max_age, stall_timeout, read_cache, cleaner)"),
            };
        }
        if (o.LowWatermark > o.HighWatermark)
            throw TargetContext.Fail($"Invalid watermarks: low_watermark {o.LowWatermark} is above high_watermark {o.HighWatermark}");
        return o;
    }

    /// <summary>The optional arguments as the table gave them, count first (<c>0</c> for none).</summary>
    public override string ToString()
    {
        var sb = new StringBuilder().Append(Words.Length);
        foreach (string w in Words) sb.Append(' ').Append(w);
        return sb.ToString();
    }
}
