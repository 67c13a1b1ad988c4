using System.Buffers.Binary;
using System.Text;

namespace PfnBlock.Targets.Md;

/// <summary>
/// The md v1.2 superblock of one array member (the kernel's <c>struct mdp_superblock_1</c>,
/// <c>include/uapi/linux/raid/md_p.h</c>; all fields little-endian), kept at byte 4096 (sector 8)
/// of the member device so that <c>mdadm --examine</c> and Linux md recognise the member.
/// </summary>
/// <remarks>
/// <para>Layout (byte offset: field — meaning; PfnBlock writes the fields marked * and zeroes the rest):</para>
/// <code>
///   0 magic u32 *            0xa92b4efc (MD_SB_MAGIC)
///   4 major_version u32 *    1
///   8 feature_map u32 *      bit 0 MD_FEATURE_BITMAP_OFFSET (an internal write-intent bitmap at bitmap_offset),
///                            bit 1 MD_FEATURE_RECOVERY_OFFSET (this member is being rebuilt: recovery_offset counts),
///                            bit 9 MD_FEATURE_JOURNAL (RAID5 with a write journal, Raid5Journal);
///                            any other bit (reshape, PPL, bad blocks…) is refused on open
///  12 pad0 u32               0
///  16 set_uuid[16] *         the array's uuid: equal on every member
///  32 set_name[32] *         "host:name", NUL-padded
///  64 ctime u64 *            creation time: low 40 bits seconds, top 24 microseconds
///  72 level u32 *            1 (mirror) or 5 (RAID5); others are refused
///  76 layout u32 *           RAID5: 2 = left-symmetric (md's default, the only one supported); RAID1: 0
///  80 size u64 *             sectors of each member the array uses (from data_offset)
///  88 chunksize u32 *        RAID5 chunk in sectors (a power of two); RAID1: 0
///  92 raid_disks u32 *       members in the array (active slots)
///  96 bitmap_offset s32 *    sectors from the superblock to the bitmap (8: right after this 4 KiB block)
/// 100 new_level … new_offset reshape fields (only with feature bit 4): 0
/// 128 data_offset u64 *      sector where the array's data starts on this member
/// 136 data_size u64 *        sectors from data_offset to the end of the member
/// 144 super_offset u64 *     sector of this superblock: 8 (v1.2)
/// 152 recovery_offset u64 *  with feature bit 1: sectors (from data_offset) already rebuilt
/// 160 dev_number u32 *       this member's index into dev_roles
/// 164 cnt_corrected_read u32 0
/// 168 device_uuid[16] *      this member's own uuid
/// 184 devflags u8, bblog_shift u8, bblog_size u16, bblog_offset s32: 0 (no bad-block log)
/// 192 utime u64 *            last update: low 40 bits seconds, top 24 microseconds
/// 200 events u64 *           raised on every update; the member with the highest count is current,
///                            a lower count marks a stale member
/// 208 resync_offset u64 *    sectors known in sync; all ones when the array was stopped cleanly,
///                            0 while it runs (so an unclean stop shows as "active")
/// 216 sb_csum u32 *          see <see cref="Checksum"/>
/// 220 max_dev u32 *          entries in dev_roles
/// 224 pad3[32]               0
/// 256 dev_roles[max_dev] u16 * role of device n: 0…raid_disks−1 an active slot, 0xffff spare, 0xfffe faulty
/// </code>
/// <para>The superblock is 256 + 2 × max_dev bytes; it is read and written as a whole 4 KiB block.</para>
/// </remarks>
public sealed class MdSuperblock
{
    /// <summary>MD_SB_MAGIC.</summary>
    public const uint Magic = 0xa92b4efc;
    /// <summary>Sector of the v1.2 superblock on its member (4 KiB from the start).</summary>
    public const long SuperOffsetSectors = 8;
    /// <summary>Bytes read and written for a superblock: one 4 KiB block (md's MAX_SB_SIZE).</summary>
    public const int BlockBytes = 4096;
    /// <summary>Most devices the dev_roles array of a 4 KiB superblock can describe.</summary>
    public const int MaxDevices = (BlockBytes - 256) / 2;
    /// <summary>feature_map bit 0: an internal write-intent bitmap at <see cref="BitmapOffset"/>.</summary>
    public const uint FeatureBitmap = 1;
    /// <summary>feature_map bit 1: <see cref="RecoveryOffset"/> is meaningful (the member is being rebuilt).</summary>
    public const uint FeatureRecoveryOffset = 2;
    /// <summary>feature_map bit 9 (MD_FEATURE_JOURNAL): the array has a write journal, and assembly refuses to run it read-write without one.</summary>
    public const uint FeatureJournal = 512;
    /// <summary>dev_roles value of a spare.</summary>
    public const ushort RoleSpare = 0xffff;
    /// <summary>dev_roles value of a faulty member.</summary>
    public const ushort RoleFaulty = 0xfffe;
    /// <summary>Roles at or above this are not active slots (md's MD_DISK_ROLE_MAX).</summary>
    public const ushort RoleMax = 0xff00;
    /// <summary>RAID5 layout ALGORITHM_LEFT_SYMMETRIC.</summary>
    public const uint LayoutLeftSymmetric = 2;
    /// <summary><see cref="ResyncOffset"/> of a cleanly stopped array (MaxSector).</summary>
    public const ulong Clean = ulong.MaxValue;

    /// <summary>feature_map.</summary>
    public uint FeatureMap { get; set; }
    /// <summary>set_uuid: the array's identity, equal on all members.</summary>
    public byte[] SetUuid { get; set; } = new byte[16];
    /// <summary>set_name ("host:name", at most 32 bytes).</summary>
    public string SetName { get; set; } = "";
    /// <summary>ctime as stored (seconds in the low 40 bits).</summary>
    public ulong CTime { get; set; }
    /// <summary>RAID level (1 or 5).</summary>
    public uint Level { get; set; }
    /// <summary>Layout (RAID5: 2, left-symmetric).</summary>
    public uint Layout { get; set; }
    /// <summary>Sectors of each member the array uses.</summary>
    public ulong Size { get; set; }
    /// <summary>Chunk size in sectors (RAID5).</summary>
    public uint ChunkSectors { get; set; }
    /// <summary>Active slots in the array.</summary>
    public uint RaidDisks { get; set; }
    /// <summary>Sectors from the superblock to the bitmap (signed).</summary>
    public int BitmapOffset { get; set; }
    /// <summary>Sector where the data starts on this member.</summary>
    public ulong DataOffset { get; set; }
    /// <summary>Sectors from data_offset to the end of the member.</summary>
    public ulong DataSize { get; set; }
    /// <summary>Sector of this superblock (8).</summary>
    public ulong SuperOffset { get; set; } = SuperOffsetSectors;
    /// <summary>Sectors already rebuilt (with <see cref="FeatureRecoveryOffset"/>).</summary>
    public ulong RecoveryOffset { get; set; }
    /// <summary>This member's index into <see cref="DevRoles"/>.</summary>
    public uint DevNumber { get; set; }
    /// <summary>This member's own uuid.</summary>
    public byte[] DeviceUuid { get; set; } = new byte[16];
    /// <summary>utime as stored.</summary>
    public ulong UTime { get; set; }
    /// <summary>Update counter.</summary>
    public ulong Events { get; set; }
    /// <summary>Sectors known in sync; <see cref="Clean"/> after a clean stop.</summary>
    public ulong ResyncOffset { get; set; } = Clean;
    /// <summary>The checksum as stored (set by <see cref="Encode"/>).</summary>
    public uint StoredChecksum { get; private set; }
    /// <summary>Role of each device number.</summary>
    public ushort[] DevRoles { get; set; } = [];

    /// <summary>True when the array was stopped cleanly.</summary>
    public bool IsClean => ResyncOffset == Clean;
    /// <summary>True when an internal bitmap is present.</summary>
    public bool HasBitmap => (FeatureMap & FeatureBitmap) != 0;
    /// <summary>This member's role, or <see cref="RoleSpare"/> when its number lies outside dev_roles (md's role_from_sb).</summary>
    public ushort Role => DevNumber < DevRoles.Length ? DevRoles[DevNumber] : RoleSpare;
    /// <summary>The array's uuid as mdadm prints it (xxxxxxxx:xxxxxxxx:xxxxxxxx:xxxxxxxx).</summary>
    public string UuidText => FormatUuid(SetUuid);
    /// <summary>The array's sectors: a member's size times the data members.</summary>
    public ulong ArraySectors => Level == 5 ? Size * (RaidDisks - 1) : Size;

    /// <summary>A shallow copy with its own role array (for per-member variants of one array's superblock).</summary>
    public MdSuperblock Clone()
    {
        var c = (MdSuperblock)MemberwiseClone();
        c.DevRoles = (ushort[])DevRoles.Clone();
        c.SetUuid = (byte[])SetUuid.Clone();
        c.DeviceUuid = (byte[])DeviceUuid.Clone();
        return c;
    }

    /// <summary>A 16-byte uuid as mdadm prints it: four groups of 8 hex digits, bytes in order.</summary>
    public static string FormatUuid(ReadOnlySpan<byte> uuid)
    {
        var sb = new StringBuilder(35);
        for (int i = 0; i < 16; i++)
        {
            if (i > 0 && (i & 3) == 0) sb.Append(':');
            sb.Append(uuid[i].ToString("x2", System.Globalization.CultureInfo.InvariantCulture));
        }
        return sb.ToString();
    }

    /// <summary>A time in md's format: seconds in the low 40 bits, microseconds in the top 24.</summary>
    public static ulong EncodeTime(DateTimeOffset t)
    {
        long us = t.ToUnixTimeMilliseconds() % 1000 * 1000;
        return ((ulong)t.ToUnixTimeSeconds() & ((1UL << 40) - 1)) | (ulong)us << 40;
    }

    /// <summary>The time an md timestamp names (UTC).</summary>
    public static DateTimeOffset DecodeTime(ulong t) => DateTimeOffset.FromUnixTimeSeconds((long)(t & ((1UL << 40) - 1)));

    /// <summary>
    /// The checksum md computes (<c>calc_sb_1_csum</c>): with sb_csum taken as 0, the sum of the
    /// superblock's 256 + 2 × max_dev bytes as little-endian u32 words (a trailing u16 when the size
    /// is not a multiple of 4) in 64 bits, folded once: low 32 bits plus the high 32, kept to 32 bits.
    /// </summary>
    public static uint Checksum(ReadOnlySpan<byte> superblock, uint maxDev)
    {
        int size = 256 + (int)maxDev * 2;
        ulong sum = 0;
        int i = 0;
        for (; size - i >= 4; i += 4)
            if (i != 216) sum += BinaryPrimitives.ReadUInt32LittleEndian(superblock[i..]);
        if (size - i == 2) sum += BinaryPrimitives.ReadUInt16LittleEndian(superblock[i..]);
        return unchecked((uint)((sum & 0xffffffff) + (sum >> 32)));
    }

    /// <summary>Writes the superblock into <paramref name="block"/> (4 KiB, zeroed first) with its checksum.</summary>
    public void Encode(Span<byte> block)
    {
        if (block.Length < BlockBytes) throw new ArgumentException("a superblock needs a 4 KiB block", nameof(block));
        if (DevRoles.Length > MaxDevices) throw new InvalidOperationException($"too many devices for a v1.2 superblock ({DevRoles.Length} > {MaxDevices})");
        block[..BlockBytes].Clear();
        W32(block, 0, Magic);
        W32(block, 4, 1);
        W32(block, 8, FeatureMap);
        SetUuid.CopyTo(block[16..32]);
        byte[] name = Encoding.UTF8.GetBytes(SetName);
        if (name.Length > 32) throw new InvalidOperationException($"array name '{SetName}' is longer than 32 bytes");
        name.CopyTo(block[32..64]);
        W64(block, 64, CTime);
        W32(block, 72, Level);
        W32(block, 76, Layout);
        W64(block, 80, Size);
        W32(block, 88, ChunkSectors);
        W32(block, 92, RaidDisks);
        W32(block, 96, unchecked((uint)BitmapOffset));
        W64(block, 128, DataOffset);
        W64(block, 136, DataSize);
        W64(block, 144, SuperOffset);
        W64(block, 152, RecoveryOffset);
        W32(block, 160, DevNumber);
        DeviceUuid.CopyTo(block[168..184]);
        W64(block, 192, UTime);
        W64(block, 200, Events);
        W64(block, 208, ResyncOffset);
        W32(block, 220, (uint)DevRoles.Length);
        for (int i = 0; i < DevRoles.Length; i++) BinaryPrimitives.WriteUInt16LittleEndian(block[(256 + 2 * i)..], DevRoles[i]);
        StoredChecksum = Checksum(block, (uint)DevRoles.Length);
        W32(block, 216, StoredChecksum);
    }

    /// <summary>
    /// Reads and validates a superblock (the checks of md's <c>super_1_load</c> that need only the
    /// block and the member's size): magic, major version 1, max_dev, checksum, super_offset 8,
    /// supported features, level and layout, and that data_offset and size fit the member.
    /// </summary>
    /// <param name="block">The 4 KiB at byte 4096 of the member.</param>
    /// <param name="memberSectors">The member device's size in sectors.</param>
    /// <param name="error">Why the block is refused; null when it is valid.</param>
    /// <returns>The superblock, or null with <paramref name="error"/> set.</returns>
    public static MdSuperblock? Decode(ReadOnlySpan<byte> block, long memberSectors, out string? error)
    {
        error = null;
        uint magic = R32(block, 0);
        if (magic != Magic) { error = $"no md superblock (magic 0x{magic:x8} at byte 4096, expected 0x{Magic:x8})"; return null; }
        uint major = R32(block, 4);
        if (major != 1) { error = $"md superblock major version {major} is not supported (only 1)"; return null; }
        uint maxDev = R32(block, 220);
        if (maxDev > MaxDevices) { error = $"md superblock claims {maxDev} devices (at most {MaxDevices} fit)"; return null; }
        uint stored = R32(block, 216);
        uint expected = Checksum(block, maxDev);
        if (stored != expected) { error = $"md superblock checksum 0x{stored:x8} is wrong (expected 0x{expected:x8})"; return null; }
        var sb = new MdSuperblock
        {
            FeatureMap = R32(block, 8),
            SetUuid = block[16..32].ToArray(),
            SetName = Encoding.UTF8.GetString(block[32..64]).TrimEnd('\0'),
            CTime = R64(block, 64),
            Level = R32(block, 72),
            Layout = R32(block, 76),
            Size = R64(block, 80),
            ChunkSectors = R32(block, 88),
            RaidDisks = R32(block, 92),
            BitmapOffset = unchecked((int)R32(block, 96)),
            DataOffset = R64(block, 128),
            DataSize = R64(block, 136),
            SuperOffset = R64(block, 144),
            RecoveryOffset = R64(block, 152),
            DevNumber = R32(block, 160),
            DeviceUuid = block[168..184].ToArray(),
            UTime = R64(block, 192),
            Events = R64(block, 200),
            ResyncOffset = R64(block, 208),
            StoredChecksum = stored,
            DevRoles = new ushort[maxDev],
        };
        for (int i = 0; i < maxDev; i++) sb.DevRoles[i] = BinaryPrimitives.ReadUInt16LittleEndian(block[(256 + 2 * i)..]);
        error = sb.Validate(memberSectors);
        return error is null ? sb : null;
    }

    /// <summary>The geometry checks; null when the superblock describes something this implementation can run.</summary>
    private string? Validate(long memberSectors)
    {
        if (SuperOffset != SuperOffsetSectors) return $"md superblock records super_offset {SuperOffset}, but a v1.2 superblock sits at sector {SuperOffsetSectors}";
        uint unsupported = FeatureMap & ~(FeatureBitmap | FeatureRecoveryOffset | FeatureJournal);
        if (unsupported != 0) return $"md superblock has features 0x{unsupported:x} (reshape, PPL or bad-block log) that are not supported";
        if (Level is not (1 or 5)) return $"RAID level {unchecked((int)Level)} is not supported (only 1 and 5)";
        if (Level == 5 && Layout != LayoutLeftSymmetric) return $"RAID5 layout {Layout} is not supported (only {LayoutLeftSymmetric}, left-symmetric)";
        if (Level == 5 && (ChunkSectors == 0 || !uint.IsPow2(ChunkSectors))) return $"RAID5 chunk of {ChunkSectors} sectors is not a power of two";
        if (RaidDisks < (Level == 5 ? 3u : 2u) || RaidDisks > MaxDevices) return $"{RaidDisks} raid disks is not a valid RAID{Level} geometry";
        if (DataOffset < SuperOffsetSectors + BlockBytes / 512) return $"data offset {DataOffset} overlaps the superblock";
        if ((long)DataOffset >= memberSectors || DataSize > (ulong)memberSectors - DataOffset)
            return $"data offset {DataOffset} + data size {DataSize} sectors run past the member's {memberSectors} sectors";
        if (Size == 0 || Size > DataSize) return $"array uses {Size} sectors per member but only {DataSize} are available";
        if (HasBitmap && (BitmapOffset < BlockBytes / 512 || (ulong)(SuperOffsetSectors + (ulong)BitmapOffset) >= DataOffset))
            return $"bitmap offset {BitmapOffset} does not lie between the superblock and the data";
        return null;
    }

    private static void W32(Span<byte> b, int at, uint v) => BinaryPrimitives.WriteUInt32LittleEndian(b[at..], v);
    private static void W64(Span<byte> b, int at, ulong v) => BinaryPrimitives.WriteUInt64LittleEndian(b[at..], v);
    private static uint R32(ReadOnlySpan<byte> b, int at) => BinaryPrimitives.ReadUInt32LittleEndian(b[at..]);
    private static ulong R64(ReadOnlySpan<byte> b, int at) => BinaryPrimitives.ReadUInt64LittleEndian(b[at..]);
}
