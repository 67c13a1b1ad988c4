using System.Numerics;
using System.Runtime.CompilerServices;

namespace PfnBlock.Targets.WriteCache;

/// <summary>
/// The DRAM index of a write cache: origin block → sequence number of the newest write of that
/// block still in the cache. Open addressing with linear probing over arrays sized once for the
/// cache's N entries (at most N blocks can be cached, and the table is kept at most half full),
/// deletion by backward shift (no tombstones, so lookups never slow down with churn). Nothing is
/// allocated after construction. Not thread-safe: the log guards it with a lock.
/// </summary>
internal sealed class WriteCacheIndex
{
    private readonly long[] _keys;   // block + 1; 0 = empty
    private readonly long[] _values; // sequence number
    private readonly int _mask;
    private int _count;

    /// <summary>Creates an index for up to <paramref name="capacity"/> blocks.</summary>
    public WriteCacheIndex(long capacity)
    {
        int size = (int)Math.Min(1L << 30, Math.Max(16, (long)BitOperations.RoundUpToPowerOf2((ulong)capacity * 2)));
        _keys = new long[size];
        _values = new long[size];
        _mask = size - 1;
    }

    /// <summary>Blocks in the index.</summary>
    public int Count => _count;

    /// <summary>The newest sequence number of <paramref name="block"/>, or 0 when the block is not cached.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public long Find(long block)
    {
        long key = block + 1;
        int i = Home(key);
        while (true)
        {
            long k = _keys[i];
            if (k == key) return _values[i];
            if (k == 0) return 0;
            i = (i + 1) & _mask;
        }
    }

    /// <summary>Records <paramref name="seq"/> as the newest write of <paramref name="block"/> unless a newer one is recorded already.</summary>
    /// <returns>True when the block was cached already (a write hit).</returns>
    public bool Upsert(long block, long seq)
    {
        long key = block + 1;
        int i = Home(key);
        while (true)
        {
            long k = _keys[i];
            if (k == key)
            {
                // Writers commit in any order; the index keeps the newest sequence number.
                if (_values[i] < seq) _values[i] = seq;
                return true;
            }
            if (k == 0)
            {
                if (_count >= _keys.Length / 2) throw new InvalidOperationException("write cache index is full (more blocks than cache entries)");
                _keys[i] = key;
                _values[i] = seq;
                _count++;
                return false;
            }
            i = (i + 1) & _mask;
        }
    }

    /// <summary>Records <paramref name="value"/> for <paramref name="block"/>, replacing whatever was recorded (the read cache's block → copy map).</summary>
    public void Set(long block, long value)
    {
        long key = block + 1;
        int i = Home(key);
        while (true)
        {
            long k = _keys[i];
            if (k == key) { _values[i] = value; return; }
            if (k == 0)
            {
                if (_count >= _keys.Length / 2) throw new InvalidOperationException("write cache index is full (more blocks than cache entries)");
                _keys[i] = key;
                _values[i] = value;
                _count++;
                return;
            }
            i = (i + 1) & _mask;
        }
    }

    /// <summary>Removes <paramref name="block"/> if its newest write is <paramref name="seq"/> (it was written back and nothing newer came).</summary>
    public bool RemoveIf(long block, long seq)
    {
        int i = IndexOf(block);
        if (i < 0 || _values[i] != seq) return false;
        RemoveAt(i);
        return true;
    }

    /// <summary>Removes <paramref name="block"/> whatever it maps to; false when it was not there.</summary>
    public bool Remove(long block)
    {
        int i = IndexOf(block);
        if (i < 0) return false;
        RemoveAt(i);
        return true;
    }

    private int IndexOf(long block)
    {
        long key = block + 1;
        int i = Home(key);
        while (true)
        {
            long k = _keys[i];
            if (k == 0) return -1;
            if (k == key) return i;
            i = (i + 1) & _mask;
        }
    }

    private void RemoveAt(int i)
    {
        // Backward-shift deletion: pull later members of the probe run into the hole when their home
        // does not lie cyclically in (hole, their slot], so every run stays unbroken.
        int hole = i;
        int j = i;
        while (true)
        {
            j = (j + 1) & _mask;
            long kj = _keys[j];
            if (kj == 0) break;
            int home = Home(kj);
            bool stays = hole <= j ? hole < home && home <= j : hole < home || home <= j;
            if (stays) continue;
            _keys[hole] = kj;
            _values[hole] = _values[j];
            hole = j;
        }
        _keys[hole] = 0;
        _values[hole] = 0;
        _count--;
    }

    /// <summary>Empties the index.</summary>
    public void Clear()
    {
        Array.Clear(_keys);
        Array.Clear(_values);
        _count = 0;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private int Home(long key) => (int)WriteCacheEntry.Mix((ulong)key) & _mask;
}
