using System.Runtime.CompilerServices;

namespace PfnBlock.Namespaces.Btt;

/// <summary>
/// Per-lane, per-arena free-block state (kernel <c>struct free_entry</c>, PMDK
/// <c>struct flog_runtime</c>): the one block a lane may write next, which flog slot its next entry
/// goes to, and that entry's sequence number. Rebuilt from the flog at open; in memory only.
/// </summary>
internal struct LaneFreeState
{
    /// <summary>The free data block owned by this lane.</summary>
    public uint Block;
    /// <summary>The slot (0 or 1) the next flog entry overwrites: the older of the pair.</summary>
    public int NextSlot;
    /// <summary>The sequence number of the current entry; the next entry gets its successor.</summary>
    public uint Seq;
}

/// <summary>
/// The lanes of a BTT (kernel <c>nd_region_acquire_lane</c>): a writer holds one lane for the
/// duration of one sector, which gives it that lane's free block and flog group (readers use
/// <see cref="ReadTrackingTable"/> slots instead). There
/// are <c>min(nfree, processors)</c> lanes; a thread starts from the lane of the CPU it runs on and
/// takes any free lane before it waits.
/// </summary>
internal sealed class Lanes
{
    private const int Stride = 16; // ints per lock word: one 64-byte line each, so CPUs do not share them
    private readonly int[] _words;

    public Lanes(int count)
    {
        Count = count;
        _words = new int[(count + 1) * Stride];
    }

    public int Count { get; }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private ref int Word(int lane) => ref _words[(lane + 1) * Stride];

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private bool TryEnter(int lane) => Volatile.Read(ref Word(lane)) == 0 && Interlocked.CompareExchange(ref Word(lane), 1, 0) == 0;

    /// <summary>Takes a lane: the current CPU's if free, else any free one, else waits for the CPU's own.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public int Acquire()
    {
        int n = Count;
        int first = Thread.GetCurrentProcessorId() % n;
        if (TryEnter(first)) return first;
        return AcquireSlow(first, n);
    }

    private int AcquireSlow(int first, int n)
    {
        var spin = new SpinWait();
        while (true)
        {
            for (int i = 0; i < n; i++)
            {
                int lane = (first + i) % n;
                if (TryEnter(lane)) return lane;
            }
            spin.SpinOnce(); // yields, then sleeps, when the holders are not running
        }
    }

    /// <summary>Releases a lane taken by <see cref="Acquire"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Release(int lane) => Volatile.Write(ref Word(lane), 0);
}
