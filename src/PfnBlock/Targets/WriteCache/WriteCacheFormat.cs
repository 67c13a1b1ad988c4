using System.Buffers.Binary;
using System.Runtime.CompilerServices;
using System.Text;

namespace PfnBlock.Targets.WriteCache;

/// <summary>
/// Where the three areas of a write cache lie on its cache device, and how many entries it has.
/// </summary>
/// <remarks>
/// <code>
/// offset 0                 superblock (4 KiB; the written-back sequence word at byte 256)
/// offset MetadataOffset    N entries of 64 bytes, one cache line each, padded to 4 KiB
/// offset DataOffset        N data slots of 4 KiB, page-aligned (so each slot is one frame)
/// </code>
/// The entry and the slot of sequence number s are entry and slot <c>s mod N</c>: a circular log.
/// </remarks>
/// <param name="Entries">N: entries and data slots.</param>
/// <param name="MetadataOffset">Byte offset of entry 0.</param>
/// <param name="DataOffset">Byte offset of slot 0.</param>
public readonly record struct WriteCacheLayout(long Entries, long MetadataOffset, long DataOffset)
{
    /// <summary>Bytes of a cache block (the only block size supported, as dm-writecache's usual one).</summary>
    public const int BlockSize = 4096;
    /// <summary>Bytes of one metadata entry (a cache line: written whole, checksummed).</summary>
    public const int EntrySize = 64;
    /// <summary>Bytes reserved for the superblock at the start of the cache device.</summary>
    public const int SuperblockSize = 4096;
    /// <summary>The fewest entries a cache may have: below this the cache is mostly metadata and makes no sense.</summary>
    public const long MinEntries = 64;
    /// <summary>The most entries (slot numbers stay 32-bit; 2^31 slots is 8 TiB of cache).</summary>
    public const long MaxEntries = int.MaxValue;

    /// <summary>The smallest cache device that holds a superblock and <see cref="MinEntries"/> entries.</summary>
    public static long MinDeviceBytes => SuperblockSize + AlignUp(MinEntries * EntrySize) + MinEntries * BlockSize;

    /// <summary>Bytes the layout occupies on the cache device.</summary>
    public long Bytes => DataOffset + Entries * BlockSize;

    /// <summary>The largest layout that fits <paramref name="deviceBytes"/>, or null when not even <see cref="MinEntries"/> fit.</summary>
    public static WriteCacheLayout? For(long deviceBytes)
    {
        long n = Math.Min((deviceBytes - SuperblockSize) / (BlockSize + EntrySize), MaxEntries);
        // The metadata area is padded to a page, which may cost a slot or two.
        while (n >= MinEntries && SuperblockSize + AlignUp(n * EntrySize) + n * BlockSize > deviceBytes) n--;
        if (n < MinEntries) return null;
        return new WriteCacheLayout(n, SuperblockSize, SuperblockSize + AlignUp(n * EntrySize));
    }

    /// <summary>Byte offset of the entry of sequence <paramref name="seq"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public long EntryOffset(long seq) => MetadataOffset + seq % Entries * EntrySize;

    /// <summary>Byte offset of the data slot of sequence <paramref name="seq"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public long SlotOffset(long seq) => DataOffset + seq % Entries * BlockSize;

    private static long AlignUp(long bytes) => (bytes + BlockSize - 1) & ~(long)(BlockSize - 1);
}

/// <summary>What an entry records (the entry's <c>kind</c> field).</summary>
public enum WriteCacheEntryKind : ushort
{
    /// <summary>Not an entry (an empty or damaged slot).</summary>
    None = 0,
    /// <summary>A 4 KiB block of data for origin block <c>block</c>, in the entry's slot.</summary>
    Write = 1,
    /// <summary>A discard of <c>count</c> origin blocks from <c>block</c> (the slot holds no data).</summary>
    Discard = 2,
    /// <summary>A write-zeroes of <c>count</c> origin blocks from <c>block</c> (the slot holds no data).</summary>
    WriteZeroes = 3,
}

/// <summary>Modifiers of an entry (the entry's <c>flags</c> field).</summary>
[Flags]
public enum WriteCacheEntryFlags : ushort
{
    /// <summary>None.</summary>
    None = 0,
    /// <summary>A write-zeroes that must not deallocate (the bio's NO_UNMAP), passed on at write-back.</summary>
    NoUnmap = 1,
    /// <summary>
    /// A FUA write, discard or write-zeroes: its data was made durable before the entry was written
    /// and the entry before the write completed, so the entry is valid without a commit of its epoch.
    /// </summary>
    Fua = 2,
}

/// <summary>
/// One 64-byte metadata entry of the circular log: one cache line, so it is written whole with
/// non-temporal stores and a torn one fails its checksum. Layout (little-endian):
/// </summary>
/// <remarks>
/// <code>
/// offset size field
///  0      8   seq       sequence number of the write (1, 2, …; 0 = never written). Lives in entry seq mod N.
///  8      8   block     origin block (4 KiB units) the data belongs to, or the first block of a range
/// 16      8   epoch     flush epoch: writes between two commits share one; write-back goes epoch by epoch
/// 24      4   count     blocks covered: 1 for a write, the range's length for discard and write-zeroes
/// 28      2   kind      1 write, 2 discard, 3 write-zeroes (<see cref="WriteCacheEntryKind"/>)
/// 30      2   flags     bit 0: NO_UNMAP (write-zeroes); bit 1: FUA (valid without a commit); other bits zero
/// 32      8   time      Unix time in ms when the entry was written (the age of dirty data survives a restart)
/// 40     16   reserved  zero
/// 56      8   checksum  over bytes 0..55, seeded with the cache uuid (<see cref="WriteCacheSuperblock.EntrySeed"/>)
/// </code>
/// An entry is live when its checksum holds, its seq is at least the written-back sequence, it
/// lives in entry <c>seq mod N</c>, and it is committed (seq below the superblock's commit word)
/// or has the FUA flag. A plain write stores its data and its entry and then fences once, so
/// either may reach the media first: only a commit (a FLUSH or an autocommit), done after every
/// write below it has fenced, vouches for the data. A FUA entry is written
/// after its data was persisted, so it vouches for its own. Seeding the checksum with the cache
/// uuid makes entries of an earlier cache formatted on the same device fail it.
/// </remarks>
public readonly record struct WriteCacheEntry(long Seq, long Block, long Epoch, uint Count, WriteCacheEntryKind Kind, WriteCacheEntryFlags Flags, long TimeMs)
{
    /// <summary>Offset of the checksum field.</summary>
    public const int ChecksumOffset = 56;

    /// <summary>Writes the entry, with its checksum, into the 64 bytes at <paramref name="dst"/> (plain stores: a staging copy).</summary>
    public unsafe void Encode(byte* dst, ulong seed)
    {
        var words = (ulong*)dst;
        words[0] = (ulong)Seq;
        words[1] = (ulong)Block;
        words[2] = (ulong)Epoch;
        words[3] = Count | (ulong)Kind << 32 | (ulong)Flags << 48;
        words[4] = (ulong)TimeMs;
        words[5] = 0;
        words[6] = 0;
        words[7] = Checksum(words, seed);
    }

    /// <summary>Reads the entry at <paramref name="src"/>; false when its checksum fails or it was never written.</summary>
    public static unsafe bool TryDecode(byte* src, ulong seed, out WriteCacheEntry entry)
    {
        // One copy of the line first: the checksum and the fields must come from the same bytes.
        ulong* w = stackalloc ulong[8];
        Buffer.MemoryCopy(src, w, 64, 64);
        entry = default;
        if (w[0] == 0 || w[7] != Checksum(w, seed) || w[5] != 0 || w[6] != 0) return false;
        var kind = (WriteCacheEntryKind)(ushort)(w[3] >> 32);
        var flags = (WriteCacheEntryFlags)(ushort)(w[3] >> 48);
        if (kind is < WriteCacheEntryKind.Write or > WriteCacheEntryKind.WriteZeroes || (flags & ~(WriteCacheEntryFlags.NoUnmap | WriteCacheEntryFlags.Fua)) != 0) return false;
        entry = new WriteCacheEntry((long)w[0], (long)w[1], (long)w[2], (uint)w[3], kind, flags, (long)w[4]);
        return true;
    }

    /// <summary>The entry's checksum over its first seven words.</summary>
    internal static unsafe ulong Checksum(ulong* words, ulong seed)
    {
        ulong h = seed ^ 0x9E3779B97F4A7C15UL;
        for (int i = 0; i < 7; i++) h = Mix(h ^ (words[i] + (ulong)i * 0xD6E8FEB86659FD93UL));
        return h == 0 ? 1 : h; // never 0, so an all-zero line is never valid
    }

    /// <summary>A 64-bit finaliser (MurmurHash3's fmix64): every input bit affects every output bit.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static ulong Mix(ulong x)
    {
        x ^= x >> 33;
        x *= 0xFF51AFD7ED558CCDUL;
        x ^= x >> 33;
        x *= 0xC4CEB9FE1A85EC53UL;
        x ^= x >> 33;
        return x;
    }
}

/// <summary>
/// Who the cache belongs to: the origin device it caches. Opening a cache with another origin is refused.
/// </summary>
/// <param name="CapacitySectors">The origin's capacity in 512-byte sectors.</param>
/// <param name="SpecHash">FNV-1a 64 (<see cref="HashSpec"/>) of what names the origin: a file device's full path, an RBD image's identity (<c>rbd:FSID/POOL_ID/IMAGE_ID</c>), another device's name; 0 for a namespace.</param>
/// <param name="NamespaceUuid">The origin's namespace uuid when the origin is a pmem namespace, else empty.</param>
public readonly record struct WriteCacheOrigin(long CapacitySectors, ulong SpecHash, Guid NamespaceUuid)
{
    /// <summary>FNV-1a 64 over the UTF-8 bytes of <paramref name="name"/> (called at open only).</summary>
    public static ulong HashSpec(string name)
    {
        ulong h = 0xCBF29CE484222325UL;
        foreach (byte b in Encoding.UTF8.GetBytes(name)) h = (h ^ b) * 0x100000001B3UL;
        return h;
    }

    /// <summary>
    /// True when <paramref name="other"/> is the same origin: the same capacity and, for namespaces,
    /// the same uuid (a namespace keeps its uuid when it is renamed or named by another spec); for
    /// other devices the same path or name.
    /// </summary>
    public bool Matches(WriteCacheOrigin other) =>
        CapacitySectors == other.CapacitySectors
        && (NamespaceUuid != Guid.Empty || other.NamespaceUuid != Guid.Empty ? NamespaceUuid == other.NamespaceUuid : SpecHash == other.SpecHash);

    /// <inheritdoc/>
    public override string ToString() =>
        $"{CapacitySectors} sectors, " + (NamespaceUuid != Guid.Empty ? $"namespace uuid {NamespaceUuid}" : $"spec hash {SpecHash:x16}");
}

/// <summary>
/// The superblock at offset 0 of a write cache's device. Layout (little-endian), 4 KiB:
/// </summary>
/// <remarks>
/// <code>
/// offset size field
///   0     8   magic            "PFNBWCSB"
///   8     2   version_major    1 (a reader refuses another major)
///  10     2   version_minor    1 (1.0 caches have no commit word: every entry of theirs was durable when written)
///  12     4   sb_size          4096
///  16    16   cache_uuid       made at format; seeds the entry and tail checksums
///  32     8   origin_sectors   origin capacity in 512-byte sectors
///  40     8   origin_spec_hash FNV-1a 64 of the origin's full path (file), rbd:FSID/POOL_ID/IMAGE_ID (RBD image)
///                                or name (other devices); 0 for a namespace
///  48    16   origin_ns_uuid   the origin namespace's uuid, or zeros when the origin is not a namespace
///  64     4   block_size       4096
///  68     4   entry_size       64
///  72     8   entries          N
///  80     8   metadata_offset  byte offset of entry 0 (4096)
///  88     8   data_offset      byte offset of slot 0 (4096 + N·64 rounded up to 4 KiB)
///  96     8   device_bytes     the cache device's size when formatted (it may grow, never shrink)
/// 104     8   format_time      Unix time in ms of the format (informational)
/// 112     8   checksum         a 64-bit hash of the words of bytes 0..119, this field taken as zero: the static fields
/// 120   136   reserved         zero
/// 256     8   tail             the written-back sequence (see below), alone on its cache line
/// 264    56   reserved         zero
/// 320     8   commit           the committed sequence (see below), alone on its cache line (1.1 on)
/// 328  3768   reserved         zero
/// </code>
/// <para>The <b>tail</b> is the lowest sequence number not yet written back: entries below it are
/// on the origin (written, then the origin flushed, before the tail moved past them). It is updated
/// by one atomic 8-byte store followed by a persist, and encoded as <c>seq | check &lt;&lt; 56</c>
/// (<c>seq</c> in the low 56 bits, <c>check</c> a byte of a hash of seq and the cache uuid), so a
/// damaged word is detected. A fresh cache has tail 1 (sequence numbers start at 1).</para>
/// <para>The <b>commit</b> word is the lowest sequence number not committed: every entry below it
/// and its data are durable. Entries from it on are valid only with the FUA flag (recovery erases
/// the others: no FLUSH promised their writes). A commit waits for the writers below its
/// sequence to have fenced, persists the log (msync where stores alone are not durable), then
/// stores the word with one atomic 8-byte store and persists it; encoded as the tail is
/// (<c>seq | check &lt;&lt; 56</c>). Format writes 1. A 1.0 cache has zero here, so its entries
/// are all taken as committed (each was durable when written), until its first writable open
/// writes the word.</para>
/// <para>The static fields never change after the format, which writes the zeroed metadata area
/// first, then the superblock, and persists each: a crash during it leaves an all-zero superblock,
/// formatted again at the next open.</para>
/// </remarks>
public sealed record WriteCacheSuperblock
{
    /// <summary>"PFNBWCSB" as a little-endian word.</summary>
    public static readonly ulong Magic = BinaryPrimitives.ReadUInt64LittleEndian("PFNBWCSB"u8);
    /// <summary>The major version this build writes and reads.</summary>
    public const ushort VersionMajor = 1;
    /// <summary>The minor version this build writes (1: the commit word).</summary>
    public const ushort VersionMinor = 1;
    /// <summary>Offset of the checksum field.</summary>
    public const int ChecksumOffset = 112;
    /// <summary>Bytes the checksum covers (the static fields and the checksum field, taken as zero).</summary>
    public const int ChecksummedBytes = 120;
    /// <summary>Offset of the written-back sequence word (its own cache line).</summary>
    public const int TailOffset = 256;
    /// <summary>Offset of the committed-sequence word (its own cache line).</summary>
    public const int CommitOffset = 320;
    /// <summary>The largest sequence number the tail word can hold (56 bits).</summary>
    public const long MaxSeq = (1L << 56) - 1;

    /// <summary>Version found on media (major).</summary>
    public ushort Major { get; init; } = VersionMajor;
    /// <summary>Version found on media (minor).</summary>
    public ushort Minor { get; init; } = VersionMinor;
    /// <summary>This cache's identity.</summary>
    public required Guid CacheUuid { get; init; }
    /// <summary>The origin it was formatted for.</summary>
    public required WriteCacheOrigin Origin { get; init; }
    /// <summary>Where the areas lie.</summary>
    public required WriteCacheLayout Layout { get; init; }
    /// <summary>The cache device's size at format time.</summary>
    public required long DeviceBytes { get; init; }
    /// <summary>When the cache was formatted (Unix ms).</summary>
    public long FormatTimeMs { get; init; }

    /// <summary>The seed of the entry checksums: both halves of the cache uuid folded.</summary>
    public ulong EntrySeed
    {
        get
        {
            Span<byte> u = stackalloc byte[16];
            CacheUuid.TryWriteBytes(u);
            return BinaryPrimitives.ReadUInt64LittleEndian(u) ^ BinaryPrimitives.ReadUInt64LittleEndian(u[8..]) ^ 0x5046_4E42_5743_4553UL;
        }
    }

    /// <summary>Encodes the static fields (tail word excluded) into <paramref name="block"/> (4096 bytes, zeroed by the caller).</summary>
    public void Encode(Span<byte> block)
    {
        BinaryPrimitives.WriteUInt64LittleEndian(block, Magic);
        BinaryPrimitives.WriteUInt16LittleEndian(block[8..], Major);
        BinaryPrimitives.WriteUInt16LittleEndian(block[10..], Minor);
        BinaryPrimitives.WriteUInt32LittleEndian(block[12..], WriteCacheLayout.SuperblockSize);
        CacheUuid.TryWriteBytes(block[16..]);
        BinaryPrimitives.WriteInt64LittleEndian(block[32..], Origin.CapacitySectors);
        BinaryPrimitives.WriteUInt64LittleEndian(block[40..], Origin.SpecHash);
        Origin.NamespaceUuid.TryWriteBytes(block[48..]);
        BinaryPrimitives.WriteUInt32LittleEndian(block[64..], WriteCacheLayout.BlockSize);
        BinaryPrimitives.WriteUInt32LittleEndian(block[68..], WriteCacheLayout.EntrySize);
        BinaryPrimitives.WriteInt64LittleEndian(block[72..], Layout.Entries);
        BinaryPrimitives.WriteInt64LittleEndian(block[80..], Layout.MetadataOffset);
        BinaryPrimitives.WriteInt64LittleEndian(block[88..], Layout.DataOffset);
        BinaryPrimitives.WriteInt64LittleEndian(block[96..], DeviceBytes);
        BinaryPrimitives.WriteInt64LittleEndian(block[104..], FormatTimeMs);
        BinaryPrimitives.WriteUInt64LittleEndian(block[ChecksumOffset..], StaticChecksum(block[..ChecksummedBytes]));
    }

    /// <summary>
    /// Parses and validates a superblock read from a cache device of <paramref name="deviceBytes"/>
    /// bytes. Returns null with <paramref name="error"/> saying why for anything that is not a valid
    /// one; <paramref name="blank"/> is set when the superblock area is all zeros (a fresh device).
    /// </summary>
    public static WriteCacheSuperblock? TryParse(ReadOnlySpan<byte> block, long deviceBytes, out bool blank, out string? error)
    {
        blank = false;
        error = null;
        if (block.Length < WriteCacheLayout.SuperblockSize) { error = "superblock area is short"; return null; }
        if (block[..WriteCacheLayout.SuperblockSize].IndexOfAnyExcept((byte)0) < 0) { blank = true; error = "no superblock (all zeros)"; return null; }
        if (BinaryPrimitives.ReadUInt64LittleEndian(block) != Magic)
        {
            error = $"no writecache superblock (first bytes {Convert.ToHexString(block[..8])}, expected the magic \"PFNBWCSB\")";
            return null;
        }
        ushort major = BinaryPrimitives.ReadUInt16LittleEndian(block[8..]), minor = BinaryPrimitives.ReadUInt16LittleEndian(block[10..]);
        if (major != VersionMajor) { error = $"writecache superblock version {major}.{minor} is not supported (this build reads {VersionMajor}.x)"; return null; }
        ulong stored = BinaryPrimitives.ReadUInt64LittleEndian(block[ChecksumOffset..]);
        Span<byte> copy = stackalloc byte[ChecksummedBytes];
        block[..ChecksummedBytes].CopyTo(copy);
        copy[ChecksumOffset..].Clear();
        if (stored != StaticChecksum(copy)) { error = "writecache superblock checksum mismatch (the superblock is damaged)"; return null; }
        uint sbSize = BinaryPrimitives.ReadUInt32LittleEndian(block[12..]);
        uint blockSize = BinaryPrimitives.ReadUInt32LittleEndian(block[64..]);
        uint entrySize = BinaryPrimitives.ReadUInt32LittleEndian(block[68..]);
        long n = BinaryPrimitives.ReadInt64LittleEndian(block[72..]);
        long meta = BinaryPrimitives.ReadInt64LittleEndian(block[80..]);
        long data = BinaryPrimitives.ReadInt64LittleEndian(block[88..]);
        long formatted = BinaryPrimitives.ReadInt64LittleEndian(block[96..]);
        if (sbSize != WriteCacheLayout.SuperblockSize || blockSize != WriteCacheLayout.BlockSize || entrySize != WriteCacheLayout.EntrySize)
        {
            error = $"writecache superblock geometry not supported (superblock {sbSize}, block {blockSize}, entry {entrySize} bytes; expected 4096, 4096, 64)";
            return null;
        }
        if (n < WriteCacheLayout.MinEntries || n > WriteCacheLayout.MaxEntries || meta != WriteCacheLayout.SuperblockSize
            || data % WriteCacheLayout.BlockSize != 0 || data < meta + n * WriteCacheLayout.EntrySize)
        {
            error = $"writecache superblock layout is invalid (entries {n}, metadata at {meta}, data at {data})";
            return null;
        }
        var layout = new WriteCacheLayout(n, meta, data);
        if (layout.Bytes > deviceBytes || formatted > deviceBytes)
        {
            error = $"the cache device has {deviceBytes} bytes but its writecache superblock describes {Math.Max(layout.Bytes, formatted)} (the device shrank)";
            return null;
        }
        return new WriteCacheSuperblock
        {
            Major = major,
            Minor = minor,
            CacheUuid = new Guid(block.Slice(16, 16)),
            Origin = new WriteCacheOrigin(BinaryPrimitives.ReadInt64LittleEndian(block[32..]), BinaryPrimitives.ReadUInt64LittleEndian(block[40..]), new Guid(block.Slice(48, 16))),
            Layout = layout,
            DeviceBytes = formatted,
            FormatTimeMs = BinaryPrimitives.ReadInt64LittleEndian(block[104..]),
        };
    }

    /// <summary>
    /// True for the superblock area of a format that crashed before its last step: everything but the
    /// magic written (the magic word is zero) and the checksum valid once the magic is put in. Such a
    /// device holds nothing yet and is formatted again.
    /// </summary>
    public static bool IsInterruptedFormat(ReadOnlySpan<byte> block)
    {
        if (block.Length < WriteCacheLayout.SuperblockSize || BinaryPrimitives.ReadUInt64LittleEndian(block) != 0) return false;
        Span<byte> copy = stackalloc byte[ChecksummedBytes];
        block[..ChecksummedBytes].CopyTo(copy);
        BinaryPrimitives.WriteUInt64LittleEndian(copy, Magic);
        ulong stored = BinaryPrimitives.ReadUInt64LittleEndian(copy[ChecksumOffset..]);
        copy[ChecksumOffset..].Clear();
        return stored == StaticChecksum(copy);
    }

    /// <summary>The tail word for sequence <paramref name="seq"/>: seq in the low 56 bits, a check byte on top.</summary>
    public ulong EncodeTail(long seq) => (ulong)seq | (ulong)TailCheck(seq) << 56;

    /// <summary>Decodes a tail word; false when its check byte does not match (a damaged word).</summary>
    public bool TryDecodeTail(ulong word, out long seq)
    {
        seq = (long)(word & MaxSeq);
        return seq > 0 && (byte)(word >> 56) == TailCheck(seq);
    }

    private byte TailCheck(long seq) => (byte)WriteCacheEntry.Mix((ulong)seq ^ EntrySeed ^ 0x7A11UL);

    /// <summary>The commit word for sequence <paramref name="seq"/>: seq in the low 56 bits, a check byte on top.</summary>
    public ulong EncodeCommit(long seq) => (ulong)seq | (ulong)CommitCheck(seq) << 56;

    /// <summary>
    /// Decodes a commit word into the committed sequence; false when its check byte does not match
    /// (a damaged word). A 1.0 cache has none (zero): every entry counts as committed.
    /// </summary>
    public bool TryDecodeCommit(ulong word, out long seq)
    {
        if (word == 0 && Minor == 0)
        {
            seq = long.MaxValue;
            return true;
        }
        seq = (long)(word & MaxSeq);
        return seq > 0 && (byte)(word >> 56) == CommitCheck(seq);
    }

    private byte CommitCheck(long seq) => (byte)WriteCacheEntry.Mix((ulong)seq ^ EntrySeed ^ 0xC0_4417UL);

    /// <summary>The superblock checksum: the little-endian words of <paramref name="data"/> chained through <see cref="WriteCacheEntry.Mix"/>.</summary>
    private static ulong StaticChecksum(ReadOnlySpan<byte> data)
    {
        ulong h = 0x5746_5342_4355_4D53UL;
        for (int i = 0; i + 8 <= data.Length; i += 8) h = WriteCacheEntry.Mix(h ^ BinaryPrimitives.ReadUInt64LittleEndian(data[i..]) ^ (ulong)i);
        return h;
    }
}
