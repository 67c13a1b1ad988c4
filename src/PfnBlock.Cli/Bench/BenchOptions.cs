using PfnBlock.Devices;

namespace PfnBlock.Cli.Bench;

/// <summary>The access pattern of a workload (fio's --rw).</summary>
public enum RwMode
{
    /// <summary>Sequential reads.</summary>
    Read,
    /// <summary>Sequential writes.</summary>
    Write,
    /// <summary>Uniformly random reads.</summary>
    RandRead,
    /// <summary>Uniformly random writes.</summary>
    RandWrite,
    /// <summary>Random mix of reads and writes (see <see cref="BenchOptions.ReadMixPercent"/>).</summary>
    RandRw,
}

/// <summary>One benchmark workload, as given on the command line.</summary>
public sealed record BenchOptions
{
    /// <summary>The device to run on.</summary>
    public required DeviceSpec Device { get; init; }
    /// <summary>Access pattern.</summary>
    public RwMode Rw { get; init; } = RwMode.RandRead;
    /// <summary>Block size in bytes.</summary>
    public int BlockSize { get; init; } = 4096;
    /// <summary>I/Os each job keeps in flight.</summary>
    public int IoDepth { get; init; } = 1;
    /// <summary>Parallel jobs (threads).</summary>
    public int Jobs { get; init; } = 1;
    /// <summary>Measured seconds for a time-based run; 0 for a size-based one.</summary>
    public double RuntimeSeconds { get; init; }
    /// <summary>Unmeasured warm-up seconds before a time-based run.</summary>
    public double RampSeconds { get; init; }
    /// <summary>Bytes of the device each job addresses (and, in a size-based run, transfers); 0 = whole device.</summary>
    public long Size { get; init; }
    /// <summary>Percentage of reads in <see cref="RwMode.RandRw"/>.</summary>
    public int ReadMixPercent { get; init; } = 50;
    /// <summary>Write self-checking patterns and check every read.</summary>
    public bool Verify { get; init; }
    /// <summary>Set FUA on every write.</summary>
    public bool Fua { get; init; }
    /// <summary>
    /// Submit polled bios and reap their completions on the job's own thread (<see cref="PfnBlock.Block.BlockPoll"/>),
    /// as fio's engines do; devices that cannot poll complete them as usual. Off: every completion comes from the device's thread.
    /// </summary>
    public bool Poll { get; init; } = true;
    /// <summary>
    /// Submit the I/Os a job issues together under one <see cref="PfnBlock.Block.BlockPlug"/>, with one
    /// clock read for their start, as io_uring submits a batch in one call; a memory device then
    /// copies them side by side. Matters at iodepth above 1. Off: each I/O is submitted on its own.
    /// </summary>
    public bool Plug { get; init; } = true;
    /// <summary>Seed for offsets and patterns.</summary>
    public ulong Seed { get; init; } = 0x5eed_cafe_f00dUL;

    /// <summary>True for patterns that read.</summary>
    public bool HasReads => Rw is RwMode.Read or RwMode.RandRead or RwMode.RandRw;
    /// <summary>True for patterns that write.</summary>
    public bool HasWrites => Rw is RwMode.Write or RwMode.RandWrite or RwMode.RandRw;
    /// <summary>True for random patterns.</summary>
    public bool IsRandom => Rw is RwMode.RandRead or RwMode.RandWrite or RwMode.RandRw;

    /// <summary>fio's name of the pattern.</summary>
    public string RwName => Rw.ToString().ToLowerInvariant();

    /// <summary>Checks the combination; null when valid, else the reason.</summary>
    public string? Check()
    {
        if (BlockSize <= 0 || BlockSize % 512 != 0) return $"--bs {BlockSize} must be a positive multiple of 512";
        if (BlockSize > 64 << 20) return $"--bs {BlockSize} is larger than 64M";
        if (IoDepth is < 1 or > 1024) return $"--iodepth {IoDepth} must be between 1 and 1024";
        if (Jobs is < 1 or > 256) return $"--jobs {Jobs} must be between 1 and 256";
        if (RuntimeSeconds < 0 || RampSeconds < 0) return "--runtime and --ramp must not be negative";
        if (ReadMixPercent is < 0 or > 100) return $"--rwmixread {ReadMixPercent} must be between 0 and 100";
        if (Size < 0) return "--size must be positive";
        return null;
    }
}
