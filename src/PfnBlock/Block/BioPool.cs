namespace PfnBlock.Block;

/// <summary>
/// A pool of bios so that the I/O path allocates nothing (the kernel's bioset). Each thread
/// keeps a few bios of its own; the rest sit in a shared stack under a lock.
/// </summary>
public sealed class BioPool
{
    private const int ThreadCacheSize = 32;

    [ThreadStatic] private static Bio?[]? t_cache;
    [ThreadStatic] private static int t_count;
    [ThreadStatic] private static BioPool? t_owner;

    private readonly Lock _lock = new();
    private Bio[] _stack = new Bio[64];
    private int _count;
    private readonly int _maxVecs;

    /// <summary>Creates a pool of bios with room for <paramref name="maxVecs"/> vectors each.</summary>
    public BioPool(int maxVecs = Bio.MaxVecs) => _maxVecs = maxVecs;

    /// <summary>The process-wide pool.</summary>
    public static BioPool Shared { get; } = new();

    /// <summary>Takes a bio from the pool, or makes one if the pool is empty.</summary>
    public Bio Rent()
    {
        if (t_owner == this && t_count > 0)
        {
            Bio b = t_cache![--t_count]!;
            t_cache[t_count] = null;
            return b;
        }
        lock (_lock)
        {
            if (_count > 0)
            {
                Bio b = _stack[--_count];
                _stack[_count] = null!;
                return b;
            }
        }
        var bio = new Bio(_maxVecs);
        bio.SetPool(this);
        return bio;
    }

    /// <summary>Takes a bio and initialises it.</summary>
    public Bio Rent(BioOp op, long sector, BioFlags flags = BioFlags.None) => Rent().Init(op, sector, flags);

    internal void Return(Bio bio)
    {
        if (t_cache is null) { t_cache = new Bio?[ThreadCacheSize]; t_owner = this; }
        if (t_owner == this && t_count < ThreadCacheSize) { t_cache[t_count++] = bio; return; }
        lock (_lock)
        {
            if (_count == _stack.Length) Array.Resize(ref _stack, _stack.Length * 2);
            _stack[_count++] = bio;
        }
    }
}
