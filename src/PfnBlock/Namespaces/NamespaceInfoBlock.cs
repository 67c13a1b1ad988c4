using System.Buffers.Binary;
using System.Text;
using PfnBlock.Memory;

namespace PfnBlock.Namespaces;

/// <summary>How a namespace presents its data area.</summary>
public enum NamespaceMode : uint
{
    /// <summary>Byte-addressable pmem exposed as a block device with no sector atomicity (ndctl "raw"/"fsdax").</summary>
    Raw = 1,
    /// <summary>A Block Translation Table makes sector writes atomic (ndctl "sector").</summary>
    Sector = 2,
    /// <summary>
    /// No block I/O: the 2 MiB-aligned data area is mapped by applications (<see cref="DaxNamespace"/>),
    /// any number at once, like the kernel's device-DAX (ndctl "devdax"); block opens are refused.
    /// </summary>
    DevDax = 3,
}

/// <summary>
/// The PfnBlock namespace info block: the first 4 KiB of a namespace, with a backup copy in the
/// last 4 KiB. Shaped after the kernel's pfn info block (<c>struct nd_pfn_sb</c>, ndctl
/// <c>namespace.h</c>) and checksummed the same way, so a namespace is recognised, reopened and
/// described without outside state.
/// </summary>
/// <remarks>
/// Layout, little-endian (PfnBlock format 1.2; 1.1 is the same without mode 3; 1.0 is 1.1 with the
/// bad-block table's area reserved and map kinds 0 and 1 only):
/// <code>
/// off  size field
///   0    16 signature      "PFNBLOCK_NSINFO\0"
///  16    16 uuid           namespace identity (RFC 4122 bytes)
///  32    16 parent_uuid    zero, or the device the namespace was carved from
///  48     4 flags          bit 0 = error (the namespace was marked failed)
///  52     2 major          1: readers refuse any other major
///  54     2 minor          2 written; readers accept any minor whose fields they know (see CheckGeometry)
///  56     8 size           namespace size in bytes when created (the file may be larger, never smaller)
///  64     8 dataoff        byte offset of the data area, a multiple of align
///  72     8 datasize       bytes of the data area
///  80     4 align          data alignment in bytes (power of two, ≥ 4096)
///  84     4 mode           1 raw, 2 sector, 3 devdax (1.2; dataoff and align then multiples of 2 MiB)
///  88     4 sector_size    logical block size exposed (512 or 4096)
///  92     4 map_kind       page-descriptor map (0 none, 1 dense, 2 device, 3 huge, 4 on demand, 5 temporary)
///  96     8 map_off        byte offset of in-device descriptors (map_kind 2: 4096, right after this block), else 0
/// 104     8 map_size       bytes reserved for them (map_kind 2: up to dataoff; format in DescriptorReserve), else 0
/// 112    64 name           UTF-8, NUL-padded
/// 176  3864 badblocks      1.1: the bad-block table (<see cref="BadBlockList"/> documents it field by field);
///                          1.0: zero, read as an empty list
/// 4040   48 reserved       zero
/// 4088    8 checksum       Fletcher-64 of the 4 KiB block with this field zeroed
/// </code>
/// Versions: the major changes only when an old reader would misread a new block, and readers
/// refuse any other. A minor adds values an old reader does not know (a mode, a map kind) in
/// fields it already checks, so an old reader refuses what it does not know rather than misreading
/// it; since 1.2 a reader names the cause: a block with a minor newer than its own and a value it
/// does not know is refused as written by a newer PfnBlock. 1.2 added devdax (mode 3): a 1.1
/// reader refuses it as "unknown mode 3", a 1.2 reader opens every 1.0 and 1.1 block (and the 1.1
/// devdax blocks written before the bump). Bad-block updates keep the block's minor, or raise it
/// to 1.1 for a 1.0 block, whose reserved area the table then fills.
/// The backup copy at <c>size - 4096</c> is written first and read when the primary fails
/// validation (as the BTT does with its info2 block). Every rewrite (create, a bad-block list
/// update) writes and persists the backup before the primary.
/// </remarks>
public sealed record NamespaceInfoBlock
{
    /// <summary>Size of the block on media.</summary>
    public const int Size = 4096;
    /// <summary>Offset of the checksum field.</summary>
    public const int ChecksumOffset = 4088;
    /// <summary>The major version this code reads and writes.</summary>
    public const ushort CurrentMajor = 1;
    /// <summary>
    /// The minor version this code writes: 1 added the bad-block table and the map kinds device
    /// (with its reserve), huge, on-demand and temporary (a 1.0 reader refuses those maps); 2 added
    /// devdax mode (a 1.1 reader refuses mode 3).
    /// </summary>
    public const ushort CurrentMinor = 2;
    /// <summary>Part of the reason <see cref="CheckGeometry"/> gives for a value this build does not know in a block of a newer minor.</summary>
    public const string NewerFormat = "is newer than this build";
    /// <summary>The first minor version with devdax mode (<see cref="NamespaceMode.DevDax"/>).</summary>
    public const ushort DevDaxMinor = 2;
    /// <summary>The first minor version with a bad-block table.</summary>
    public const ushort BadBlocksMinor = 1;
    /// <summary>The first 16 bytes of a namespace ("PFNBLOCK_NSINFO" and a NUL); checked before the checksum, so a foreign file is told from a damaged namespace.</summary>
    public static ReadOnlySpan<byte> Signature => "PFNBLOCK_NSINFO\0"u8;

    /// <summary>Namespace identity, random at creation; a sector namespace's BTT records it as its parent uuid.</summary>
    public Guid Uuid { get; init; }
    /// <summary>The device the namespace was carved from, or <see cref="Guid.Empty"/> (always empty so far).</summary>
    public Guid ParentUuid { get; init; }
    /// <summary>Flag bits; bit 0 marks the namespace failed. Written as 0, and not acted on at open yet.</summary>
    public uint Flags { get; init; }
    /// <summary>Format major version; readers refuse any but <see cref="CurrentMajor"/>.</summary>
    public ushort Major { get; init; } = CurrentMajor;
    /// <summary>Format minor version; readers accept any.</summary>
    public ushort Minor { get; init; } = CurrentMinor;
    /// <summary>Bytes the namespace spans, info blocks included, as created: the file may be larger, never smaller, and the backup info block sits at this size − 4096.</summary>
    public long NamespaceSize { get; init; }
    /// <summary>Byte offset of the data area from the namespace's start; a multiple of <see cref="Align"/>.</summary>
    public long DataOffset { get; init; }
    /// <summary>Bytes of the data area, a multiple of 4096 that ends before the backup info block.</summary>
    public long DataSize { get; init; }
    /// <summary>Alignment of the data area in bytes: a power of two of at least 4096 (4096 for sector namespaces, whose BTT starts at offset 4096).</summary>
    public uint Align { get; init; }
    /// <summary>Raw: the data area is read and written directly; sector: it holds a BTT that makes each sector write atomic; devdax: applications map it, no block I/O.</summary>
    public NamespaceMode Mode { get; init; }
    /// <summary>Logical block size of the namespace's device, 512 or 4096; in sector mode also the BTT's sector size.</summary>
    public uint SectorSize { get; init; }
    /// <summary>The page-descriptor map built for the data area's frames each time the namespace is opened.</summary>
    public DescriptorMapKind MapKind { get; init; }
    /// <summary>Byte offset of descriptors stored in the device itself (<see cref="DescriptorMapKind.Device"/>), else 0.</summary>
    public long MapOffset { get; init; }
    /// <summary>Bytes reserved for descriptors stored in the device itself, else 0.</summary>
    public long MapSize { get; init; }
    /// <summary>A label of at most 64 UTF-8 bytes, shown by <c>namespace info</c>; namespaces are found by path, never by name.</summary>
    public string Name { get; init; } = "";
    /// <summary>Media errors of a raw namespace's data area (always empty for format 1.0 and for sector namespaces, whose BTT marks errors itself).</summary>
    public BadBlockList BadBlocks { get; init; } = BadBlockList.Empty;

    /// <summary>Offset of the backup copy for a namespace of <paramref name="namespaceSize"/> bytes.</summary>
    public static long BackupOffset(long namespaceSize) => namespaceSize - Size;

    /// <summary>Serialises the block with its checksum.</summary>
    public void Write(Span<byte> block)
    {
        if (block.Length < Size) throw new ArgumentException("block is smaller than 4 KiB", nameof(block));
        block = block[..Size];
        block.Clear();
        Signature.CopyTo(block);
        Uuid.TryWriteBytes(block[16..], bigEndian: true, out _);
        ParentUuid.TryWriteBytes(block[32..], bigEndian: true, out _);
        BinaryPrimitives.WriteUInt32LittleEndian(block[48..], Flags);
        BinaryPrimitives.WriteUInt16LittleEndian(block[52..], Major);
        BinaryPrimitives.WriteUInt16LittleEndian(block[54..], Minor);
        BinaryPrimitives.WriteInt64LittleEndian(block[56..], NamespaceSize);
        BinaryPrimitives.WriteInt64LittleEndian(block[64..], DataOffset);
        BinaryPrimitives.WriteInt64LittleEndian(block[72..], DataSize);
        BinaryPrimitives.WriteUInt32LittleEndian(block[80..], Align);
        BinaryPrimitives.WriteUInt32LittleEndian(block[84..], (uint)Mode);
        BinaryPrimitives.WriteUInt32LittleEndian(block[88..], SectorSize);
        BinaryPrimitives.WriteUInt32LittleEndian(block[92..], (uint)MapKind);
        BinaryPrimitives.WriteInt64LittleEndian(block[96..], MapOffset);
        BinaryPrimitives.WriteInt64LittleEndian(block[104..], MapSize);
        byte[] name = Encoding.UTF8.GetBytes(Name);
        if (name.Length > 64) throw new ArgumentException("name is longer than 64 bytes");
        name.CopyTo(block[112..]);
        if (Minor >= BadBlocksMinor) BadBlocks.Write(block[BadBlockList.TableOffset..]);
        else if (!BadBlocks.IsEmpty) throw new ArgumentException($"format {Major}.{Minor} has no bad-block table");
        BinaryPrimitives.WriteUInt64LittleEndian(block[ChecksumOffset..], Fletcher64.ComputeSkipping(block, ChecksumOffset));
    }

    /// <summary>Serialises the block into a mapping with traceable stores (<see cref="PmemStore"/>); the caller persists it.</summary>
    internal unsafe void Store(byte* destination)
    {
        byte[] block = new byte[Size];
        Write(block);
        PmemStore.Copy(destination, block);
    }

    /// <summary>True when the block starts with the PfnBlock signature (checksum not checked).</summary>
    public static bool HasSignature(ReadOnlySpan<byte> block) => block.Length >= 16 && block[..16].SequenceEqual(Signature);

    /// <summary>
    /// Parses and validates a block: signature, checksum, version, and that every field is
    /// consistent with a namespace of <paramref name="deviceSize"/> bytes.
    /// </summary>
    /// <param name="block">4 KiB read from the device.</param>
    /// <param name="deviceSize">The size of the file or device now.</param>
    /// <param name="info">The parsed block when valid.</param>
    /// <param name="error">Why the block is not valid.</param>
    public static bool TryParse(ReadOnlySpan<byte> block, long deviceSize, out NamespaceInfoBlock? info, out string? error)
    {
        info = null;
        if (block.Length < Size) { error = "shorter than an info block"; return false; }
        if (!HasSignature(block)) { error = "no PfnBlock namespace signature"; return false; }
        ulong stored = BinaryPrimitives.ReadUInt64LittleEndian(block[ChecksumOffset..]);
        ulong computed = Fletcher64.ComputeSkipping(block[..Size], ChecksumOffset);
        if (stored != computed) { error = $"checksum mismatch (stored {stored:x16}, computed {computed:x16})"; return false; }
        var b = new NamespaceInfoBlock
        {
            Uuid = new Guid(block.Slice(16, 16), bigEndian: true),
            ParentUuid = new Guid(block.Slice(32, 16), bigEndian: true),
            Flags = BinaryPrimitives.ReadUInt32LittleEndian(block[48..]),
            Major = BinaryPrimitives.ReadUInt16LittleEndian(block[52..]),
            Minor = BinaryPrimitives.ReadUInt16LittleEndian(block[54..]),
            NamespaceSize = BinaryPrimitives.ReadInt64LittleEndian(block[56..]),
            DataOffset = BinaryPrimitives.ReadInt64LittleEndian(block[64..]),
            DataSize = BinaryPrimitives.ReadInt64LittleEndian(block[72..]),
            Align = BinaryPrimitives.ReadUInt32LittleEndian(block[80..]),
            Mode = (NamespaceMode)BinaryPrimitives.ReadUInt32LittleEndian(block[84..]),
            SectorSize = BinaryPrimitives.ReadUInt32LittleEndian(block[88..]),
            MapKind = (DescriptorMapKind)BinaryPrimitives.ReadUInt32LittleEndian(block[92..]),
            MapOffset = BinaryPrimitives.ReadInt64LittleEndian(block[96..]),
            MapSize = BinaryPrimitives.ReadInt64LittleEndian(block[104..]),
            Name = Encoding.UTF8.GetString(block.Slice(112, 64)).TrimEnd('\0'),
        };
        error = b.CheckGeometry(deviceSize);
        if (error is not null) return false;
        if (b.Minor >= BadBlocksMinor)
        {
            if (!BadBlockList.TryParse(block[BadBlockList.TableOffset..], b.DataSize >> 9, out BadBlockList? bad, out error)) return false;
            b = b with { BadBlocks = bad! };
        }
        info = b;
        return true;
    }

    /// <summary>Null when the fields describe a usable namespace on a device of <paramref name="deviceSize"/> bytes, else the reason.</summary>
    public string? CheckGeometry(long deviceSize)
    {
        if (Major != CurrentMajor) return $"unsupported format version {Major}.{Minor} (this build reads {CurrentMajor}.x)";
        // A newer minor is read as long as its values are known; one that is not was added by a newer build.
        string newer = Minor > CurrentMinor ? $" (format {Major}.{Minor} {NewerFormat}, which reads up to {CurrentMajor}.{CurrentMinor}: open it with a newer PfnBlock)" : "";
        if (Mode is not (NamespaceMode.Raw or NamespaceMode.Sector or NamespaceMode.DevDax)) return $"unknown mode {(uint)Mode}{newer}";
        if (Mode == NamespaceMode.DevDax && (Align < DaxNamespace.DevDaxAlign || DataOffset % DaxNamespace.DevDaxAlign != 0))
            return $"devdax namespace with data at {DataOffset} aligned to {Align}: devdax data is 2 MiB-aligned";
        if (SectorSize is not (512 or 4096)) return $"invalid sector size {SectorSize}";
        if (Align < Pfn.PageSize || !uint.IsPow2(Align)) return $"invalid alignment {Align}";
        if (!Enum.IsDefined(MapKind)) return $"unknown descriptor map kind {(uint)MapKind}{newer}";
        if (NamespaceSize < 3 * Size || NamespaceSize > deviceSize) return $"namespace size {NamespaceSize} does not fit the device ({deviceSize} bytes)";
        if (DataOffset < Size || DataOffset % Align != 0) return $"data offset {DataOffset} is not an aligned offset past the info block";
        // Differences, not sums: the fields come from the media, and offset + size can wrap past the check.
        if (DataSize <= 0 || DataSize % Pfn.PageSize != 0 || DataSize > BackupOffset(NamespaceSize) - DataOffset)
            return $"data area [{DataOffset}, +{DataSize}) overlaps the backup info block or is not page-sized";
        if (MapSize < 0 || (MapSize != 0 && (MapOffset < Size || MapSize > DataOffset - MapOffset))) return "descriptor reserve overlaps the data area";
        if (MapKind == DescriptorMapKind.Device
            && (MapOffset != Size || MapSize < DescriptorReserve.Needed(DataSize >> Pfn.PageShift) || Mode == NamespaceMode.Sector))
            return $"descriptor map 'device' needs a reserve of {DescriptorReserve.Needed(DataSize >> Pfn.PageShift)} bytes at offset {Size} (have {MapSize} at {MapOffset})";
        if (MapKind != DescriptorMapKind.Device && MapSize != 0) return $"a reserve of {MapSize} bytes is recorded for descriptor map '{DescriptorMaps.Name(MapKind)}', which keeps none on the device";
        return BadBlocks.Check(DataSize >> 9);
    }
}
