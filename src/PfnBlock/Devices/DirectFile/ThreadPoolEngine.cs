using PfnBlock.Interop;
using PfnBlock.Memory;

namespace PfnBlock.Devices.DirectFile;

/// <summary>
/// The fallback file engine for when io_uring cannot be set up (io_uring_disabled, seccomp,
/// old kernels) or is not wanted: each request is a pooled work item on the .NET thread pool
/// that runs its steps with blocking preadv2/pwritev2/fdatasync/fallocate and completes the bio
/// on that worker. Queueing a slot's own work item allocates nothing.
/// </summary>
internal sealed unsafe class ThreadPoolEngine(int fd, int slots, PhysicalAddressSpace space, string reason)
    : FileIoEngine(fd, slots, space)
{
    /// <inheritdoc/>
    public override string Description => $"thread-pool preadv2/pwritev2: {Slots} slots on .NET thread-pool workers ({reason})";

    /// <inheritdoc/>
    protected override void Issue(FileRequest r) => ThreadPool.UnsafeQueueUserWorkItem(r, preferLocal: false);

    /// <summary>Runs every step of <paramref name="r"/> on the current worker, then completes it.</summary>
    internal void Run(FileRequest r)
    {
        try
        {
            while (!OnResult(r, Execute(r))) { }
            Finish(r);
        }
        catch (Exception e)
        {
            FinishFaulted(r, e);
        }
    }

    private long Execute(FileRequest r)
    {
        long res;
        switch (r.Step)
        {
            case FileStep.Preflush:
            case FileStep.Postflush:
                res = Libc.fdatasync(Fd);
                break;
            case FileStep.Read:
                res = Libc.preadv2(Fd, r.Iov + r.IovIndex, r.IovCount - r.IovIndex, r.Offset, 0);
                break;
            case FileStep.Write:
            case FileStep.WriteZeros:
                if (r.Step == FileStep.WriteZeros) PrepareZeroIov(r);
                res = Libc.pwritev2(Fd, r.Iov + r.IovIndex, r.IovCount - r.IovIndex, r.Offset, r.Dsync ? (int)IoUring.RWF_DSYNC : 0);
                break;
            default: // ZeroRange, PunchHole
                res = Libc.fallocate(Fd, FallocateMode(r.Step), r.Offset, r.Remaining);
                break;
        }
        return res < 0 ? -Libc.Errno : res;
    }
}
