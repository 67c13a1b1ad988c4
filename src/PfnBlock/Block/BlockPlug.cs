namespace PfnBlock.Block;

/// <summary>
/// Plugging, the kernel's <c>blk_start_plug</c> / <c>blk_finish_plug</c>: a thread that is about to
/// submit several bios opens a plug, and the bios it submits to a device that carries out batches
/// better than single bios wait on the thread until the plug closes (or holds
/// <see cref="MaxBios"/>); then each device gets its bios in one call (the kernel's
/// <c>queue_rqs</c>, here <see cref="BlockDevice"/>'s <c>SubmitBatchCore</c>).
/// </summary>
/// <remarks>
/// <para>Why: a memory device completes a bio before its submit returns, so one bio at a time is one
/// 4 KiB copy at a time, with the block layer's and the submitter's code between two copies. The
/// out-of-order core cannot reach the next copy's loads across that code, so every copy starts
/// with its page walk and first cache misses exposed. Given the whole batch, the device copies the
/// bios side by side and their misses overlap (docs/BENCHMARKS.md §1).</para>
/// <para>What changes for the submitter: under a plug, <see cref="IBlockDevice.Submit"/> of a
/// <see cref="DeviceFeatures.Synchronous"/> device may return before the bio completed; it
/// completes, on this thread, by the time <see cref="Finish"/> returns. A submission whose caller
/// blocks on the result (<c>SubmitAndWait</c>, a target's nested submission) never waits in the
/// plug. Devices that do not take batches, and bios other than reads and writes, are not plugged.</para>
/// </remarks>
public static class BlockPlug
{
    /// <summary>Bios a plug holds before it flushes itself (the kernel's <c>BLK_MAX_REQUEST_COUNT</c>).</summary>
    public const int MaxBios = 32;

    /// <summary>Opens a plug on the calling thread (nestable); only the outermost <see cref="Finish"/> flushes it.</summary>
    public static void Start() => BlockThread.Current.PlugDepth++;

    /// <summary>Closes a plug opened by <see cref="Start"/>; the outermost submits every bio waiting in it.</summary>
    /// <exception cref="InvalidOperationException">No plug is open on this thread.</exception>
    public static void Finish()
    {
        BlockThread t = BlockThread.Current;
        if (t.PlugDepth == 0) throw new InvalidOperationException("BlockPlug.Finish without a matching Start on this thread");
        if (--t.PlugDepth == 0 && t.PluggedCount > 0) BlockDevice.FlushPlug(t);
    }
}
