namespace PfnBlock.Exports.Nbd;

/// <summary>
/// The memory all connections of a server may hold in their buffers beyond each one's floor (the
/// first <see cref="NbdConnectionBuffers.ReceiveFloor"/> of its receive buffer, reserved when
/// the server starts). Memory is taken as requests need it and given back when a connection goes
/// idle, ends, or others are waiting.
/// </summary>
/// <remarks>
/// <para>Memory is taken with <see cref="TryTake"/> for what a request cannot do without. A
/// connection that cannot get it and has nothing else in flight queues with <see cref="Wait"/>;
/// from then on only the first in the queue may take, so busy connections cannot starve a waiting
/// one, and everyone gives back what it does not need at once (<see cref="UnderPressure"/>).</para>
/// <para>Deadlock freedom: whoever waits first gives back what it does not need and holds only its
/// floor and the request's own bytes; every request's need fits the budget (checked at start), and
/// what others hold comes back when their requests complete (returned at once while someone
/// waits) or when they idle.</para>
/// </remarks>
internal sealed class NbdMemoryBudget
{
    private readonly Lock _lock = new();
    private readonly List<object> _waiters = [];
    private long _used;
    private long _peak;
    private int _waiting;

    /// <param name="limit">Bytes that may be taken at once.</param>
    public NbdMemoryBudget(long limit) => Limit = limit;

    /// <summary>Bytes that may be taken at once.</summary>
    public long Limit { get; }
    /// <summary>Bytes taken now.</summary>
    public long Used => Volatile.Read(ref _used);
    /// <summary>The most ever taken at once (for tests and statistics).</summary>
    public long Peak => Volatile.Read(ref _peak);
    /// <summary>Someone waits for memory: holders should give back what they do not need now.</summary>
    public bool UnderPressure => Volatile.Read(ref _waiting) != 0;

    /// <summary>
    /// Takes <paramref name="bytes"/> for <paramref name="owner"/> if they are free and nobody waits,
    /// or <paramref name="owner"/> is the first waiter (which then stops waiting).
    /// </summary>
    public bool TryTake(long bytes, object owner)
    {
        lock (_lock)
        {
            bool first = _waiters.Count == 0 || _waiters[0] == owner;
            if (!first || _used + bytes > Limit) return false;
            if (_waiters.Count != 0) Dequeue(0);
            Add(bytes);
            return true;
        }
    }

    /// <summary>Queues <paramref name="owner"/> (once) for memory it cannot do without; it then retries <see cref="TryTake"/> until granted or <see cref="Forget"/>.</summary>
    public void Wait(object owner)
    {
        lock (_lock)
        {
            if (_waiters.Contains(owner)) return;
            _waiters.Add(owner);
            Volatile.Write(ref _waiting, _waiters.Count);
        }
    }

    /// <summary>Gives back <paramref name="bytes"/>.</summary>
    public void Release(long bytes)
    {
        if (bytes != 0) Interlocked.Add(ref _used, -bytes);
    }

    /// <summary>Takes <paramref name="owner"/> out of the queue (it ended, or no longer needs the memory).</summary>
    public void Forget(object owner)
    {
        lock (_lock)
        {
            int i = _waiters.IndexOf(owner);
            if (i >= 0) Dequeue(i);
        }
    }

    private void Dequeue(int i)
    {
        _waiters.RemoveAt(i);
        Volatile.Write(ref _waiting, _waiters.Count);
    }

    private void Add(long bytes)
    {
        long used = Interlocked.Add(ref _used, bytes);
        long peak;
        while (used > (peak = Volatile.Read(ref _peak)) && Interlocked.CompareExchange(ref _peak, used, peak) != peak) { }
    }
}
