using System.Runtime.CompilerServices;

namespace PfnBlock.Targets.Md;

/// <summary>
/// Where Linux md's RAID5 puts array sectors: the left-symmetric layout (md's default, algorithm
/// 2) with chunk-sized stripes, as <c>raid5_compute_sector</c> in drivers/md/raid5.c computes it.
/// </summary>
/// <remarks>
/// With n members and D = n − 1 data chunks per stripe: array chunk k is data chunk k mod D of
/// stripe s = k div D; the stripe's parity is on member <c>pd = D − (s mod n)</c> and its data chunk
/// i on member <c>(pd + 1 + i) mod n</c> ("data continuation": the data of consecutive stripes
/// continues round the members after the parity). Every member holds stripe s at member sector
/// s × chunk (from its data offset). For 4 members: stripe 0 parity on 3, data on 0 1 2;
/// stripe 1 parity on 2, data on 3 0 1; stripe 2 parity on 1, data on 2 3 0.
/// </remarks>
internal readonly struct Raid5Layout
{
    /// <summary>A layout of <paramref name="members"/> members and chunks of <paramref name="chunkSectors"/> sectors (a power of two).</summary>
    public Raid5Layout(int members, long chunkSectors)
    {
        if (members < 3) throw new ArgumentOutOfRangeException(nameof(members), members, "RAID5 needs at least 3 members");
        if (chunkSectors <= 0 || !long.IsPow2(chunkSectors)) throw new ArgumentOutOfRangeException(nameof(chunkSectors), chunkSectors, "the chunk must be a power of two");
        Members = members;
        ChunkSectors = chunkSectors;
        ChunkShift = System.Numerics.BitOperations.Log2((ulong)chunkSectors);
    }

    /// <summary>Members (n).</summary>
    public int Members { get; }
    /// <summary>Data chunks per stripe (n − 1).</summary>
    public int DataDisks => Members - 1;
    /// <summary>Sectors per chunk.</summary>
    public long ChunkSectors { get; }
    /// <summary>log2 of <see cref="ChunkSectors"/>.</summary>
    public int ChunkShift { get; }
    /// <summary>Array sectors per stripe (its data).</summary>
    public long StripeSectors => ChunkSectors * DataDisks;

    /// <summary>The member holding stripe <paramref name="stripe"/>'s parity.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public int ParityMember(long stripe) => DataDisks - (int)(stripe % Members);

    /// <summary>The member holding data chunk <paramref name="dataIndex"/> of stripe <paramref name="stripe"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public int DataMember(long stripe, int dataIndex) => (ParityMember(stripe) + 1 + dataIndex) % Members;

    /// <summary>The data index (0 … n − 2) member <paramref name="member"/> holds in stripe <paramref name="stripe"/>, or −1 for its parity.</summary>
    public int DataIndexOf(long stripe, int member)
    {
        int pd = ParityMember(stripe);
        return member == pd ? -1 : (member - pd - 1 + Members) % Members;
    }

    /// <summary>
    /// Maps array sector <paramref name="sector"/>: its stripe, data index, member and member
    /// sector (from the data offset), and how many sectors from there stay in the same chunk.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public (long Stripe, int DataIndex, int Member, long MemberSector, long ChunkLeft) Map(long sector)
    {
        long chunk = sector >> ChunkShift;
        long offset = sector & (ChunkSectors - 1);
        long stripe = chunk / DataDisks;
        int dataIndex = (int)(chunk - stripe * DataDisks);
        return (stripe, dataIndex, DataMember(stripe, dataIndex), (stripe << ChunkShift) + offset, ChunkSectors - offset);
    }

    /// <summary>The array sector of sector <paramref name="offset"/> of data chunk <paramref name="dataIndex"/> of stripe <paramref name="stripe"/>.</summary>
    public long ArraySector(long stripe, int dataIndex, long offset) => ((stripe * DataDisks + dataIndex) << ChunkShift) + offset;
}
