namespace PfnBlock.Namespaces.Btt;

/// <summary>
/// One BTT map entry: a little-endian u32 per exported sector, translating the pre-map LBA (the
/// sector number within the arena) to the post-map LBA (the data block holding it).
/// </summary>
/// <remarks>
/// Bit layout (drivers/nvdimm/btt.h <c>MAP_*</c>, PMDK btt_layout.h <c>BTT_MAP_ENTRY_*</c>, following
/// the code rather than btt.rst's table):
/// <code>
/// bits 0–29  post-map LBA (data block number, &lt; internal_nlba)
/// bit  30    E: error
/// bit  31    Z: zero (trim)
/// Z E
/// 0 0  initial: never written; identity mapping (block = pre-map LBA), reads as zeros
/// 0 1  error: reads fail with EIO until the sector is rewritten
/// 1 0  zero: reads return zeros; the block stays owned by the sector
/// 1 1  normal: the data lives in the post-map block (0xC0000000 | block)
/// </code>
/// </remarks>
/// <param name="Raw">The entry as stored.</param>
public readonly record struct MapEntry(uint Raw)
{
    /// <summary>Bytes per entry on media.</summary>
    public const int Size = 4;
    /// <summary>Mask of the post-map LBA.</summary>
    public const uint LbaMask = 0x3FFF_FFFF;
    /// <summary>The E flag.</summary>
    public const uint ErrorFlag = 0x4000_0000;
    /// <summary>The Z flag.</summary>
    public const uint ZeroFlag = 0x8000_0000;
    /// <summary>Both flags: the normal state.</summary>
    public const uint NormalFlags = 0xC000_0000;

    /// <summary>The flag bits.</summary>
    public uint FlagBits => Raw & ~LbaMask;
    /// <summary>Never written since layout (both flags clear).</summary>
    public bool IsInitial => FlagBits == 0;
    /// <summary>Reads as zeros (Z only).</summary>
    public bool IsZero => FlagBits == ZeroFlag;
    /// <summary>Reads fail (E only).</summary>
    public bool IsError => FlagBits == ErrorFlag;
    /// <summary>Holds data (Z and E).</summary>
    public bool IsNormal => FlagBits == NormalFlags;
    /// <summary>The data block, applying the identity mapping of an initial entry.</summary>
    public uint PostMap(uint premap) => IsInitial ? premap : Raw & LbaMask;
    /// <summary>A normal entry for <paramref name="block"/>.</summary>
    public static MapEntry Normal(uint block) => new(block | NormalFlags);

    /// <summary>The state name pmempool prints ("init", "error", "zero", "normal").</summary>
    public string StateName => FlagBits switch { 0 => "init", ErrorFlag => "error", ZeroFlag => "zero", _ => "normal" };
}
