using System.Runtime.CompilerServices;

namespace PfnBlock.Namespaces.Btt;

/// <summary>
/// The read tracking table (kernel <c>arena-&gt;rtt</c>, PMDK <c>rtt</c>): one slot per lane in which a
/// reader publishes the data block it is copying from, so that a writer about to reuse that block
/// as its free block waits until the read is done. In memory only; slots are a cache line apart.
/// </summary>
internal sealed class ReadTrackingTable
{
    private const int Stride = 16; // ints per slot: one 64-byte line each
    private const uint Valid = 1u << 31; // RTT_VALID; block numbers stay below 2^30
    private readonly int[] _slots;
    private readonly int _lanes;

    public ReadTrackingTable(int lanes)
    {
        _lanes = lanes;
        _slots = new int[(lanes + 1) * Stride];
    }

    /// <summary>Publishes a read of <paramref name="block"/> with a full fence, so the caller's following map re-read cannot pass it.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Publish(int lane, uint block) => Interlocked.Exchange(ref _slots[(lane + 1) * Stride], (int)(Valid | block));

    /// <summary>Ends the read of <paramref name="lane"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Clear(int lane) => Volatile.Write(ref _slots[(lane + 1) * Stride], 0);

    /// <summary>Spins while any lane is reading <paramref name="block"/>.</summary>
    public void WaitWhileRead(uint block)
    {
        int tag = (int)(Valid | block);
        for (int lane = 0; lane < _lanes; lane++)
        {
            ref int slot = ref _slots[(lane + 1) * Stride];
            if (Volatile.Read(ref slot) != tag) continue;
            var spin = new SpinWait();
            while (Volatile.Read(ref slot) == tag) spin.SpinOnce();
        }
    }
}
