using System.Buffers.Binary;
using PfnBlock.Interop;
using PfnBlock.Memory;

namespace PfnBlock.Namespaces.Btt;

/// <summary>
/// The headers of a PMDK libpmemblk pool file: the common 4 KiB <c>pool_hdr</c> at offset 0 and the
/// pmemblk header at 4096. The BTT arenas start at <see cref="DataOffset"/> (8 KiB).
/// </summary>
/// <remarks>
/// <c>pool_hdr</c>, little-endian (PMDK src/common/pool_hdr.h; design brief §3b):
/// <code>
/// off  size field
///   0     8 signature          "PMEMBLK\0" (other types: "PMEMOBJ\0", "PMEMLOG\0", …)
///   8     4 major              1 for pmemblk (BLK_FORMAT_MAJOR)
///  12     4 compat_features    0x1 CHECK_BAD_BLOCKS
///  16     4 incompat_features  0x1 SINGLEHDR, 0x2 CKSUM_2K, 0x4 SHUTDOWN_STATE
///  20     4 ro_compat_features
///  24    16 poolset_uuid       the BTT's parent_uuid
///  40    16 uuid               this part
///  56    16 prev_part_uuid     = uuid for a single-file pool
///  72    16 next_part_uuid     = uuid for a single-file pool
///  88    16 prev_repl_uuid
/// 104    16 next_repl_uuid
/// 120     8 crtime             seconds since the epoch
/// 128    16 arch_flags         alignment_desc u64, ei_class u8 (2 = 64-bit), ei_data u8 (1 = LE), 4 reserved, e_machine u16 (62 = x86-64)
/// 144  3944 unused / shutdown state (written by libpmemblk on open and close)
/// 4088    8 checksum           Fletcher-64 with this field zeroed; with CKSUM_2K only the first 2 KiB count (the rest as zeros)
/// </code>
/// pmemblk header at 4096 (PMDK src/libpmemblk/blk.h <c>struct pmemblk</c>): <c>bsize</c> u32 at 4096,
/// <c>is_zeroed</c> i32 at 4100, then run-time pointers that are volatile and ignored here.
/// </remarks>
public sealed record PmemblkPoolHeader
{
    /// <summary>Where the BTT starts: the pmemblk header rounded up to 4 KiB (BLK_FORMAT_DATA_ALIGN).</summary>
    public const int DataOffset = 8192;
    /// <summary>The first 8 bytes of a pmemblk pool file ("PMEMBLK" and a NUL).</summary>
    public static ReadOnlySpan<byte> Signature => "PMEMBLK\0"u8;
    private const uint KnownIncompat = 0x1 | 0x2 | 0x4;

    /// <summary>pool_hdr <c>major</c>, the pmemblk format version; only 1 is accepted.</summary>
    public uint Major { get; init; }
    /// <summary>pool_hdr <c>compat_features</c> (0x1 CHECK_BAD_BLOCKS); bits a reader may ignore, and this one does.</summary>
    public uint CompatFeatures { get; init; }
    /// <summary>pool_hdr <c>incompat_features</c> (0x1 SINGLEHDR, 0x2 CKSUM_2K, 0x4 SHUTDOWN_STATE); a pool with any other bit is refused, and CKSUM_2K decides how the header checksum is computed.</summary>
    public uint IncompatFeatures { get; init; }
    /// <summary>pool_hdr <c>ro_compat_features</c>; recorded, not acted on.</summary>
    public uint RoCompatFeatures { get; init; }
    /// <summary>The pool-set uuid (raw bytes read as big-endian, as BTT uuids are).</summary>
    public Guid PoolSetUuid { get; init; }
    /// <summary>pool_hdr <c>uuid</c> of this part; for the single-file pools accepted here it equals the previous/next part and replica uuids.</summary>
    public Guid Uuid { get; init; }
    /// <summary>pool_hdr <c>crtime</c>, seconds since the epoch (a value past year 9999 is clamped).</summary>
    public DateTimeOffset Created { get; init; }
    /// <summary>Block size (pmemblk <c>bsize</c>).</summary>
    public uint BlockSize { get; init; }
    /// <summary>The pool was zero-initialised (pmemblk <c>is_zeroed</c>).</summary>
    public bool IsZeroed { get; init; }

    /// <summary>The PMDK pool type named by a file's first bytes other than pmemblk ("pmemobj", "pmemlog", "poolset"), or null.</summary>
    public static string? ForeignPmdkType(ReadOnlySpan<byte> head)
    {
        if (head.Length >= 8 && head[..8].SequenceEqual("PMEMOBJ\0"u8)) return "pmemobj";
        if (head.Length >= 8 && head[..8].SequenceEqual("PMEMLOG\0"u8)) return "pmemlog";
        if (head.Length >= 11 && head[..11].SequenceEqual("PMEMPOOLSET"u8)) return "poolset";
        return null;
    }

    /// <summary>True when the file starts with the pmemblk signature.</summary>
    public static bool HasSignature(ReadOnlySpan<byte> head) => head.Length >= 8 && head[..8].SequenceEqual(Signature);

    /// <summary>The pool header checksum as PMDK computes it (<c>util_checksum</c> with the CKSUM_2K rule).</summary>
    public static ulong ComputeChecksum(ReadOnlySpan<byte> header)
    {
        uint incompat = BinaryPrimitives.ReadUInt32LittleEndian(header[16..]);
        if ((incompat & 0x2) == 0) return Fletcher64.ComputeSkipping(header[..4096], 4088);
        Span<byte> copy = stackalloc byte[4096];
        copy.Clear();
        header[..2048].CopyTo(copy);
        return Fletcher64.ComputeSkipping(copy, 4088);
    }

    /// <summary>Parses and validates the first 8 KiB of a pool file.</summary>
    public static bool TryParse(ReadOnlySpan<byte> head, out PmemblkPoolHeader? header, out string? error)
    {
        header = null;
        if (head.Length < DataOffset) { error = "file is shorter than the pmemblk headers"; return false; }
        if (!HasSignature(head)) { error = "no PMEMBLK signature"; return false; }
        ulong stored = BinaryPrimitives.ReadUInt64LittleEndian(head[4088..]);
        ulong computed = ComputeChecksum(head);
        if (stored != computed) { error = $"pool header checksum mismatch (stored {stored:x16}, computed {computed:x16})"; return false; }
        uint major = BinaryPrimitives.ReadUInt32LittleEndian(head[8..]);
        if (major != 1) { error = $"unsupported pmemblk format major {major} (this build reads 1)"; return false; }
        uint incompat = BinaryPrimitives.ReadUInt32LittleEndian(head[16..]);
        if ((incompat & ~KnownIncompat) != 0) { error = $"unknown mandatory pool features 0x{incompat:x}"; return false; }
        if (head[136] != 2 || head[137] != 1 || BinaryPrimitives.ReadUInt16LittleEndian(head[142..]) != 62)
        { error = "pool was created on another architecture (this build reads 64-bit little-endian x86-64 pools)"; return false; }
        ReadOnlySpan<byte> uuid = head.Slice(40, 16);
        for (int off = 56; off < 120; off += 16)
            if (!head.Slice(off, 16).SequenceEqual(uuid)) { error = "multi-part or replicated pool sets are not supported"; return false; }
        uint bsize = BinaryPrimitives.ReadUInt32LittleEndian(head[4096..]);
        if (bsize is not (512 or 1024 or 2048 or 4096)) { error = $"block size {bsize} is not supported (512, 1024, 2048 or 4096)"; return false; }
        header = new PmemblkPoolHeader
        {
            Major = major,
            CompatFeatures = BinaryPrimitives.ReadUInt32LittleEndian(head[12..]),
            IncompatFeatures = incompat,
            RoCompatFeatures = BinaryPrimitives.ReadUInt32LittleEndian(head[20..]),
            PoolSetUuid = new Guid(head.Slice(24, 16), bigEndian: true),
            Uuid = new Guid(uuid, bigEndian: true),
            Created = DateTimeOffset.FromUnixTimeSeconds((long)Math.Min(BinaryPrimitives.ReadUInt64LittleEndian(head[120..]), 253402300799UL)),
            BlockSize = bsize,
            IsZeroed = BinaryPrimitives.ReadInt32LittleEndian(head[4100..]) != 0,
        };
        error = null;
        return true;
    }
}

/// <summary>
/// An open PMDK pmemblk pool file: claimed exclusively, headers validated, mapped; its data area
/// (from 8 KiB) carries the BTT. The pool header is never written.
/// </summary>
public sealed unsafe class PmemblkPool : IDisposable
{
    private readonly NamespaceFile _file;
    // The whole pool file. Media's pointers are derived from it once; its delegates reference this
    // pool, so whoever holds the media keeps the mapping alive.
    private readonly SafeMmapHandle _mapping;
    private int _disposed;

    private PmemblkPool(NamespaceFile file, SafeMmapHandle mapping, PersistenceMode mode, PmemblkPoolHeader header)
    {
        _file = file;
        _mapping = mapping;
        Header = header;
        Persistence = mode;
        byte* data = mapping.Address + PmemblkPoolHeader.DataOffset;
        long dataSize = file.Size - PmemblkPoolHeader.DataOffset;
        Media = new BttMedia(data, dataSize, mode,
            (off, len) => PmemNamespace.PersistMapped(data + off, len, mode), Flush);
    }

    /// <summary>The pool file's path, as opened.</summary>
    public string Path => _file.Path;
    /// <summary>The validated headers.</summary>
    public PmemblkPoolHeader Header { get; }
    /// <summary>How stores become durable.</summary>
    public PersistenceMode Persistence { get; }
    /// <summary>The BTT's media: the pool after its 8 KiB of headers.</summary>
    public BttMedia Media { get; }

    /// <summary>The BTT options that match libpmemblk for this pool.</summary>
    public BttOptions BttOptions(int lanes = 0) => new()
    {
        LbaSize = Header.BlockSize,
        ParentUuid = Header.PoolSetUuid,
        Flavor = BttFlavor.Pmemblk,
        Lanes = lanes,
        LayOutOnFirstWrite = true,
        MediaIsZeroed = Header.IsZeroed,
    };

    /// <summary>Opens, claims and validates a pool file.</summary>
    /// <param name="path">The pool file.</param>
    /// <param name="writable">Open for writing with an exclusive claim; else O_RDONLY with a shared claim.</param>
    /// <param name="privateCopy">With a read-only file: map it copy-on-write, so BTT recovery can run in memory.</param>
    /// <exception cref="InvalidNamespaceException">Not a pmemblk pool (the message says what it is), or its header is corrupt or unsupported.</exception>
    public static PmemblkPool Open(string path, bool writable = true, bool privateCopy = false)
    {
        NamespaceFile file = NamespaceFile.OpenClaimed(path, create: false, writable);
        try
        {
            NamespaceProbeResult probe = NamespaceProbe.Probe(file);
            if (probe.Kind != NamespaceKind.PmemblkPool) throw probe.ToException("a pmemblk pool");
            byte[] head = new byte[PmemblkPoolHeader.DataOffset];
            int n = file.Size >= head.Length ? file.ReadAt(head, 0) : 0;
            if (n < head.Length) throw new InvalidNamespaceException($"'{path}' is too small to be a pmemblk pool ({file.Size} bytes)");
            if (!PmemblkPoolHeader.TryParse(head, out PmemblkPoolHeader? header, out string? error))
                throw new InvalidNamespaceException($"'{path}': {error}");
            if (file.Size - PmemblkPoolHeader.DataOffset < Btt.MinSize)
                throw new InvalidNamespaceException($"'{path}': pool of {file.Size} bytes is below the pmemblk minimum of {Btt.MinSize + PmemblkPoolHeader.DataOffset}");
            (SafeMmapHandle map, PersistenceMode mode) = PmemNamespace.Map(file, file.Size, writable, privateCopy);
            return new PmemblkPool(file, map, mode, header!);
        }
        catch
        {
            file.Dispose();
            throw;
        }
    }

    /// <summary>Makes every store to the pool durable.</summary>
    public void Flush()
    {
        if (Persistence == PersistenceMode.CpuCache) { PersistentMemory.Drain(); return; }
        if (Libc.msync((nint)_mapping.Address, _mapping.Length, Libc.MS_SYNC) != 0) Libc.ThrowErrno("msync", Path);
        if (PmemTrace.Enabled) PmemTrace.Msynced(_mapping.Address, _mapping.Length);
    }

    /// <summary>Unmaps and releases the claim.</summary>
    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        _mapping.Dispose();
        _file.Dispose();
    }
}
