using System.Buffers.Binary;
using System.Numerics;
using System.Runtime.InteropServices;

namespace PfnBlock.Targets.Md;

/// <summary>How a RAID5 journal acknowledges writes (md's <c>journal_mode</c>).</summary>
public enum Raid5JournalMode : uint
{
    /// <summary>
    /// md's default: a stripe's new data and parity reach the journal before any member, and the
    /// write completes once the members hold them. Closes the write hole; writes are not faster.
    /// </summary>
    WriteThrough = 1,
    /// <summary>
    /// md's write-back (r5c): a write completes once its new data is durable in the journal (data
    /// only, no parity: nothing is read from the members on the write path); the stripes are
    /// written to the members later, in journal order, parity computed then and journalled before
    /// the members change (so a write-out torn by a crash is replayed, not left as a write hole).
    /// </summary>
    WriteBack = 2,
}

/// <summary>
/// Where a RAID5 journal's areas lie on its device, in 512-byte journal blocks (format 2.0; 1.x
/// used 4 KiB blocks, so a 4 KiB write's record took 8 KiB — a whole block for its header):
/// <code>
/// block 0, 1       two copies of the superblock (<see cref="Raid5JournalSuperblock"/>); the valid one
///                  with the higher generation is current, so a torn superblock update loses nothing
/// block 2 … N−1    the log: records (<see cref="Raid5JournalRecord"/>), one after another, wrapping to block 2
/// </code>
/// </summary>
public static class Raid5JournalLayout
{
    /// <summary>Bytes of a journal block: a sector, so a record is its one-block header and exactly its data (no padding).</summary>
    public const int BlockBytes = 512;
    /// <summary>Sectors of a journal block.</summary>
    public const int BlockSectors = BlockBytes >> 9;
    /// <summary>The first block of the log (after the two superblock copies).</summary>
    public const long LogStart = 2;

    /// <summary>The most members a journalled array may have: a record header (one block) names a range per member.</summary>
    public const int MaxMembers = (BlockBytes - Raid5JournalRecord.EntriesOffset) / Raid5JournalRecord.EntryBytes;

    /// <summary>Blocks of the largest record of an array: a header and every member's whole chunk.</summary>
    public static long MaxRecordBlocks(int raidDisks, long chunkSectors) => 1 + (raidDisks * chunkSectors + BlockSectors - 1) / BlockSectors;

    /// <summary>
    /// The fewest journal blocks for an array: the superblocks and room for two of its largest
    /// records (one being reclaimed while the next is written); in write-back mode four (a data
    /// record, the write-out record it reserves, and slack for the wrap at the log's end).
    /// </summary>
    public static long MinBlocks(int raidDisks, long chunkSectors, Raid5JournalMode mode = Raid5JournalMode.WriteThrough) =>
        LogStart + (mode == Raid5JournalMode.WriteBack ? 4 : 2) * MaxRecordBlocks(raidDisks, chunkSectors);
}

/// <summary>
/// The superblock of a RAID5 journal device (little-endian; each of blocks 0 and 1 — bytes 0 and 512 — holds a copy):
/// </summary>
/// <remarks>
/// <code>
/// offset size field
///   0     8   magic          "PFNR5JNL"
///   8     2   version_major  2 (a reader refuses another major; 1.x had 4 KiB blocks and one write-out record per data record)
///  10     2   version_minor  0
///  12     4   sb_size        512
///  16     8   generation     raised on every superblock write; the valid copy with the higher one is current
///  24    16   array_uuid     the md set_uuid of the array the journal belongs to (another array's is refused)
///  40    16   journal_uuid   random at format; seeds record checksums, so records of an earlier journal fail them
///  56     8   blocks         journal size in 512-byte blocks (at most the device's)
///  64     8   tail_block     block of the oldest record the members may not hold yet (replay starts here)
///  72     8   tail_seq       its sequence number (records are numbered 1, 2, … without gaps)
///  80     4   mode           1 write-through, 2 write-back (<see cref="Raid5JournalMode"/>)
///  84     4   raid_disks     the array's members (records name members by slot; at most 29, what a header block holds)
///  88     4   chunk_sectors  the array's chunk (record sizes are bounded by it)
///  92     4   flags          bit 0 clean: stopped with every record on the members (nothing to replay)
///  96    28   reserved       zero
/// 124     4   checksum       CRC32C of the 512 bytes with this field zero
/// 128   384   reserved       zero
/// </code>
/// The superblock is rewritten only when log space is reclaimed (the members were flushed first)
/// and at a clean stop, not per record.
/// </remarks>
public sealed class Raid5JournalSuperblock
{
    /// <summary>"PFNR5JNL" as a little-endian u64.</summary>
    public const ulong Magic = 0x4C4E4A3552_4E4650UL;
    /// <summary>The format this code writes.</summary>
    public const ushort VersionMajor = 2;
    /// <summary>The minor version this code writes.</summary>
    public const ushort VersionMinor = 0;
    /// <summary>Offset of the checksum field.</summary>
    public const int ChecksumOffset = 124;
    /// <summary>flags bit 0.</summary>
    public const uint FlagClean = 1;

    /// <summary>Superblock generation.</summary>
    public ulong Generation { get; set; }
    /// <summary>The array's md set_uuid.</summary>
    public byte[] ArrayUuid { get; set; } = new byte[16];
    /// <summary>This journal's uuid (record checksum seed).</summary>
    public byte[] JournalUuid { get; set; } = new byte[16];
    /// <summary>Journal size in blocks.</summary>
    public long Blocks { get; set; }
    /// <summary>First block to replay from.</summary>
    public long TailBlock { get; set; }
    /// <summary>Sequence number of the record at <see cref="TailBlock"/>.</summary>
    public long TailSeq { get; set; }
    /// <summary>The journal mode.</summary>
    public Raid5JournalMode Mode { get; set; } = Raid5JournalMode.WriteThrough;
    /// <summary>The array's member count.</summary>
    public int RaidDisks { get; set; }
    /// <summary>The array's chunk in sectors.</summary>
    public long ChunkSectors { get; set; }
    /// <summary>Flags (<see cref="FlagClean"/>).</summary>
    public uint Flags { get; set; }

    /// <summary>Stopped cleanly: nothing to replay.</summary>
    public bool IsClean => (Flags & FlagClean) != 0;
    /// <summary>The array uuid as mdadm prints it.</summary>
    public string ArrayUuidText => MdSuperblock.FormatUuid(ArrayUuid);
    /// <summary>The seed of record checksums: the journal uuid folded to 32 bits.</summary>
    public uint RecordSeed => BinaryPrimitives.ReadUInt32LittleEndian(JournalUuid) ^ BinaryPrimitives.ReadUInt32LittleEndian(JournalUuid.AsSpan(12));

    /// <summary>A copy.</summary>
    public Raid5JournalSuperblock Clone()
    {
        var c = (Raid5JournalSuperblock)MemberwiseClone();
        c.ArrayUuid = (byte[])ArrayUuid.Clone();
        c.JournalUuid = (byte[])JournalUuid.Clone();
        return c;
    }

    /// <summary>Encodes into <paramref name="block"/> (4096 bytes), checksum included.</summary>
    public void Encode(Span<byte> block)
    {
        block[..Raid5JournalLayout.BlockBytes].Clear();
        BinaryPrimitives.WriteUInt64LittleEndian(block, Magic);
        BinaryPrimitives.WriteUInt16LittleEndian(block[8..], VersionMajor);
        BinaryPrimitives.WriteUInt16LittleEndian(block[10..], VersionMinor);
        BinaryPrimitives.WriteUInt32LittleEndian(block[12..], Raid5JournalLayout.BlockBytes);
        BinaryPrimitives.WriteUInt64LittleEndian(block[16..], Generation);
        ArrayUuid.CopyTo(block[24..]);
        JournalUuid.CopyTo(block[40..]);
        BinaryPrimitives.WriteInt64LittleEndian(block[56..], Blocks);
        BinaryPrimitives.WriteInt64LittleEndian(block[64..], TailBlock);
        BinaryPrimitives.WriteInt64LittleEndian(block[72..], TailSeq);
        BinaryPrimitives.WriteUInt32LittleEndian(block[80..], (uint)Mode);
        BinaryPrimitives.WriteInt32LittleEndian(block[84..], RaidDisks);
        BinaryPrimitives.WriteUInt32LittleEndian(block[88..], (uint)ChunkSectors);
        BinaryPrimitives.WriteUInt32LittleEndian(block[92..], Flags);
        BinaryPrimitives.WriteUInt32LittleEndian(block[ChecksumOffset..], Crc32C.Compute(0, block[..Raid5JournalLayout.BlockBytes]));
    }

    /// <summary>Decodes one copy; null with <paramref name="error"/> saying why when it is not a valid superblock for a device of <paramref name="deviceBlocks"/> blocks.</summary>
    public static Raid5JournalSuperblock? Decode(ReadOnlySpan<byte> block, long deviceBlocks, out string? error)
    {
        error = null;
        if (BinaryPrimitives.ReadUInt64LittleEndian(block) != Magic) { error = "no RAID5 journal superblock (bad magic)"; return null; }
        ushort major = BinaryPrimitives.ReadUInt16LittleEndian(block[8..]);
        // 1.x: 4 KiB blocks and a checksum over 4096 bytes; its records are not ones this build can replay.
        if (major == 1) { error = "RAID5 journal format 1.x (4 KiB records) is not read by this build (2.0): assemble the array with the build that wrote it and stop it cleanly, then format the journal again"; return null; }
        Span<byte> copy = stackalloc byte[Raid5JournalLayout.BlockBytes];
        block[..Raid5JournalLayout.BlockBytes].CopyTo(copy);
        uint stored = BinaryPrimitives.ReadUInt32LittleEndian(copy[ChecksumOffset..]);
        BinaryPrimitives.WriteUInt32LittleEndian(copy[ChecksumOffset..], 0);
        if (Crc32C.Compute(0, copy) != stored) { error = "RAID5 journal superblock checksum mismatch"; return null; }
        if (major != VersionMajor) { error = $"RAID5 journal format version {major} is not supported (this build reads {VersionMajor})"; return null; }
        var sb = new Raid5JournalSuperblock
        {
            Generation = BinaryPrimitives.ReadUInt64LittleEndian(block[16..]),
            ArrayUuid = block.Slice(24, 16).ToArray(),
            JournalUuid = block.Slice(40, 16).ToArray(),
            Blocks = BinaryPrimitives.ReadInt64LittleEndian(block[56..]),
            TailBlock = BinaryPrimitives.ReadInt64LittleEndian(block[64..]),
            TailSeq = BinaryPrimitives.ReadInt64LittleEndian(block[72..]),
            Mode = (Raid5JournalMode)BinaryPrimitives.ReadUInt32LittleEndian(block[80..]),
            RaidDisks = BinaryPrimitives.ReadInt32LittleEndian(block[84..]),
            ChunkSectors = BinaryPrimitives.ReadUInt32LittleEndian(block[88..]),
            Flags = BinaryPrimitives.ReadUInt32LittleEndian(block[92..]),
        };
        if (sb.Mode is not (Raid5JournalMode.WriteThrough or Raid5JournalMode.WriteBack)) error = $"RAID5 journal mode {(uint)sb.Mode} is unknown";
        else if (sb.RaidDisks < 3 || sb.RaidDisks > Raid5JournalLayout.MaxMembers || sb.ChunkSectors == 0) error = $"RAID5 journal records a geometry of {sb.RaidDisks} disks, chunk {sb.ChunkSectors} sectors";
        else if (sb.Blocks > deviceBlocks || sb.Blocks < Raid5JournalLayout.MinBlocks(sb.RaidDisks, sb.ChunkSectors, sb.Mode))
            error = $"RAID5 journal of {sb.Blocks} blocks does not fit its device ({deviceBlocks} blocks) or its array";
        else if (sb.TailBlock < Raid5JournalLayout.LogStart || sb.TailBlock >= sb.Blocks || sb.TailSeq < 1)
            error = $"RAID5 journal tail (block {sb.TailBlock}, seq {sb.TailSeq}) lies outside its log";
        return error is null ? sb : null;
    }
}

/// <summary>What a record carries (the header's <c>kind</c> field).</summary>
public enum Raid5JournalRecordKind : ushort
{
    /// <summary>The new contents of member ranges of one stripe: data chunks and parity, as the members are to hold them (replayed onto them as they are).</summary>
    Stripe = 1,
    /// <summary>
    /// Write-back only: the new data of one stripe write, data chunks only, in the order of the
    /// array's sectors (contiguous). Not on the members yet; replay makes it pending again and
    /// it is written out later (parity computed then) unless a later <see cref="Parity"/> record
    /// of its stripe covers it, in which case replay writes it onto the members as it is.
    /// </summary>
    Data = 2,
    /// <summary>
    /// Write-back only (2.0): a write-out of one stripe — the parity of its row window, computed
    /// from the members with every pending data record of the stripe up to seq − writes_out laid
    /// over them. Written before any member changes; replay writes those data records onto their
    /// members, in log order, and then this parity, so a torn write-out leaves no write hole.
    /// </summary>
    Parity = 3,
}

/// <summary>One member range of a stripe record: member sectors [<c>First</c>, +<c>Sectors</c>) of slot <c>Slot</c>, relative to the stripe's first member sector.</summary>
[StructLayout(LayoutKind.Sequential)]
public record struct Raid5JournalEntry(int Slot, int First, int Sectors);

/// <summary>
/// A record header: one 512-byte block, followed by its payload blocks (little-endian):
/// </summary>
/// <remarks>
/// <code>
/// offset size field
///   0     4   magic           "R5JR"
///   4     2   kind            1 stripe, 2 data, 3 parity (write-back; <see cref="Raid5JournalRecordKind"/>)
///   6     2   entries         n: member ranges that follow (at most raid_disks; a parity record: up to 29 runs of its parity rows)
///   8     8   seq             sequence number: the record after seq s is s + 1
///  16     8   block           the log block this header lies at (a record seen elsewhere is not this one)
///  24     8   member_sector   the stripe's first member sector (relative to the members' data offset)
///  32     4   payload_blocks  512-byte blocks after the header: the entries' bytes in order (sectors: no padding)
///  36     4   payload_crc     four-lane CRC32C of the payload (<see cref="Crc32C.Lanes"/>), seeded with the journal's record seed
///  40     4   writes_out      parity records: seq − the newest data record of the stripe they cover (every data
///                             record of the stripe up to that seq); else 0
///  44     4   header_crc      CRC32C of the 512 header bytes with this field zero, seeded with the record seed
///  48  16×n   entries         slot u16, reserved u16, first u32 (sector within the chunk), sectors u32, reserved u32
/// </code>
/// <para>A record is written with one bio (header and payload). It is committed when both
/// checksums hold and its seq and block are the ones expected; a torn or partly written record
/// fails a checksum and ends the replay there. Records are written in order, and every record a
/// caller relies on (a FUA write's, a flushed write's, a write-out's parity before any member
/// changes) is made durable together with every record before it, so nothing relied on lies
/// behind a torn record.</para>
/// <para>2.0 (from 1.1): 512-byte blocks, header checksum over 512 bytes, the four-lane payload
/// checksum, kind 3, and writes_out covering a stripe's data records up to a seq (1.1 named one).</para>
/// </remarks>
public static class Raid5JournalRecord
{
    /// <summary>"R5JR".</summary>
    public const uint Magic = 0x524A3552;
    /// <summary>Offset of the header checksum.</summary>
    public const int HeaderCrcOffset = 44;
    /// <summary>Offset of the first entry.</summary>
    public const int EntriesOffset = 48;
    /// <summary>Bytes per entry.</summary>
    public const int EntryBytes = 16;

    /// <summary>Writes a header into <paramref name="block"/> (4096 bytes).</summary>
    public static void EncodeHeader(Span<byte> block, long seq, long at, long memberSector, ReadOnlySpan<Raid5JournalEntry> entries, int payloadBlocks, uint payloadCrc, uint seed,
        Raid5JournalRecordKind kind = Raid5JournalRecordKind.Stripe, uint writesOut = 0)
    {
        block[..Raid5JournalLayout.BlockBytes].Clear();
        BinaryPrimitives.WriteUInt32LittleEndian(block, Magic);
        BinaryPrimitives.WriteUInt16LittleEndian(block[4..], (ushort)kind);
        BinaryPrimitives.WriteUInt16LittleEndian(block[6..], (ushort)entries.Length);
        BinaryPrimitives.WriteInt64LittleEndian(block[8..], seq);
        BinaryPrimitives.WriteInt64LittleEndian(block[16..], at);
        BinaryPrimitives.WriteInt64LittleEndian(block[24..], memberSector);
        BinaryPrimitives.WriteInt32LittleEndian(block[32..], payloadBlocks);
        BinaryPrimitives.WriteUInt32LittleEndian(block[36..], payloadCrc);
        BinaryPrimitives.WriteUInt32LittleEndian(block[40..], writesOut);
        for (int i = 0; i < entries.Length; i++)
        {
            Span<byte> e = block[(EntriesOffset + i * EntryBytes)..];
            BinaryPrimitives.WriteUInt16LittleEndian(e, (ushort)entries[i].Slot);
            BinaryPrimitives.WriteInt32LittleEndian(e[4..], entries[i].First);
            BinaryPrimitives.WriteInt32LittleEndian(e[8..], entries[i].Sectors);
        }
        BinaryPrimitives.WriteUInt32LittleEndian(block[HeaderCrcOffset..], Crc32C.Compute(seed, block[..Raid5JournalLayout.BlockBytes]));
    }

    /// <summary>
    /// Reads the header in <paramref name="block"/>: false when it is not a valid header of a record
    /// at <paramref name="at"/> for an array of <paramref name="raidDisks"/> members and
    /// <paramref name="chunkSectors"/>-sector chunks (a torn, stale or foreign block).
    /// </summary>
    public static bool TryDecodeHeader(ReadOnlySpan<byte> block, uint seed, long at, int raidDisks, long chunkSectors,
        out long seq, out long memberSector, out int payloadBlocks, out uint payloadCrc, Span<Raid5JournalEntry> entries, out int count)
        => TryDecodeHeader(block, seed, at, raidDisks, chunkSectors, out seq, out memberSector, out payloadBlocks, out payloadCrc, entries, out count, out _, out _);

    /// <summary>
    /// As the overload without them, and also the record's <paramref name="kind"/> and, for a
    /// write-out record, its distance <paramref name="writesOut"/> back to the data record it writes out (0: none).
    /// </summary>
    public static bool TryDecodeHeader(ReadOnlySpan<byte> block, uint seed, long at, int raidDisks, long chunkSectors,
        out long seq, out long memberSector, out int payloadBlocks, out uint payloadCrc, Span<Raid5JournalEntry> entries, out int count,
        out Raid5JournalRecordKind kind, out uint writesOut)
    {
        seq = memberSector = 0;
        payloadBlocks = count = 0;
        payloadCrc = writesOut = 0;
        kind = 0;
        if (BinaryPrimitives.ReadUInt32LittleEndian(block) != Magic) return false;
        Span<byte> copy = stackalloc byte[Raid5JournalLayout.BlockBytes];
        block[..Raid5JournalLayout.BlockBytes].CopyTo(copy);
        uint stored = BinaryPrimitives.ReadUInt32LittleEndian(copy[HeaderCrcOffset..]);
        BinaryPrimitives.WriteUInt32LittleEndian(copy[HeaderCrcOffset..], 0);
        if (Crc32C.Compute(seed, copy) != stored) return false;
        kind = (Raid5JournalRecordKind)BinaryPrimitives.ReadUInt16LittleEndian(block[4..]);
        if (kind is not (Raid5JournalRecordKind.Stripe or Raid5JournalRecordKind.Data or Raid5JournalRecordKind.Parity)) return false;
        writesOut = BinaryPrimitives.ReadUInt32LittleEndian(block[40..]);
        count = BinaryPrimitives.ReadUInt16LittleEndian(block[6..]);
        seq = BinaryPrimitives.ReadInt64LittleEndian(block[8..]);
        memberSector = BinaryPrimitives.ReadInt64LittleEndian(block[24..]);
        payloadBlocks = BinaryPrimitives.ReadInt32LittleEndian(block[32..]);
        payloadCrc = BinaryPrimitives.ReadUInt32LittleEndian(block[36..]);
        // A parity record names a range per run of its rows (up to what a header holds), the others one per member at most.
        int most = kind == Raid5JournalRecordKind.Parity ? Raid5JournalLayout.MaxMembers : raidDisks;
        if (BinaryPrimitives.ReadInt64LittleEndian(block[16..]) != at || count == 0 || count > most || count > entries.Length) return false;
        long sectors = 0;
        for (int i = 0; i < count; i++)
        {
            ReadOnlySpan<byte> e = block[(EntriesOffset + i * EntryBytes)..];
            var entry = new Raid5JournalEntry(BinaryPrimitives.ReadUInt16LittleEndian(e), BinaryPrimitives.ReadInt32LittleEndian(e[4..]), BinaryPrimitives.ReadInt32LittleEndian(e[8..]));
            if (entry.Slot >= raidDisks || entry.First < 0 || entry.Sectors <= 0 || entry.First + (long)entry.Sectors > chunkSectors) return false;
            entries[i] = entry;
            sectors += entry.Sectors;
        }
        return payloadBlocks == (sectors + Raid5JournalLayout.BlockSectors - 1) / Raid5JournalLayout.BlockSectors && memberSector >= 0 && memberSector % chunkSectors == 0;
    }
}

/// <summary>CRC32C (Castagnoli), with the CPU's CRC instruction where it has one (<see cref="BitOperations.Crc32C(uint, ulong)"/>).</summary>
public static unsafe class Crc32C
{
    /// <summary>Continues <paramref name="crc"/> over <paramref name="data"/>.</summary>
    public static uint Compute(uint crc, ReadOnlySpan<byte> data)
    {
        fixed (byte* p = data) return Compute(crc, p, data.Length);
    }

    /// <summary>Continues <paramref name="crc"/> over <paramref name="length"/> bytes at <paramref name="p"/>.</summary>
    public static uint Compute(uint crc, byte* p, long length)
    {
        long i = 0;
        for (; i + 8 <= length; i += 8) crc = BitOperations.Crc32C(crc, *(ulong*)(p + i));
        for (; i < length; i++) crc = BitOperations.Crc32C(crc, p[i]);
        return crc;
    }

    /// <summary>
    /// The journal's payload checksum: four CRC32C chains over the 8-byte words of the data taken
    /// in turn (word k goes to chain k mod 4), each seeded with the seed, folded at the end by one
    /// CRC32C of the four values. A single chain waits three cycles per word for the instruction
    /// before; four run at one word a cycle (a 4 KiB payload in about a third of the time). Every
    /// word is in exactly one chain, so a torn payload fails it as a plain CRC32C would. Lengths
    /// are whole 32-byte units (payloads are whole sectors), and a payload in pieces continues
    /// the same state.
    /// </summary>
    public struct Lanes(uint seed)
    {
        private uint _a = seed, _b = seed, _c = seed, _d = seed;

        /// <summary>Continues over <paramref name="length"/> bytes (a multiple of 32) at <paramref name="p"/>.</summary>
        public void Append(byte* p, long length)
        {
            uint a = _a, b = _b, c = _c, d = _d;
            for (long i = 0; i + 32 <= length; i += 32)
            {
                a = BitOperations.Crc32C(a, *(ulong*)(p + i));
                b = BitOperations.Crc32C(b, *(ulong*)(p + i + 8));
                c = BitOperations.Crc32C(c, *(ulong*)(p + i + 16));
                d = BitOperations.Crc32C(d, *(ulong*)(p + i + 24));
            }
            (_a, _b, _c, _d) = (a, b, c, d);
        }

        /// <summary>The checksum of <paramref name="data"/> (a multiple of 32 bytes) with <paramref name="seed"/>.</summary>
        public static uint Of(uint seed, ReadOnlySpan<byte> data)
        {
            var l = new Lanes(seed);
            fixed (byte* p = data) l.Append(p, data.Length);
            return l.Value;
        }

        /// <summary>The checksum of everything appended.</summary>
        public readonly uint Value => BitOperations.Crc32C(BitOperations.Crc32C(BitOperations.Crc32C(BitOperations.Crc32C(0, _a), _b), _c), _d);
    }
}

/// <summary>What tools outside the array ask of a RAID5 journal: its mode's names, and a read-only description of a journal device (<c>pfnblock check</c>, <c>raid examine</c>).</summary>
public static class Raid5JournalInfo
{
    /// <inheritdoc cref="Raid5Journal.Describe"/>
    public static (bool Consistent, List<string> Lines)? Describe(Block.IBlockDevice device) => Raid5Journal.Describe(device);

    /// <inheritdoc cref="Raid5Journal.ModeName"/>
    public static string ModeName(Raid5JournalMode mode) => Raid5Journal.ModeName(mode);

    /// <inheritdoc cref="Raid5Journal.ParseMode"/>
    public static Raid5JournalMode ParseMode(string text) => Raid5Journal.ParseMode(text);
}
