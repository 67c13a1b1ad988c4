using System.Runtime.CompilerServices;
using PfnBlock.Common;

namespace PfnBlock.Namespaces.Btt;

/// <summary>
/// The read tracking table (kernel <c>arena-&gt;rtt</c>, PMDK <c>rtt</c>): slots in which a reader
/// publishes the data block it is copying from, so that a writer about to reuse that block as its
/// free block waits until the read is done. In memory only; slots are a cache line apart.
/// </summary>
/// <remarks>
/// The kernel and PMDK index the table by lane, so a reader holds a lane. Here a reader claims a
/// slot of a <see cref="SlotTable"/> directly, with one compare-and-swap that also publishes its
/// block (one atomic instead of a lane lock plus a store and a fence); there are as many slots as
/// lanes. Writers still scan every slot before touching their free block.
/// </remarks>
internal sealed class ReadTrackingTable(int slots)
{
    private const long Valid = 1L << 31; // RTT_VALID: block 0 is a published value too; block numbers stay below 2^30
    private readonly SlotTable _slots = new(slots);

    /// <summary>
    /// Claims a slot and publishes a read of <paramref name="block"/> in it. The interlocked
    /// operation is a full fence, so the caller's following map re-read cannot pass it.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public int Enter(uint block) => _slots.Claim(Valid | block);

    /// <summary>Replaces the block a claimed slot publishes, with a full fence.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Update(int slot, uint block) => _slots.Publish(slot, Valid | block);

    /// <summary>Ends the read and frees the slot.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Exit(int slot) => _slots.Release(slot);

    /// <summary>Spins while any reader has <paramref name="block"/> published.</summary>
    public void WaitWhileRead(uint block) => _slots.WaitWhilePublished(Valid | block);
}
