using System.Runtime.InteropServices;

namespace PfnBlock.Namespaces.Btt;

/// <summary>
/// One flog entry (kernel <c>struct log_entry</c>, PMDK <c>struct btt_flog</c>): 16 bytes, written
/// as two 8-byte halves — first {lba, old_map}, then {new_map, seq} — so the sequence number that
/// makes the entry current lands last and an entry is never current while half written.
/// </summary>
/// <remarks>
/// <code>
/// off size field    meaning
///  0   4   lba      pre-map LBA the write was for
///  4   4   old_map  block the sector had before the write: the lane's free block once done
///  8   4   new_map  block the sector has after the write (the lane's previous free block)
/// 12   4   seq      1 → 2 → 3 → 1 …; 0 = slot never written
/// </code>
/// Kernel flavor stores old_map/new_map as bare block numbers; pmemblk stores them with the map
/// flag bits (e.g. 0xC0000000 | block). Readers mask with <see cref="MapEntry.LbaMask"/>.
/// </remarks>
[StructLayout(LayoutKind.Sequential, Pack = 4)]
public record struct FlogEntry(uint Lba, uint OldMap, uint NewMap, uint Seq)
{
    /// <summary>Bytes per entry.</summary>
    public const int Size = 16;

    /// <summary>The sequence number after <paramref name="seq"/> (PMDK <c>NSEQ</c>: 0→0, 1→2, 2→3, 3→1).</summary>
    public static uint NextSeq(uint seq) => (seq & 3) switch { 1 => 2, 2 => 3, 3 => 1, _ => 0 };

    /// <summary>The block freed by this entry.</summary>
    public readonly uint OldBlock => OldMap & MapEntry.LbaMask;
    /// <summary>The block this entry made current.</summary>
    public readonly uint NewBlock => NewMap & MapEntry.LbaMask;
}

/// <summary>
/// A lane's 64-byte flog group (kernel <c>struct log_group</c>): entries in slots 0 and 1, slots 2
/// and 3 zero padding (the post-4.15 kernel and PMDK layout). Exactly one slot is current.
/// </summary>
public static class LogGroup
{
    /// <summary>
    /// Picks the current entry of a pair: a single non-zero seq wins; of two, the one that follows
    /// the other in the 1→2→3→1 cycle. Equal sequence numbers, or numbers above 3, cannot be produced
    /// by any sequence of writes and are reported as errors.
    /// </summary>
    /// <returns>0 or 1, the current slot; -1 with <paramref name="error"/> set when the pair is impossible.</returns>
    public static int Current(in FlogEntry e0, in FlogEntry e1, out string? error)
    {
        error = null;
        if (e0.Seq > 3 || e1.Seq > 3) { error = $"impossible flog sequence numbers ({e0.Seq}, {e1.Seq}): valid values are 0..3"; return -1; }
        if (e0.Seq == e1.Seq) { error = e0.Seq == 0 ? "flog pair has no valid entry (both sequence numbers 0)" : $"impossible flog sequence numbers ({e0.Seq}, {e1.Seq}): equal"; return -1; }
        if (e0.Seq == 0) return 1;
        if (e1.Seq == 0) return 0;
        return FlogEntry.NextSeq(e0.Seq) == e1.Seq ? 1 : 0;
    }
}
