using System.Buffers.Binary;

namespace PfnBlock.Namespaces.Btt;

/// <summary>Which implementation's conventions a BTT follows where the kernel and PMDK differ.</summary>
public enum BttFlavor
{
    /// <summary>
    /// Linux <c>drivers/nvdimm/btt.c</c> (BTT v1.1): internal LBA size rounded up to 64 bytes, flog
    /// map fields stored without flag bits, initial flog entries without flags. Used inside
    /// PfnBlock sector namespaces.
    /// </summary>
    Kernel,
    /// <summary>
    /// PMDK <c>src/libpmemblk/btt.c</c>: internal LBA size at least 512 and rounded up to 256, flog
    /// map fields stored with their flag bits, initial flog entries carrying the zero flag, parent
    /// uuid = the pool-set uuid. Used for pmemblk pool files.
    /// </summary>
    Pmemblk,
}

/// <summary>
/// The BTT arena info block (kernel <c>struct btt_sb</c>, PMDK <c>struct btt_info</c>): 4 KiB at the
/// start of every arena, with an identical backup copy in the arena's last 4 KiB.
/// </summary>
/// <remarks>
/// Layout, little-endian (sources: drivers/nvdimm/btt.h <c>struct btt_sb</c>; PMDK
/// src/libpmemblk/btt_layout.h <c>struct btt_info</c>; design brief §3a–3b):
/// <code>
/// off  size field              meaning
///   0    16 sig                "BTT_ARENA_INFO\0" padded with NUL to 16 bytes
///  16    16 uuid               identity of this BTT (random at layout time)
///  32    16 parent_uuid        namespace uuid (kernel, PfnBlock) or pool-set uuid (pmemblk)
///  48     4 flags              bit 0 IB_FLAG_ERROR / BTTINFO_FLAG_ERROR: arena is read-only
///  52     2 major              1 (v1.1) or 2 (v2.0); pmemblk accepts any major ≥ 1
///  54     2 minor              1 for v1.1
///  56     4 external_lbasize   sector size seen by users (512 or 4096 here)
///  60     4 external_nlba      sectors exported by this arena = internal_nlba - nfree
///  64     4 internal_lbasize   size of a data block (≥ external, rounded to 64 or 256)
///  68     4 internal_nlba      data blocks in the arena (exported + free)
///  72     4 nfree              free blocks = flog lanes (256, ND_MAX_LANES)
///  76     4 infosize           4096
///  80     8 nextoff            offset of the next arena from this one, 0 in the last arena
///  88     8 dataoff            offset of the data blocks (4096)
///  96     8 mapoff             offset of the map (external_nlba u32 entries, 4 KiB rounded)
/// 104     8 logoff / flogoff   offset of the flog (nfree × 64-byte lane groups, 4 KiB rounded)
/// 112     8 info2off / infooff offset of the backup info block (arena size - 4096)
/// 120  3968 unused             zero
/// 4088    8 checksum           Fletcher-64 (nd_fletcher64) of the block with this field zeroed
/// </code>
/// All offsets are relative to the start of the arena.
/// </remarks>
public sealed record BttInfoBlock
{
    /// <summary>Size of the block on media.</summary>
    public const int Size = 4096;
    /// <summary>Offset of the checksum field.</summary>
    public const int ChecksumOffset = 4088;
    /// <summary>Largest arena (ARENA_MAX_SIZE, BTT_MAX_ARENA): 512 GiB.</summary>
    public const long MaxArenaSize = 1L << 39;
    /// <summary>Smallest arena (ARENA_MIN_SIZE, BTT_MIN_SIZE): 16 MiB.</summary>
    public const long MinArenaSize = 1L << 24;
    /// <summary>Free blocks per arena (BTT_DEFAULT_NFREE, ND_MAX_LANES).</summary>
    public const uint DefaultNfree = 256;
    /// <summary>Bytes of one lane's flog group (two 16-byte entries padded to 64).</summary>
    public const int FlogGroupSize = 64;
    /// <summary>The signature, NUL-padded to 16 bytes.</summary>
    public static ReadOnlySpan<byte> Signature => "BTT_ARENA_INFO\0\0"u8;

    /// <summary>Identity of this BTT: random at layout time, the same in every arena.</summary>
    public Guid Uuid { get; init; }
    /// <summary>Identity of the container (namespace uuid or pool-set uuid).</summary>
    public Guid ParentUuid { get; init; }
    /// <summary>Arena flags; bit 0 (IB_FLAG_ERROR) makes the arena refuse writes (<see cref="HasErrorFlag"/>).</summary>
    public uint Flags { get; init; }
    /// <summary>Format major version: 1 (v1.1, the one written) or 2 (v2.0, accepted on read); pmemblk takes any major of at least 1.</summary>
    public ushort Major { get; init; } = 1;
    /// <summary>Format minor version; 1 for v1.1.</summary>
    public ushort Minor { get; init; } = 1;
    /// <summary>Bytes per sector as users see them: the namespace's sector size or the pool's block size.</summary>
    public uint ExternalLbaSize { get; init; }
    /// <summary>Sectors this arena exports, <see cref="InternalNlba"/> − <see cref="Nfree"/>; arenas serve consecutive sector ranges in media order.</summary>
    public uint ExternalNlba { get; init; }
    /// <summary>Bytes per data block: <see cref="ExternalLbaSize"/> rounded up to 64 (kernel) or to 256 with a minimum of 512 (pmemblk).</summary>
    public uint InternalLbaSize { get; init; }
    /// <summary>Data blocks in the arena, one per exported sector plus <see cref="Nfree"/> free ones; map and flog entries name blocks below it.</summary>
    public uint InternalNlba { get; init; }
    /// <summary>Free blocks, one per flog lane (256): the most writers the arena takes at once.</summary>
    public uint Nfree { get; init; }
    /// <summary>Size of the info block (4096).</summary>
    public uint InfoSize { get; init; } = Size;
    /// <summary>Byte offset of the next arena from this one's start, 0 in the last arena.</summary>
    public long NextOff { get; init; }
    /// <summary>Byte offset of the first data block from the arena's start (4096, right after this block).</summary>
    public long DataOff { get; init; }
    /// <summary>Byte offset of the map from the arena's start: <see cref="ExternalNlba"/> 4-byte entries, rounded up to 4 KiB.</summary>
    public long MapOff { get; init; }
    /// <summary>Byte offset of the flog from the arena's start: <see cref="Nfree"/> 64-byte lane groups, rounded up to 4 KiB.</summary>
    public long FlogOff { get; init; }
    /// <summary>Byte offset of the backup info block from the arena's start: the arena's last 4 KiB.</summary>
    public long Info2Off { get; init; }

    /// <summary>True when bit 0 of <see cref="Flags"/> (arena error) is set.</summary>
    public bool HasErrorFlag => (Flags & 1) != 0;
    /// <summary>Arena size implied by the backup offset.</summary>
    public long ArenaSize => Info2Off + Size;

    /// <summary>Serialises the block with its checksum.</summary>
    public void Write(Span<byte> block)
    {
        block = block[..Size];
        block.Clear();
        Signature.CopyTo(block);
        Uuid.TryWriteBytes(block[16..], bigEndian: true, out _);
        ParentUuid.TryWriteBytes(block[32..], bigEndian: true, out _);
        BinaryPrimitives.WriteUInt32LittleEndian(block[48..], Flags);
        BinaryPrimitives.WriteUInt16LittleEndian(block[52..], Major);
        BinaryPrimitives.WriteUInt16LittleEndian(block[54..], Minor);
        BinaryPrimitives.WriteUInt32LittleEndian(block[56..], ExternalLbaSize);
        BinaryPrimitives.WriteUInt32LittleEndian(block[60..], ExternalNlba);
        BinaryPrimitives.WriteUInt32LittleEndian(block[64..], InternalLbaSize);
        BinaryPrimitives.WriteUInt32LittleEndian(block[68..], InternalNlba);
        BinaryPrimitives.WriteUInt32LittleEndian(block[72..], Nfree);
        BinaryPrimitives.WriteUInt32LittleEndian(block[76..], InfoSize);
        BinaryPrimitives.WriteInt64LittleEndian(block[80..], NextOff);
        BinaryPrimitives.WriteInt64LittleEndian(block[88..], DataOff);
        BinaryPrimitives.WriteInt64LittleEndian(block[96..], MapOff);
        BinaryPrimitives.WriteInt64LittleEndian(block[104..], FlogOff);
        BinaryPrimitives.WriteInt64LittleEndian(block[112..], Info2Off);
        BinaryPrimitives.WriteUInt64LittleEndian(block[ChecksumOffset..], Fletcher64.ComputeSkipping(block, ChecksumOffset));
    }

    /// <summary>True when the block starts with the BTT signature (checksum not checked).</summary>
    public static bool HasSignature(ReadOnlySpan<byte> block) => block.Length >= 16 && block[..16].SequenceEqual(Signature);

    /// <summary>Parses a block, checking only its signature and checksum (<see cref="Validate"/> checks the rest).</summary>
    public static bool TryParse(ReadOnlySpan<byte> block, out BttInfoBlock? info, out string? error)
    {
        info = null;
        if (block.Length < Size) { error = "shorter than an info block"; return false; }
        if (!HasSignature(block)) { error = "no BTT_ARENA_INFO signature"; return false; }
        ulong stored = BinaryPrimitives.ReadUInt64LittleEndian(block[ChecksumOffset..]);
        ulong computed = Fletcher64.ComputeSkipping(block[..Size], ChecksumOffset);
        if (stored != computed) { error = $"checksum mismatch (stored {stored:x16}, computed {computed:x16})"; return false; }
        info = new BttInfoBlock
        {
            Uuid = new Guid(block.Slice(16, 16), bigEndian: true),
            ParentUuid = new Guid(block.Slice(32, 16), bigEndian: true),
            Flags = BinaryPrimitives.ReadUInt32LittleEndian(block[48..]),
            Major = BinaryPrimitives.ReadUInt16LittleEndian(block[52..]),
            Minor = BinaryPrimitives.ReadUInt16LittleEndian(block[54..]),
            ExternalLbaSize = BinaryPrimitives.ReadUInt32LittleEndian(block[56..]),
            ExternalNlba = BinaryPrimitives.ReadUInt32LittleEndian(block[60..]),
            InternalLbaSize = BinaryPrimitives.ReadUInt32LittleEndian(block[64..]),
            InternalNlba = BinaryPrimitives.ReadUInt32LittleEndian(block[68..]),
            Nfree = BinaryPrimitives.ReadUInt32LittleEndian(block[72..]),
            InfoSize = BinaryPrimitives.ReadUInt32LittleEndian(block[76..]),
            NextOff = BinaryPrimitives.ReadInt64LittleEndian(block[80..]),
            DataOff = BinaryPrimitives.ReadInt64LittleEndian(block[88..]),
            MapOff = BinaryPrimitives.ReadInt64LittleEndian(block[96..]),
            FlogOff = BinaryPrimitives.ReadInt64LittleEndian(block[104..]),
            Info2Off = BinaryPrimitives.ReadInt64LittleEndian(block[112..]),
        };
        error = null;
        return true;
    }

    /// <summary>
    /// Null when the fields describe a usable arena of at most <paramref name="room"/> bytes holding
    /// <paramref name="lbaSize"/>-byte sectors under <paramref name="parentUuid"/>, else the reason.
    /// </summary>
    public string? Validate(long room, uint lbaSize, Guid parentUuid, BttFlavor flavor)
    {
        if (flavor == BttFlavor.Kernel ? Major is not (1 or 2) : Major == 0) return $"unsupported BTT version {Major}.{Minor}";
        if (parentUuid != Guid.Empty && ParentUuid != parentUuid)
            return $"parent uuid {ParentUuid} does not match the container's {parentUuid} (the BTT belongs to another namespace or pool)";
        if (ExternalLbaSize != lbaSize) return $"external LBA size {ExternalLbaSize} differs from the container's sector size {lbaSize}";
        if (InternalLbaSize < ExternalLbaSize) return $"internal LBA size {InternalLbaSize} is smaller than the external {ExternalLbaSize}";
        if (Nfree == 0 || Nfree > InternalNlba / 2) return $"nfree {Nfree} is impossible for {InternalNlba} internal blocks";
        if (ExternalNlba != InternalNlba - Nfree) return $"external LBA count {ExternalNlba} is not internal {InternalNlba} - nfree {Nfree}";
        if (InternalNlba > MapEntry.LbaMask + 1) return $"internal LBA count {InternalNlba} exceeds what a map entry addresses";
        if (InfoSize != Size) return $"info size {InfoSize} is not {Size}";
        long arena = ArenaSize;
        if (arena > room || arena > MaxArenaSize) return $"arena size {arena} exceeds the space available ({room} bytes)";
        if (NextOff != 0 && NextOff != arena) return $"next arena offset {NextOff} is not the arena size {arena}";
        if (DataOff < Size || DataOff + (long)InternalNlba * InternalLbaSize > MapOff) return "data blocks overlap the info block or the map";
        if (MapOff + (long)ExternalNlba * MapEntry.Size > FlogOff) return "map overlaps the flog";
        if (FlogOff + (long)Nfree * FlogGroupSize > Info2Off) return "flog overlaps the backup info block";
        if (((DataOff | MapOff | FlogOff | Info2Off) & (Size - 1)) != 0) return "an offset is not 4 KiB aligned";
        return null;
    }

    /// <summary>The internal block size for <paramref name="externalLbaSize"/> under the flavor's rounding rule.</summary>
    public static uint InternalLbaSizeFor(uint externalLbaSize, BttFlavor flavor) => flavor == BttFlavor.Kernel
        ? (externalLbaSize + 63) & ~63u                          // INT_LBASIZE_ALIGNMENT 64
        : (Math.Max(externalLbaSize, 512u) + 255) & ~255u;       // BTT_MIN_LBA_SIZE 512, BTT_INTERNAL_LBA_ALIGNMENT 256

    /// <summary>
    /// The sizes of the arenas a BTT over <paramref name="rawSize"/> bytes has: full 512 GiB arenas,
    /// then the remainder when it is at least 16 MiB (a smaller tail is left unused).
    /// </summary>
    public static IReadOnlyList<long> ArenaSizes(long rawSize, BttFlavor flavor)
    {
        var sizes = new List<long>();
        long left = rawSize;
        while (left >= MinArenaSize)
        {
            long size = Math.Min(left, MaxArenaSize);
            if (flavor == BttFlavor.Kernel) size &= ~(long)(Size - 1);
            sizes.Add(size);
            left -= Math.Min(left, MaxArenaSize);
        }
        return sizes;
    }

    /// <summary>
    /// The geometry of a new arena of <paramref name="arenaSize"/> bytes (kernel <c>alloc_arena</c>,
    /// PMDK <c>btt_info_set</c>): info | data | map | flog | backup info.
    /// </summary>
    public static BttInfoBlock ForArena(long arenaSize, bool last, uint externalLbaSize, BttFlavor flavor, Guid uuid, Guid parentUuid)
    {
        uint internalLbaSize = InternalLbaSizeFor(externalLbaSize, flavor);
        long flogSize = RoundUp(DefaultNfree * FlogGroupSize, Size);
        long available = arenaSize - 2 * Size - flogSize;
        long internalNlba = (available - Size) / (internalLbaSize + MapEntry.Size);
        if (internalNlba < 2 * DefaultNfree) throw new ArgumentException($"arena of {arenaSize} bytes is too small for a BTT");
        uint external = (uint)internalNlba - DefaultNfree;
        long mapSize = RoundUp((long)external * MapEntry.Size, Size);
        long info2 = arenaSize - Size;
        long flog = info2 - flogSize;
        return new BttInfoBlock
        {
            Uuid = uuid,
            ParentUuid = parentUuid,
            Major = 1,
            Minor = 1,
            ExternalLbaSize = externalLbaSize,
            ExternalNlba = external,
            InternalLbaSize = internalLbaSize,
            InternalNlba = (uint)internalNlba,
            Nfree = DefaultNfree,
            NextOff = last ? 0 : arenaSize,
            DataOff = Size,
            MapOff = flog - mapSize,
            FlogOff = flog,
            Info2Off = info2,
        };
    }

    private static long RoundUp(long v, long a) => (v + a - 1) / a * a;
}
