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
/// The lanes of a BTT (kernel <c>nd_region_acquire_lane</c>): a writer or reader holds one lane for
/// the duration of one sector, which gives it that lane's free block and read-tracking slot. There
/// are <c>min(nfree, processors)</c> lanes; a thread starts from the lane of the CPU it runs on and
/// takes any free lane before it waits.
/// </summary>
internal sealed class Lanes
{
    private readonly Lock[] _locks;

    public Lanes(int count)
    {
        _locks = new Lock[count];
        for (int i = 0; i < count; i++) _locks[i] = new Lock();
    }

    public int Count => _locks.Length;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public int Acquire()
    {
        int n = _locks.Length;
        int first = Thread.GetCurrentProcessorId() % n;
        if (_locks[first].TryEnter()) return first;
        for (int i = 1; i < n; i++)
        {
            int lane = (first + i) % n;
            if (_locks[lane].TryEnter()) return lane;
        }
        _locks[first].Enter();
        return first;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Release(int lane) => _locks[lane].Exit();
}
