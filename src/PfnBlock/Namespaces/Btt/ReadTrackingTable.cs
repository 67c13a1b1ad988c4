using System.Runtime.CompilerServices;

namespace PfnBlock.Namespaces.Btt;

/// <summary>
/// The read tracking table (kernel <c>arena-&gt;rtt</c>, PMDK <c>rtt</c>): slots in which a reader
/// publishes the data block it is copying from, so that a writer about to reuse that block as its
/// free block waits until the read is done. In memory only; slots are a cache line apart.
/// </summary>
/// <remarks>
/// The kernel and PMDK index the table by lane, so a reader holds a lane. Here a reader claims a
/// slot directly with one compare-and-swap that also publishes its block (one atomic instead of
/// a lane lock plus a store and a fence); there are as many slots as lanes. Writers still scan
/// every slot before touching their free block.
/// </remarks>
internal sealed class ReadTrackingTable
{
    private const int Stride = 16; // ints per slot: one 64-byte line each
    private const uint Valid = 1u << 31; // RTT_VALID; block numbers stay below 2^30
    private readonly int[] _slots;
    private readonly int _count;

    public ReadTrackingTable(int slots)
    {
        _count = slots;
        _slots = new int[(slots + 1) * Stride];
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private ref int Slot(int slot) => ref _slots[(slot + 1) * Stride];

    /// <summary>
    /// Claims a slot and publishes a read of <paramref name="block"/> in it. The interlocked
    /// operation is a full fence, so the caller's following map re-read cannot pass it.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public int Enter(uint block)
    {
        int tag = (int)(Valid | block);
        int first = Thread.GetCurrentProcessorId() % _count;
        if (Interlocked.CompareExchange(ref Slot(first), tag, 0) == 0) return first;
        return EnterSlow(tag, first);
    }

    private int EnterSlow(int tag, int first)
    {
        var spin = new SpinWait();
        while (true)
        {
            for (int i = 0; i < _count; i++)
            {
                int slot = (first + i) % _count;
                if (Volatile.Read(ref Slot(slot)) == 0 && Interlocked.CompareExchange(ref Slot(slot), tag, 0) == 0) return slot;
            }
            spin.SpinOnce();
        }
    }

    /// <summary>Replaces the block a claimed slot publishes, with a full fence.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Update(int slot, uint block) => Interlocked.Exchange(ref Slot(slot), (int)(Valid | block));

    /// <summary>Ends the read and frees the slot.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Exit(int slot) => Volatile.Write(ref Slot(slot), 0);

    /// <summary>Spins while any reader has <paramref name="block"/> published.</summary>
    public void WaitWhileRead(uint block)
    {
        int tag = (int)(Valid | block);
        for (int slot = 0; slot < _count; slot++)
        {
            ref int word = ref Slot(slot);
            if (Volatile.Read(ref word) != tag) continue;
            var spin = new SpinWait();
            while (Volatile.Read(ref word) == tag) spin.SpinOnce();
        }
    }
}
