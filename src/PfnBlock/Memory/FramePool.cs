using System.Diagnostics;

namespace PfnBlock.Memory;

/// <summary>
/// A pool of fixed-size frame runs with a guaranteed reserve (the kernel's <c>mempool_t</c>): the
/// buffers a stacked target needs per I/O — parity, read-modify-write, cache copies — come from
/// here, so that I/O keeps making progress when memory is short. The reserve is allocated up front
/// and only ever shrinks while its runs are in use; beyond it the pool borrows from the arena's
/// allocator and gives the surplus back as soon as it returns.
/// </summary>
/// <remarks>
/// <para>A request that finds the pool empty either fails fast (<see cref="TryRent"/>, for code on
/// a submission or completion path: the target answers <c>Requeue</c>) or waits for a run to come
/// back (<see cref="Rent"/>, for worker threads: <c>GFP_NOIO</c> semantics). Since every run in use
/// belongs to an I/O in flight that will return it, a waiter always gets one eventually.</para>
/// <para>No allocation per rent or return: the reserve lives in an array made once.</para>
/// </remarks>
public sealed class FramePool : IDisposable
{
    private readonly FrameAllocator _allocator;
    private readonly FrameRun[] _free;
    private readonly object _lock = new();
    private readonly Dictionary<ulong, string>? _renters;
    private int _count;
    private int _waiters;
    private long _outstanding;
    private bool _disposed;

    /// <summary>Creates a pool of runs of <paramref name="framesPerRun"/> frames and allocates the reserve.</summary>
    /// <param name="allocator">The arena allocator runs come from.</param>
    /// <param name="framesPerRun">Frames in each run.</param>
    /// <param name="reserve">Runs set aside up front (<c>min_nr</c>).</param>
    /// <param name="name">A name for messages.</param>
    /// <param name="trackLeaks">Record a stack trace per rented run so tests can say who leaked one (allocates per rent).</param>
    /// <exception cref="OutOfMemoryException">The arena cannot hold the reserve.</exception>
    public FramePool(FrameAllocator allocator, int framesPerRun, int reserve, string name = "frames", bool trackLeaks = false)
    {
        ArgumentNullException.ThrowIfNull(allocator);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(framesPerRun);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(reserve);
        _allocator = allocator;
        FramesPerRun = framesPerRun;
        Name = name;
        _free = new FrameRun[reserve];
        if (trackLeaks) _renters = [];
        try
        {
            for (; _count < reserve; _count++) _free[_count] = allocator.Allocate(framesPerRun);
        }
        catch
        {
            for (int i = 0; i < _count; i++) allocator.Free(_free[i]);
            throw;
        }
    }

    /// <summary>A name for messages.</summary>
    public string Name { get; }
    /// <summary>Frames in each run.</summary>
    public int FramesPerRun { get; }
    /// <summary>Runs the pool keeps however short memory gets.</summary>
    public int Reserve => _free.Length;
    /// <summary>Runs rented and not yet returned.</summary>
    public long Outstanding => Interlocked.Read(ref _outstanding);
    /// <summary>Reserve runs sitting in the pool now.</summary>
    public int Available { get { lock (_lock) return _count; } }

    /// <summary>Takes a run from the reserve, else from the arena; false when both are empty (the caller retries later).</summary>
    public bool TryRent(out FrameRun run)
    {
        lock (_lock)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            if (_count > 0)
            {
                run = _free[--_count];
                return Rented(run);
            }
        }
        // Beyond the reserve the arena lends what it has; under pressure it has nothing.
        if (_allocator.TryAllocate(FramesPerRun, 1, out run)) return Rented(run);
        return false;
    }

    /// <summary>Takes a run, waiting up to <paramref name="timeout"/> for one to come back when the pool and the arena are empty.</summary>
    /// <exception cref="TimeoutException">No run came back in time.</exception>
    public FrameRun Rent(TimeSpan timeout)
    {
        long deadline = Stopwatch.GetTimestamp() + (long)(timeout.TotalSeconds * Stopwatch.Frequency);
        while (true)
        {
            if (TryRent(out FrameRun run)) return run;
            lock (_lock)
            {
                if (_count > 0) continue;
                long left = deadline - Stopwatch.GetTimestamp();
                if (left <= 0) throw new TimeoutException($"frame pool '{Name}': no run came back within {timeout.TotalSeconds:F1} s ({Outstanding} out)");
                _waiters++;
                Monitor.Wait(_lock, TimeSpan.FromSeconds((double)left / Stopwatch.Frequency));
                _waiters--;
            }
        }
    }

    /// <summary>Gives a run back: it refills the reserve if that is short, else it goes back to the arena.</summary>
    public void Return(FrameRun run)
    {
        if (run.Frames != FramesPerRun) throw new ArgumentException($"frame pool '{Name}' holds runs of {FramesPerRun} frames, not {run.Frames}", nameof(run));
        Interlocked.Decrement(ref _outstanding);
        if (_renters is not null) lock (_renters) _renters.Remove(run.First.Raw);
        lock (_lock)
        {
            if (!_disposed && _count < _free.Length)
            {
                _free[_count++] = run;
                if (_waiters > 0) Monitor.Pulse(_lock);
                return;
            }
        }
        _allocator.Free(run);
        // A run back in the arena can serve a waiter too.
        lock (_lock) if (_waiters > 0) Monitor.Pulse(_lock);
    }

    /// <summary>Where each outstanding run was rented (only when tracking leaks; else empty).</summary>
    public IReadOnlyList<string> OutstandingRenters()
    {
        if (_renters is null) return [];
        lock (_renters) return [.. _renters.Values];
    }

    private bool Rented(FrameRun run)
    {
        Interlocked.Increment(ref _outstanding);
        if (_renters is not null) lock (_renters) _renters[run.First.Raw] = Environment.StackTrace;
        return true;
    }

    /// <summary>Returns the reserve to the arena; runs still out go back to the arena when returned.</summary>
    public void Dispose()
    {
        lock (_lock)
        {
            if (_disposed) return;
            _disposed = true;
            for (int i = 0; i < _count; i++) _allocator.Free(_free[i]);
            _count = 0;
            Monitor.PulseAll(_lock);
        }
    }
}
