using System.Runtime.CompilerServices;

namespace PfnBlock.Memory;

/// <summary>
/// Switches the tracing of persistence events on for a thread (the crash-state explorer's input)
/// and is the hook the persistence primitives call.
/// </summary>
/// <remarks>
/// <para>Zero cost when off: every hook is written <c>if (PmemTrace.Enabled) PmemTrace.Stored(…)</c>,
/// and <see cref="Enabled"/> is a <c>static readonly</c> field read once per process (the AppContext
/// switch <c>PfnBlock.PmemTracing</c> or <c>PFNBLOCK_PMEM_TRACING=1</c>). The JIT treats an
/// initialised static readonly bool as a constant, so with tracing off the hooks are compiled out
/// of the primitives. Building with <c>-p:PfnBlockPmemTracing=false</c> removes them from the source
/// too; bench/crashtest-bench.sh compares the two builds.</para>
/// <para>When enabled, a hook costs a thread-static read while no recorder is active. Tracing
/// follows the thread that started it: a recorded workload is single-threaded, so its trace is one
/// program order.</para>
/// </remarks>
public static unsafe class PmemTrace
{
    /// <summary>The AppContext switch that enables tracing for the process.</summary>
    public const string SwitchName = "PfnBlock.PmemTracing";

#if PFNBLOCK_NO_PMEM_TRACE
    /// <summary>False: this build has no tracing hooks.</summary>
    public static bool Enabled => false;
#else
    private static readonly bool s_enabled =
        (AppContext.TryGetSwitch(SwitchName, out bool on) && on) || Environment.GetEnvironmentVariable("PFNBLOCK_PMEM_TRACING") == "1";

    /// <summary>
    /// True when this process may record traces (and honours the crash-test mutation switches);
    /// fixed at start-up so the JIT folds every hook away when false.
    /// </summary>
    public static bool Enabled
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        get => s_enabled;
    }
#endif

    [ThreadStatic]
    private static PmemTraceRecorder? t_recorder;

    /// <summary>The recorder active on this thread, if any.</summary>
    public static PmemTraceRecorder? Current => t_recorder;

    /// <summary>Makes <paramref name="recorder"/> record this thread's persistence events until the scope is disposed.</summary>
    /// <exception cref="InvalidOperationException">Tracing is not enabled in this process.</exception>
    public static PmemTraceScope Record(PmemTraceRecorder recorder)
    {
        ArgumentNullException.ThrowIfNull(recorder);
        if (!Enabled)
            throw new InvalidOperationException($"persistence tracing is off in this process: set the AppContext switch {SwitchName} (or PFNBLOCK_PMEM_TRACING=1) before start-up");
        PmemTraceRecorder? previous = t_recorder;
        t_recorder = recorder;
        return new PmemTraceScope(previous);
    }

    internal static void Restore(PmemTraceRecorder? previous) => t_recorder = previous;

    /// <summary>Records stores that left <paramref name="length"/> bytes at <paramref name="address"/>; call after the store.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static void Stored(byte* address, nuint length, bool nonTemporal) => t_recorder?.Store(address, length, nonTemporal);

    /// <summary>Records a write-back of the cache lines overlapping the range.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static void Flushed(byte* address, nuint length) => t_recorder?.Flush(address, length);

    /// <summary>Records a store fence.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static void Fenced() => t_recorder?.Fence();

    /// <summary>
    /// Records an msync of the range: every page it touches is written back and the call returns
    /// when they are durable, i.e. a flush of the pages' lines followed by a fence.
    /// </summary>
    internal static void Msynced(byte* address, nuint length)
    {
        PmemTraceRecorder? r = t_recorder;
        if (r is null) return;
        nint start = (nint)address & ~(nint)(Pfn.PageSize - 1);
        nint end = ((nint)address + (nint)length + Pfn.PageSize - 1) & ~(nint)(Pfn.PageSize - 1);
        r.Flush((byte*)start, (nuint)(end - start));
        r.Fence();
    }
}

/// <summary>Ends a <see cref="PmemTrace.Record"/> on dispose, reinstating the recorder that was active before.</summary>
public readonly struct PmemTraceScope : IDisposable
{
    private readonly PmemTraceRecorder? _previous;

    internal PmemTraceScope(PmemTraceRecorder? previous) => _previous = previous;

    /// <summary>Stops recording on this thread.</summary>
    public void Dispose() => PmemTrace.Restore(_previous);
}
