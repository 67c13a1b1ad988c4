using System.Runtime.CompilerServices;
using PfnBlock.Memory;

namespace PfnBlock.Block;

/// <summary>
/// The common edge of every device: validates a bio once (op, bounds, alignment, read-only),
/// splits bios larger than the driver takes, strips flush flags a device without a volatile
/// cache does not need, accounts the I/O, requeues what the driver answers
/// <see cref="BlockStatus.Busy"/>, then hands the bio to <see cref="SubmitCore"/>.
/// Drivers may therefore assume every bio they see is well-formed.
/// </summary>
/// <remarks>
/// <para><b>Dispatch.</b> A bio submitted while the same thread is already inside a
/// <see cref="Submit"/> (a stacked target passing a bio down, a completion callback submitting the
/// next request) is queued on the thread and dispatched by the outermost <see cref="Submit"/> once
/// the current bio is done with (the kernel's <c>current-&gt;bio_list</c>): a stack of any depth,
/// or a completion that submits, never grows the call stack. The outermost <see cref="Submit"/>
/// returns only after everything queued on its thread was dispatched, so a
/// <see cref="DeviceFeatures.Synchronous"/> device has still completed the bio when it returns.</para>
/// <para><b>Requeue.</b> A driver (or a target) that cannot take a bio now completes it with
/// <see cref="BlockStatus.Busy"/>; the core puts it on this device's requeue list (the kernel's
/// requeue list, SPDK's io_wait) and resubmits it when another bio of this device completes, or
/// after <see cref="RequeueDelay"/> if none is in flight. Submitters never see Busy.</para>
/// </remarks>
public abstract class BlockDevice : IBlockDevice
{
    /// <summary>How long a requeued bio waits when no completion on the device kicks it earlier.</summary>
    public static readonly TimeSpan RequeueDelay = TimeSpan.FromMilliseconds(1);


    private int _disposed;
    private readonly Lock _requeueLock = new();
    private Bio? _requeueHead;
    private Bio? _requeueTail;
    private int _requeued;

    /// <summary>Initialises the common state.</summary>
    protected BlockDevice(string name, PhysicalAddressSpace? addressSpace)
    {
        Name = name;
        AddressSpace = addressSpace ?? PhysicalAddressSpace.Shared;
    }

    /// <inheritdoc/>
    public string Name { get; }
    /// <inheritdoc/>
    public abstract long CapacitySectors { get; }
    /// <inheritdoc/>
    public long CapacityBytes => CapacitySectors << Bio.SectorShift;
    /// <inheritdoc/>
    public abstract DeviceLimits Limits { get; }
    /// <inheritdoc/>
    public abstract DeviceFeatures Features { get; }
    /// <inheritdoc/>
    public DiskStats Stats { get; } = new();
    /// <inheritdoc/>
    public PhysicalAddressSpace AddressSpace { get; }
    /// <inheritdoc/>
    public virtual string Description => $"{GetType().Name} {Name} ({CapacityBytes} bytes)";

    /// <summary>The pool that splits of oversized bios come from.</summary>
    protected BioPool SplitPool { get; } = BioPool.Shared;

    /// <summary>True once <see cref="Dispose()"/> began: new bios fail with <see cref="BlockStatus.IoError"/>.</summary>
    protected bool IsDisposed => Volatile.Read(ref _disposed) != 0;

    /// <inheritdoc/>
    public void Submit(Bio bio)
    {
        bio.PrepareSubmit();
        BlockThread t = BlockThread.Current;
        if (t.Dispatching)
        {
            t.Enqueue(bio, this);
            return;
        }
        RunDispatchLoop(t, bio);
    }

    /// <summary>
    /// Submits <paramref name="bio"/> and dispatches it (and whatever it queues) before returning,
    /// even when called from inside another dispatch: for callers that block on the result.
    /// </summary>
    internal void SubmitNested(Bio bio) => SubmitNested(bio, BlockThread.Current);

    private void SubmitNested(Bio bio, BlockThread t)
    {
        bio.PrepareSubmit();
        // Its caller waits for it (or relies on it having completed): it must not wait in a plug.
        t.PlugBypass++;
        try
        {
            if (!t.Dispatching) { RunDispatchLoop(t, bio); return; }
            BlockThread.QueueState outer = t.SaveQueue();
            t.Nesting++;
            try { RunDispatchLoop(t, bio); }
            finally
            {
                t.Nesting--;
                t.RestoreQueue(outer);
            }
        }
        finally { t.PlugBypass--; }
    }

    /// <summary>Nested dispatch loops <see cref="SubmitNow"/> opens before it queues instead, bounding the stack as the queue does.</summary>
    private const int MaxNesting = 4;

    /// <summary>
    /// Submits <paramref name="bio"/> to <paramref name="device"/> and, where it can, dispatches it
    /// before returning even from inside another dispatch (<see cref="SubmitNested(Bio)"/>): a fan-out
    /// target (a mirror's legs) then sees every leg that completes inline complete while its
    /// submitting call still holds the request, and can settle them with plain stores instead of
    /// locked instructions, each of which would wait for the leg's non-temporal stores to drain.
    /// Past <see cref="MaxNesting"/> nested loops, or for a device outside this assembly, the bio
    /// is queued as <see cref="Submit"/> would.
    /// </summary>
    internal static void SubmitNow(IBlockDevice device, Bio bio)
    {
        if (device is BlockDevice bd && BlockThread.Current is { Nesting: < MaxNesting } t) bd.SubmitNested(bio, t);
        else device.Submit(bio);
    }

    private void RunDispatchLoop(BlockThread t, Bio bio)
    {
        t.Dispatching = true;
        try
        {
            Dispatch(bio, t);
            while (t.Head is Bio next)
            {
                BlockDevice device = t.Dequeue(next);
                device.Dispatch(next, t);
            }
        }
        finally
        {
            t.Dispatching = false;
        }
    }

    /// <summary>
    /// Validates, accounts and hands a bio to the driver. A stacked device that remaps the bio in
    /// place names the lower device, and the loop goes on there: a chain of remaps costs neither a
    /// queue round trip nor a stack frame per level.
    /// </summary>
    private void Dispatch(Bio bio, BlockThread t)
    {
        BlockDevice device = this;
        bool checkedAbove = false;
        while (true)
        {
            DeviceFeatures features = device.Features;
            DeviceLimits limits = device.Limits;
            // A remap the target vouches for already met this device's limits at the level above
            // (stacked limits are the strictest of the lower devices'); only its liveness is new.
            BlockStatus status = !checkedAbove ? device.Validate(bio, features, limits)
                : Volatile.Read(ref device._disposed) != 0 ? BlockStatus.IoError : BlockStatus.Ok;
            if (status != BlockStatus.Ok) { bio.Complete(status); return; }

            if ((features & DeviceFeatures.WriteCache) == 0)
            {
                // Nothing volatile to flush: an empty flush is already done, and the flags are moot.
                bio.Flags &= ~(BioFlags.Preflush | BioFlags.Fua);
                if (bio.Op == BioOp.Flush) { bio.Complete(BlockStatus.Ok); return; }
            }

            long start = bio.PushDevice(device);
            device.Stats.Start(bio.Op, start, t);
            uint max = (uint)limits.MaxBytesPerBio;
            if (bio.Size > max && bio.Op is BioOp.Read or BioOp.Write)
            {
                device.SubmitSplit(bio, max);
                return;
            }
            if (t.Plugging && bio.Op is BioOp.Read or BioOp.Write && device.TakesBatches)
            {
                if (t.Plug(bio, device)) FlushPlug(t);
                return;
            }
            BlockDevice? lower = device.SubmitOrRemap(bio, out checkedAbove);
            if (lower is null) return;
            device = lower;
        }
    }

    /// <summary>
    /// Hands a validated bio to the driver (<see cref="SubmitCore"/>); a stacked device in this
    /// assembly may instead remap it in place and return the lower device to dispatch it to next.
    /// </summary>
    /// <param name="bio">The validated bio.</param>
    /// <param name="checkedRemap">Set when the remapped bio is known to fit the lower device's bounds and limits.</param>
    private protected virtual BlockDevice? SubmitOrRemap(Bio bio, out bool checkedRemap)
    {
        checkedRemap = false;
        SubmitCore(bio);
        return null;
    }

    /// <summary>
    /// Carries out a validated bio and calls <see cref="Bio.Complete"/> exactly once (also with
    /// <see cref="BlockStatus.Busy"/>, which the core requeues).
    /// </summary>
    protected abstract void SubmitCore(Bio bio);

    /// <summary>
    /// True when the driver carries out several bios together faster than one by one
    /// (<see cref="SubmitBatchCore"/>): reads and writes submitted under a <see cref="BlockPlug"/>
    /// then wait in the plug. Read on the plugged path only.
    /// </summary>
    protected virtual bool TakesBatches => false;

    /// <summary>
    /// Carries out validated bios that waited in a plug (the kernel's <c>queue_rqs</c>): reads and
    /// writes, in the order submitted, each completed exactly once as by <see cref="SubmitCore"/>.
    /// Bios in flight together have no order among them. Default: one by one.
    /// </summary>
    protected virtual void SubmitBatchCore(ReadOnlySpan<Bio> bios)
    {
        foreach (Bio bio in bios) SubmitCore(bio);
    }

    /// <summary>
    /// Submits the bios waiting in the thread's plug, each device's in one <see cref="SubmitBatchCore"/>
    /// call, then (outside a dispatch loop) dispatches whatever their completions submitted.
    /// </summary>
    internal static void FlushPlug(BlockThread t)
    {
        if (t.Dispatching)
        {
            SubmitPlugged(t); // the running loop dispatches what the completions queue
            return;
        }
        t.Dispatching = true;
        try
        {
            SubmitPlugged(t);
            while (t.Head is Bio next)
            {
                BlockDevice device = t.Dequeue(next);
                device.Dispatch(next, t);
            }
        }
        finally
        {
            t.Dispatching = false;
        }
    }

    private static void SubmitPlugged(BlockThread t)
    {
        int n = t.PluggedCount;
        Bio[] bios = t.Plugged;
        BlockDevice[] devices = t.PluggedDevices;
        // Completions only queue on the thread while the plug empties; nothing joins it meanwhile.
        t.PlugBypass++;
        try
        {
            int start = 0;
            while (start < n)
            {
                // Gather this device's bios behind its first one, keeping their order (kernel: plug list sort).
                BlockDevice device = devices[start];
                int end = start + 1;
                for (int j = end; j < n; j++)
                {
                    if (!ReferenceEquals(devices[j], device)) continue;
                    Bio moved = bios[j];
                    for (int k = j; k > end; k--) { bios[k] = bios[k - 1]; devices[k] = devices[k - 1]; }
                    bios[end] = moved;
                    devices[end++] = device;
                }
                ReadOnlySpan<Bio> batch = bios.AsSpan(start, end - start);
                if (device.IsDisposed)
                    foreach (Bio bio in batch) bio.Complete(BlockStatus.IoError);
                else if (batch.Length == 1) device.SubmitCore(batch[0]);
                else device.SubmitBatchCore(batch);
                start = end;
            }
        }
        finally
        {
            t.PluggedCount = 0;
            Array.Clear(bios, 0, n);
            Array.Clear(devices, 0, n);
            t.PlugBypass--;
        }
    }

    /// <summary>Checks a bio against this device; <see cref="BlockStatus.Ok"/> when it may be carried out.</summary>
    public BlockStatus Validate(Bio bio) => Validate(bio, Features, Limits);

    private BlockStatus Validate(Bio bio, DeviceFeatures features, DeviceLimits limits)
    {
        if (Volatile.Read(ref _disposed) != 0) return BlockStatus.IoError;
        switch (bio.Op)
        {
            case BioOp.Flush:
                return bio.Size == 0 ? BlockStatus.Ok : BlockStatus.Invalid;
            case BioOp.Discard:
                if ((features & DeviceFeatures.Discard) == 0) return BlockStatus.NotSupported;
                break;
            case BioOp.WriteZeroes:
                if ((features & DeviceFeatures.WriteZeroes) == 0) return BlockStatus.NotSupported;
                break;
            case BioOp.Read:
            case BioOp.Write:
                break;
            default:
                return BlockStatus.NotSupported;
        }
        if (bio.Op != BioOp.Read && (features & DeviceFeatures.ReadOnly) != 0) return BlockStatus.ReadOnly;
        if (bio.Size == 0) return BlockStatus.Invalid;

        long sector = bio.Sector;
        long sectors = bio.Size >> Bio.SectorShift;
        if (sector < 0 || sector > CapacitySectors || sectors > CapacitySectors - sector) return BlockStatus.OutOfRange;
        int lbsMask = limits.LogicalBlockSize - 1;
        if ((((sector << Bio.SectorShift) | bio.Size) & lbsMask) != 0) return BlockStatus.Invalid;
        if (bio.Op is BioOp.Read or BioOp.Write)
        {
            // Discard and write-zeroes carry no data, so their size need not match vectors.
            if (bio.VecCount == 0) return BlockStatus.Invalid;
            if (limits.DmaAlignment > 1 && !VectorsAligned(bio, (uint)limits.DmaAlignment - 1)) return BlockStatus.Invalid;
        }
        return BlockStatus.Ok;
    }

    private static bool VectorsAligned(Bio bio, uint mask)
    {
        foreach (BioVec v in bio.Segments)
            if (((v.Offset | v.Length) & mask) != 0) return false;
        return true;
    }

    private void SubmitSplit(Bio bio, uint max)
    {
        // Each part waits on the original, which completes after the last part (blk_queue_split);
        // the device accounts the original once, as one request.
        int splitSectors = (int)(max >> Bio.SectorShift);
        while (bio.Size > max)
        {
            Bio part = bio.Split(splitSectors, SplitPool);
            part.Chain(bio);
            SubmitCore(part);
        }
        SubmitCore(bio);
    }

    /// <summary>Counts a completed request of this device (called by <see cref="Bio.Complete"/> as it unwinds this device's frame).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal void EndAccounting(Bio bio, long now, long start, BlockThread t)
    {
        Stats.Done(bio.Op, bio.Size, now - start, now, bio.Status != BlockStatus.Ok, t);
        if (Volatile.Read(ref _requeued) != 0) KickRequeue();
    }

    /// <summary>
    /// Takes back a bio that is inside this device's <see cref="SubmitCore"/> path and requeues it
    /// (a target that cannot map it now). The bio must not be completed by the caller.
    /// </summary>
    protected void RequeueFromSubmit(Bio bio)
    {
        bio.PopFrame(out _);
        Requeue(bio);
    }

    /// <summary>Puts a bio that answered Busy on the requeue list (its frame here is already unwound).</summary>
    internal void Requeue(Bio bio)
    {
        Stats.Requeued(bio.Op);
        if (IsDisposed) { bio.PrepareSubmit(); bio.Complete(BlockStatus.IoError); return; }
        lock (_requeueLock)
        {
            if (_requeueTail is null) _requeueHead = bio;
            else _requeueTail.NextQueued = bio;
            _requeueTail = bio;
            _requeued++;
        }
        // In case no completion on this device comes to kick it first.
        RequeueWorker.Schedule(this, RequeueDelay);
    }

    /// <summary>Resubmits every requeued bio (a completion freed resources, or the delay passed).</summary>
    internal void KickRequeue()
    {
        Bio? list;
        lock (_requeueLock)
        {
            list = _requeueHead;
            _requeueHead = _requeueTail = null;
            _requeued = 0;
        }
        while (list is not null)
        {
            Bio next = list.NextQueued!;
            list.NextQueued = null;
            Submit(list);
            list = next;
        }
    }

    /// <summary>Stops accepting I/O, fails requeued bios with <see cref="BlockStatus.IoError"/>, and releases the device.</summary>
    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        // Validate now refuses them, so resubmitting fails each exactly once.
        KickRequeue();
        Dispose(true);
        GC.SuppressFinalize(this);
    }

    /// <summary>Releases the device's resources.</summary>
    protected virtual void Dispose(bool disposing) { }
}

/// <summary>Conveniences for submitters.</summary>
public static class BlockDeviceExtensions
{
    /// <summary>Submits <paramref name="bio"/> and returns a task that completes with its status; allocates nothing when the device completes inline.</summary>
    public static ValueTask<BlockStatus> SubmitAsync(this IBlockDevice device, Bio bio)
    {
        ValueTask<BlockStatus> task = bio.PrepareAwait();
        device.Submit(bio);
        return task;
    }

    /// <summary>Submits <paramref name="bio"/> and blocks until it completes (safe also inside a completion callback or a target's map).</summary>
    public static BlockStatus SubmitAndWait(this IBlockDevice device, Bio bio)
    {
        ValueTask<BlockStatus> task = bio.PrepareAwait();
        if (bio.SubmitWaitingInline(device)) return bio.Status;
        return task.IsCompleted ? task.Result : task.AsTask().GetAwaiter().GetResult();
    }
}
