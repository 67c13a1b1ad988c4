using System.Runtime.CompilerServices;
using PfnBlock.Common;

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
/// are <c>min(nfree, processors)</c> lanes, the slots of a <see cref="SlotTable"/>: a thread starts
/// from the lane of the CPU it runs on and takes any free lane before it waits.
/// </summary>
internal sealed class Lanes(int count)
{
    private const long Held = 1;
    private readonly SlotTable _slots = new(count);

    public int Count => _slots.Count;

    /// <summary>Takes a lane: the current CPU's if free, else any free one, else waits.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public int Acquire() => _slots.Claim(Held);

    /// <summary>Releases a lane taken by <see cref="Acquire"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Release(int lane) => _slots.Release(lane);
}
