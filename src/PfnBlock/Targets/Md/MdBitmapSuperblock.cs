using System.Buffers.Binary;

namespace PfnBlock.Targets.Md;

/// <summary>
/// The superblock of an md internal write-intent bitmap (the kernel's <c>bitmap_super_t</c>,
/// <c>drivers/md/md-bitmap.h</c>; little-endian), at <c>super_offset + bitmap_offset</c> sectors of
/// every member; the bitmap's bits follow it from byte 256, one bit per bitmap chunk of member
/// sectors, bit <c>i</c> in byte <c>i / 8</c> at bit <c>i % 8</c> (version 4's little-endian order).
/// <c>mdadm --examine-bitmap</c> (<c>-X</c>) reads it.
/// </summary>
/// <remarks>
/// <code>
///   0 magic u32              0x6d746962 ("bitm")
///   4 version u32            4 (BITMAP_MAJOR_HI: little-endian bits)
///   8 uuid[16]               the array's set_uuid
///  24 events u64             the superblock events when the bitmap was last written; a bitmap older
///                            than its superblock is stale and the whole array is resynced instead
///  32 events_cleared u64     events when bits were last cleared
///  40 sync_size u64          sectors the bits cover (the superblock's size, per member)
///  48 state u32              bit 1 BITMAP_STALE: the bits cannot be trusted
///  52 chunksize u32          bytes of member data per bit (a power of two, at least 4 KiB)
///  56 daemon_sleep u32       seconds between passes that clear idle bits
///  60 write_behind u32       0
///  64 sectors_reserved u32   sectors between the bitmap and the data
///  68 nodes u32, 72 cluster_name[64]: 0 (not clustered)
/// 236 pfnblock_tag u32       0x42666e70 ("pnfB") when PfnBlock wrote the block (md leaves the pad zero)
/// 240 pfnblock_csum u32      with the tag: md's superblock sum (<see cref="MdSuperblock.Checksum"/>'s
///                            rule) over these 256 bytes with this word taken as zero
/// 244 pad                    0
/// </code>
/// <para>md's bitmap superblock has no checksum of its own; PfnBlock keeps one in the pad, which md
/// ignores and keeps zero. A block with the tag must match its checksum; one without it (written by
/// Linux md) is accepted on its magic, version, uuid and events, as md accepts it.</para>
/// </remarks>
public sealed class MdBitmapSuperblock
{
    /// <summary>BITMAP_MAGIC ("bitm").</summary>
    public const uint Magic = 0x6d746962;
    /// <summary>BITMAP_MAJOR_HI: bits in little-endian order.</summary>
    public const uint Version = 4;
    /// <summary>Bytes of the superblock; the bits start right after it.</summary>
    public const int Bytes = 256;
    /// <summary>state bit: the bitmap is out of date.</summary>
    public const uint StateStale = 2;
    /// <summary>The pad word that says PfnBlock wrote (and checksummed) the block.</summary>
    public const uint PfnBlockTag = 0x42666e70;
    private const int TagOffset = 236;
    private const int ChecksumOffset = 240;

    /// <summary>The array's uuid.</summary>
    public byte[] Uuid { get; set; } = new byte[16];
    /// <summary>Superblock events at the last write.</summary>
    public ulong Events { get; set; }
    /// <summary>Events when bits were last cleared.</summary>
    public ulong EventsCleared { get; set; }
    /// <summary>Member sectors the bits cover.</summary>
    public ulong SyncSize { get; set; }
    /// <summary>State bits.</summary>
    public uint State { get; set; }
    /// <summary>Bytes per bit.</summary>
    public uint ChunkBytes { get; set; }
    /// <summary>Seconds between clearing passes.</summary>
    public uint DaemonSleep { get; set; } = 5;
    /// <summary>Sectors reserved for the bitmap.</summary>
    public uint SectorsReserved { get; set; }

    /// <summary>Bits the bitmap has: one per chunk of <see cref="SyncSize"/>, rounded up.</summary>
    public long Bits => (long)((SyncSize * 512 + ChunkBytes - 1) / ChunkBytes);

    /// <summary>Writes the superblock into the first 256 bytes of <paramref name="block"/>, tagged and checksummed.</summary>
    public void Encode(Span<byte> block)
    {
        Span<byte> b = block[..Bytes];
        b.Clear();
        BinaryPrimitives.WriteUInt32LittleEndian(b, Magic);
        BinaryPrimitives.WriteUInt32LittleEndian(b[4..], Version);
        Uuid.CopyTo(b[8..24]);
        BinaryPrimitives.WriteUInt64LittleEndian(b[24..], Events);
        BinaryPrimitives.WriteUInt64LittleEndian(b[32..], EventsCleared);
        BinaryPrimitives.WriteUInt64LittleEndian(b[40..], SyncSize);
        BinaryPrimitives.WriteUInt32LittleEndian(b[48..], State);
        BinaryPrimitives.WriteUInt32LittleEndian(b[52..], ChunkBytes);
        BinaryPrimitives.WriteUInt32LittleEndian(b[56..], DaemonSleep);
        BinaryPrimitives.WriteUInt32LittleEndian(b[64..], SectorsReserved);
        BinaryPrimitives.WriteUInt32LittleEndian(b[TagOffset..], PfnBlockTag);
        BinaryPrimitives.WriteUInt32LittleEndian(b[ChecksumOffset..], Sum(b));
    }

    /// <summary>Reads and validates a bitmap superblock against its array's superblock.</summary>
    /// <returns>The bitmap superblock, or null with <paramref name="error"/> saying why it is refused.</returns>
    public static MdBitmapSuperblock? Decode(ReadOnlySpan<byte> block, MdSuperblock array, out string? error)
    {
        ReadOnlySpan<byte> b = block[..Bytes];
        error = null;
        uint magic = BinaryPrimitives.ReadUInt32LittleEndian(b);
        if (magic != Magic) { error = $"no write-intent bitmap (magic 0x{magic:x8}, expected 0x{Magic:x8})"; return null; }
        uint version = BinaryPrimitives.ReadUInt32LittleEndian(b[4..]);
        if (version != Version) { error = $"bitmap version {version} is not supported (only {Version})"; return null; }
        if (BinaryPrimitives.ReadUInt32LittleEndian(b[TagOffset..]) == PfnBlockTag)
        {
            uint stored = BinaryPrimitives.ReadUInt32LittleEndian(b[ChecksumOffset..]);
            uint expected = Sum(b);
            if (stored != expected) { error = $"bitmap superblock checksum 0x{stored:x8} is wrong (expected 0x{expected:x8})"; return null; }
        }
        var bm = new MdBitmapSuperblock
        {
            Uuid = b[8..24].ToArray(),
            Events = BinaryPrimitives.ReadUInt64LittleEndian(b[24..]),
            EventsCleared = BinaryPrimitives.ReadUInt64LittleEndian(b[32..]),
            SyncSize = BinaryPrimitives.ReadUInt64LittleEndian(b[40..]),
            State = BinaryPrimitives.ReadUInt32LittleEndian(b[48..]),
            ChunkBytes = BinaryPrimitives.ReadUInt32LittleEndian(b[52..]),
            DaemonSleep = BinaryPrimitives.ReadUInt32LittleEndian(b[56..]),
            SectorsReserved = BinaryPrimitives.ReadUInt32LittleEndian(b[64..]),
        };
        if (!bm.Uuid.AsSpan().SequenceEqual(array.SetUuid)) { error = $"bitmap belongs to array {MdSuperblock.FormatUuid(bm.Uuid)}, not {array.UuidText}"; return null; }
        if (bm.ChunkBytes < 4096 || !uint.IsPow2(bm.ChunkBytes)) { error = $"bitmap chunk of {bm.ChunkBytes} bytes is not a power of two of at least 4 KiB"; return null; }
        if (bm.SyncSize < array.Size) { error = $"bitmap covers {bm.SyncSize} sectors, the array uses {array.Size} per member"; return null; }
        long room = ((long)array.DataOffset - (long)array.SuperOffset - array.BitmapOffset) * 512;
        if (Bytes + (bm.Bits + 7) / 8 > room) { error = $"bitmap of {bm.Bits} bits does not fit the {room} bytes before the data"; return null; }
        return bm;
    }

    private static uint Sum(ReadOnlySpan<byte> b)
    {
        ulong sum = 0;
        for (int i = 0; i < Bytes; i += 4)
            if (i != ChecksumOffset) sum += BinaryPrimitives.ReadUInt32LittleEndian(b[i..]);
        return unchecked((uint)((sum & 0xffffffff) + (sum >> 32)));
    }
}
