using System.Diagnostics;

namespace PfnBlock.Block;

/// <summary>
/// A pool of bios so that the I/O path allocates nothing (the kernel's bioset). Each bio the pool
/// makes carries a per-I/O context object for the pool's owner (the bioset's front_pad, SPDK's
/// <c>get_ctx_size</c>), made once with the bio and kept for its whole life. Each thread keeps a
/// few bios of the pools it used last; the rest sit in a shared stack under a lock.
/// </summary>
/// <remarks>
/// <para>A pool may be bounded (<see cref="BioPoolOptions.Capacity"/>): then <see cref="TryRent"/>
/// fails when every bio is out, which is how a fixed set of request slots gets back-pressure.</para>
/// <para><see cref="Outstanding"/> counts bios rented and not yet returned. A thread with a cache
/// of the pool counts its rents and returns in that cache, with plain increments: a locked
/// instruction on the I/O path waits for the non-temporal stores of a pmem copy before it, which
/// is the cost a stacked target's clones must not add; the count is summed over the caches when
/// asked (exact when the pool is idle, as a leak check needs). With
/// <see cref="BioPoolOptions.TrackLeaks"/> the pool also remembers who rented each one
/// (a stack trace, so only for tests), as Pipelines' test memory pool does.</para>
/// </remarks>
public sealed class BioPool
{
    private const int ThreadCacheSize = 32;
    private const int ThreadCachePools = 4;

    [ThreadStatic] private static ThreadCache[]? t_caches;

    private readonly Lock _lock = new();
    private Bio[] _stack = new Bio[64];
    private int _count;
    private int _created;
    private long _outstanding;
    private ThreadCache[] _caches = [];
    private readonly BioPoolOptions _options;
    private readonly Dictionary<Bio, string>? _renters;

    /// <summary>Creates a pool of bios with room for <paramref name="maxVecs"/> vectors each and no context.</summary>
    public BioPool(int maxVecs = Bio.MaxVecs) : this(new BioPoolOptions { MaxVecs = maxVecs }) { }

    /// <summary>Creates a pool as <paramref name="options"/> say.</summary>
    public BioPool(BioPoolOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(options.MaxVecs);
        ArgumentOutOfRangeException.ThrowIfNegative(options.Capacity);
        _options = options;
        if (options.TrackLeaks) _renters = new Dictionary<Bio, string>(ReferenceEqualityComparer.Instance);
    }

    /// <summary>The process-wide pool (no context, unbounded): splits, clones and one-off requests.</summary>
    public static BioPool Shared { get; } = new(new BioPoolOptions { Name = "shared" });

    /// <summary>The name given in the options (diagnostics).</summary>
    public string Name => _options.Name;
    /// <summary>Bios rented and not returned yet.</summary>
    public long Outstanding
    {
        get
        {
            lock (_lock)
            {
                long n = Interlocked.Read(ref _outstanding);
                foreach (ThreadCache c in _caches) n += Volatile.Read(ref c.Rented) - Volatile.Read(ref c.Returned);
                return n;
            }
        }
    }
    /// <summary>Bios this pool has made so far (its memory footprint, in bios).</summary>
    public int Created => Volatile.Read(ref _created);

    /// <summary>Vectors each bio of this pool has room for (<see cref="BioPoolOptions.MaxVecs"/>).</summary>
    public int MaxVecs => _options.MaxVecs;

    /// <summary>Takes a bio from the pool, making one if the pool is empty.</summary>
    /// <exception cref="InvalidOperationException">The pool is bounded and every bio is out (use <see cref="TryRent"/>).</exception>
    public Bio Rent() => TryRent(out Bio? bio) ? bio : throw new InvalidOperationException($"bio pool '{Name}' is exhausted ({_options.Capacity} bios out)");

    /// <summary>Takes a bio and initialises it.</summary>
    public Bio Rent(BioOp op, long sector, BioFlags flags = BioFlags.None) => Rent().Init(op, sector, flags);

    /// <summary>Takes a bio; false when the pool is bounded and every bio is out.</summary>
    public bool TryRent([System.Diagnostics.CodeAnalysis.NotNullWhen(true)] out Bio? bio)
    {
        ThreadCache? cache = FindCache(create: false);
        if (cache is not null && cache.Count > 0)
        {
            bio = cache.Bios[--cache.Count]!;
            cache.Bios[cache.Count] = null;
            cache.Rented++;
            if (_renters is not null) lock (_renters) _renters[bio] = Environment.StackTrace;
            return true;
        }
        bio = null;
        lock (_lock)
        {
            if (_count > 0)
            {
                bio = _stack[--_count];
                _stack[_count] = null!;
            }
            else if (_options.Capacity > 0 && _created >= _options.Capacity)
            {
                return false;
            }
            else _created++;
        }
        bio ??= Create();
        Interlocked.Increment(ref _outstanding);
        if (_renters is not null) lock (_renters) _renters[bio] = Environment.StackTrace;
        return true;
    }

    private Bio Create()
    {
        var bio = new Bio(_options.MaxVecs);
        bio.SetPool(this, _options.Context?.Invoke(bio));
        return bio;
    }

    internal void Return(Bio bio)
    {
        Debug.Assert(bio.Pool == this);
        if (_renters is not null) lock (_renters) _renters.Remove(bio);
        ThreadCache? cache = _options.Capacity > 0 ? null : FindCache(create: true);
        if (cache is not null && cache.Count < ThreadCacheSize)
        {
            cache.Bios[cache.Count++] = bio;
            cache.Returned++;
            return;
        }
        Interlocked.Decrement(ref _outstanding);
        lock (_lock) PushUnsynchronized(bio);
    }

    private void PushUnsynchronized(Bio bio)
    {
        if (_count == _stack.Length) Array.Resize(ref _stack, _stack.Length * 2);
        _stack[_count++] = bio;
    }

    /// <summary>Where each outstanding bio was rented (only with <see cref="BioPoolOptions.TrackLeaks"/>; else empty).</summary>
    public IReadOnlyList<string> OutstandingRenters()
    {
        if (_renters is null) return [];
        lock (_renters) return [.. _renters.Values];
    }

    /// <summary>
    /// This thread's cache of this pool. Bounded pools keep none (a cached bio would look
    /// "out" to other threads and starve them); a thread caches at most a few pools, the
    /// least recently added one giving its bios back to its pool when a new pool needs room.
    /// </summary>
    private ThreadCache? FindCache(bool create)
    {
        ThreadCache[]? caches = t_caches;
        if (caches is not null)
        {
            for (int i = 0; i < caches.Length; i++)
            {
                ThreadCache c = caches[i];
                if (c.Pool == this) return c;
            }
        }
        if (!create || _options.Capacity > 0) return null;
        if (caches is null) t_caches = caches = [new(), new(), new(), new()];
        ThreadCache victim = caches[ThreadCachePools - 1];
        victim.Evict();
        Array.Copy(caches, 0, caches, 1, ThreadCachePools - 1);
        caches[0] = victim;
        victim.Pool = this;
        lock (_lock) _caches = [.. _caches, victim];
        return victim;
    }

    private sealed class ThreadCache
    {
        public BioPool? Pool;
        public readonly Bio?[] Bios = new Bio?[ThreadCacheSize];
        public int Count;
        /// <summary>Bios of <see cref="Pool"/> this thread rented from the cache, and returned to it (written by the owning thread only).</summary>
        public long Rented, Returned;

        /// <summary>Gives the cached bios back to the pool and folds this cache's counts into the pool's (on the owning thread).</summary>
        public void Evict()
        {
            if (Pool is { } pool)
            {
                lock (pool._lock)
                {
                    for (int i = 0; i < Count; i++) { pool.PushUnsynchronized(Bios[i]!); Bios[i] = null; }
                    Interlocked.Add(ref pool._outstanding, Rented - Returned);
                    pool._caches = Array.FindAll(pool._caches, c => c != this);
                }
            }
            Count = 0;
            Rented = Returned = 0;
            Pool = null;
        }
    }
}

/// <summary>How a <see cref="BioPool"/> makes and bounds its bios.</summary>
public sealed record BioPoolOptions
{
    /// <summary>Vectors each bio has room for (<see cref="Bio.MaxVecs"/> by default; 1 for single-buffer requests).</summary>
    public int MaxVecs { get; init; } = Bio.MaxVecs;
    /// <summary>Makes the per-I/O context of a new bio (<see cref="Bio.Context"/>); called once per bio the pool ever makes.</summary>
    public Func<Bio, object>? Context { get; init; }
    /// <summary>Most bios the pool makes; 0 for unbounded. A bounded pool keeps no per-thread caches.</summary>
    public int Capacity { get; init; }
    /// <summary>Record a stack trace per rented bio so tests can say who leaked one (allocates per rent).</summary>
    public bool TrackLeaks { get; init; }
    /// <summary>A name for messages.</summary>
    public string Name { get; init; } = "bio";
}
