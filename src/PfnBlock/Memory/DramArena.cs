using PfnBlock.Interop;

namespace PfnBlock.Memory;

/// <summary>
/// A region of anonymous DRAM, mapped once, numbered in an address space and carved into
/// frame runs for I/O buffers by its <see cref="FrameAllocator"/>.
/// </summary>
public sealed unsafe class DramArena : MemoryRegion
{
    // The arena is registered in its address space until disposed, so the mapping stays alive as
    // long as any pfn of it can be kmapped; the hot path uses BaseAddress, never the handle.
    private readonly SafeMmapHandle _mapping;

    private DramArena(string name, long frames, SafeMmapHandle mapping, IPageDescriptorMap? descriptors)
        : base(name, RegionKind.Dram, frames, mapping.Address, PfnFlags.None, descriptors)
    {
        _mapping = mapping;
        Allocator = new FrameAllocator(this);
    }

    /// <summary>Hands out frame runs of this arena.</summary>
    public FrameAllocator Allocator { get; }

    /// <summary>
    /// Maps <paramref name="bytes"/> (rounded up to whole frames) of anonymous memory, asks for
    /// transparent huge pages, and registers the arena in <paramref name="space"/>.
    /// </summary>
    public static DramArena Create(long bytes, PhysicalAddressSpace? space = null, string name = "dram",
        DescriptorMapKind descriptors = DescriptorMapKind.None)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(bytes);
        long frames = (bytes + Pfn.PageSize - 1) >> Pfn.PageShift;
        nuint length = (nuint)(frames << Pfn.PageShift);
        SafeMmapHandle mapping = SafeMmapHandle.TryMap(length, Libc.PROT_READ | Libc.PROT_WRITE, Libc.MAP_PRIVATE | Libc.MAP_ANONYMOUS | Libc.MAP_NORESERVE, -1, 0)
            ?? throw Libc.ErrnoException(Libc.Errno, "mmap(anonymous)", name);
        try
        {
            // Huge pages cut TLB misses on large I/O buffers; a refusal only costs speed.
            _ = Libc.madvise((nint)mapping.Address, length, Libc.MADV_HUGEPAGE);
            var arena = new DramArena(name, frames, mapping, DescriptorMaps.Create(descriptors, frames));
            (space ?? PhysicalAddressSpace.Shared).Add(arena);
            return arena;
        }
        catch
        {
            mapping.Dispose();
            throw;
        }
    }

    /// <inheritdoc/>
    protected override void Dispose(bool disposing)
    {
        base.Dispose(disposing);
        _mapping.Dispose();
    }
}

/// <summary>A contiguous run of frames handed out by a <see cref="FrameAllocator"/>.</summary>
/// <param name="First">The first frame.</param>
/// <param name="Frames">How many frames.</param>
public readonly record struct FrameRun(Pfn First, int Frames)
{
    /// <summary>Size of the run in bytes.</summary>
    public long Bytes => (long)Frames << Pfn.PageShift;
}

/// <summary>
/// A first-fit bitmap allocator of contiguous, aligned frame runs in one arena: one bit per
/// frame and no object per frame. Allocation takes a lock; it belongs in setup paths
/// (buffer pools, connection setup), not per I/O.
/// </summary>
public sealed class FrameAllocator
{
    private readonly MemoryRegion _region;
    private readonly ulong[] _used;
    private readonly Lock _lock = new();
    private long _freeFrames;

    internal FrameAllocator(MemoryRegion region)
    {
        _region = region;
        _used = new ulong[(region.FrameCount + 63) / 64];
        _freeFrames = region.FrameCount;
    }

    /// <summary>Frames not allocated now.</summary>
    public long FreeFrames => Volatile.Read(ref _freeFrames);

    /// <summary>Allocates <paramref name="frames"/> contiguous frames whose first frame index is a multiple of <paramref name="alignFrames"/>.</summary>
    /// <exception cref="OutOfMemoryException">No such run is free.</exception>
    public FrameRun Allocate(int frames, int alignFrames = 1) =>
        TryAllocate(frames, alignFrames, out FrameRun run) ? run
            : throw new OutOfMemoryException($"{_region.Name}: no free run of {frames} frames aligned to {alignFrames} ({FreeFrames} frames free)");

    /// <summary>Tries to allocate a run; false when none fits.</summary>
    public bool TryAllocate(int frames, int alignFrames, out FrameRun run)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(frames);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(alignFrames);
        if (!int.IsPow2(alignFrames)) throw new ArgumentException("alignment must be a power of two", nameof(alignFrames));
        lock (_lock)
        {
            long total = _region.FrameCount;
            for (long start = 0; start + frames <= total; start += alignFrames)
            {
                long busy = FirstUsed(start, frames);
                if (busy < 0)
                {
                    SetRange(start, frames, true);
                    _freeFrames -= frames;
                    run = new FrameRun(_region.PfnAt(start), frames);
                    return true;
                }
                // Skip past the busy frame, keeping alignment.
                start = (busy / alignFrames) * alignFrames;
            }
        }
        run = default;
        return false;
    }

    /// <summary>Returns a run to the allocator.</summary>
    /// <exception cref="InvalidOperationException">The run was not allocated here (double free).</exception>
    public void Free(FrameRun run)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(run.Frames);
        long start = (long)(run.First.Frame - _region.BaseFrame);
        if (start < 0 || start + run.Frames > _region.FrameCount)
            throw new ArgumentException($"{run.First} is not a frame of {_region.Name}", nameof(run));
        lock (_lock)
        {
            for (long i = start; i < start + run.Frames; i++)
                if ((_used[i >> 6] & (1UL << (int)(i & 63))) == 0)
                    throw new InvalidOperationException($"double free of frame {i} in {_region.Name}");
            SetRange(start, run.Frames, false);
            _freeFrames += run.Frames;
        }
    }

    private long FirstUsed(long start, int count)
    {
        for (long i = start; i < start + count; i++)
            if ((_used[i >> 6] & (1UL << (int)(i & 63))) != 0) return i;
        return -1;
    }

    private void SetRange(long start, int count, bool used)
    {
        for (long i = start; i < start + count; i++)
        {
            if (used) _used[i >> 6] |= 1UL << (int)(i & 63);
            else _used[i >> 6] &= ~(1UL << (int)(i & 63));
        }
    }
}
