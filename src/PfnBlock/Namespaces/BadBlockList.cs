using System.Buffers.Binary;

namespace PfnBlock.Namespaces;

/// <summary>
/// A namespace's persistent list of bad blocks (media errors): immutable, its runs sorted, disjoint
/// and never touching (adjacent runs are merged). Raw namespaces keep it in the info block (format
/// 1.1, below); the I/O path checks reads against it and whole-sector writes remove what they cover.
/// </summary>
/// <remarks>
/// On media the list is a table inside the namespace info block, in the area format 1.0 reserved
/// (so 1.0 blocks, whose area is zero and unchecked, read as an empty list). Little-endian; offsets
/// are within the 4 KiB info block:
/// <code>
/// off  size field
/// 176     8 magic      "PFNBADBL"
/// 184     2 version    1: readers refuse any other
/// 186     2 count      runs in use, 0..240
/// 188     4 reserved   0
/// 192     8 checksum   Fletcher-64 of the table's 3864 bytes (176..4040) with this field zeroed
/// 200  3840 runs       240 × {start u64: first 512-byte block of the data area,
///                             count u32: blocks (≥ 1), reserved u32: 0};
///                      the first `count` sorted by start, disjoint, not touching, inside the data area;
///                      the rest zero
/// 4040   48 reserved   zero (the info block's own checksum follows at 4088)
/// </code>
/// The info block's checksum covers the table as well; the table's own magic, version and checksum
/// let it be validated on its own and tell a damaged table from an absent one. A list is replaced as
/// the whole info block is (backup copy, then primary, each persisted before the next), so a crash
/// leaves the old list or the new one (see <c>PmemNamespace.BadBlocks.cs</c>).
/// </remarks>
public sealed class BadBlockList : IEquatable<BadBlockList>
{
    /// <summary>Offset of the table within the info block.</summary>
    public const int TableOffset = 176;
    /// <summary>Bytes of the table (header and every run slot).</summary>
    public const int TableSize = HeaderSize + MaxRanges * RangeSize;
    /// <summary>The most runs a namespace records; an injection that would need more is refused.</summary>
    public const int MaxRanges = 240;
    /// <summary>Table format version this code reads and writes.</summary>
    public const ushort Version = 1;
    /// <summary>The table's first 8 bytes.</summary>
    public static ReadOnlySpan<byte> Magic => "PFNBADBL"u8;

    private const int HeaderSize = 24;
    private const int RangeSize = 16;
    private const int ChecksumOffset = 16; // within the table

    private readonly BadBlockRange[] _ranges;

    private BadBlockList(BadBlockRange[] ranges)
    {
        _ranges = ranges;
        foreach (BadBlockRange r in ranges) TotalBlocks += r.Count;
    }

    /// <summary>A list of runs already sorted, disjoint and not touching (a scan of a BTT's error flags); not limited to <see cref="MaxRanges"/>, since it is not stored in a table.</summary>
    internal static BadBlockList FromRuns(List<BadBlockRange> runs) => runs.Count == 0 ? Empty : new([.. runs]);

    /// <summary>No bad blocks.</summary>
    public static BadBlockList Empty { get; } = new([]);

    /// <summary>The runs, sorted by start.</summary>
    public IReadOnlyList<BadBlockRange> Ranges => _ranges;
    /// <summary>True when nothing is bad (the I/O path's one test in the common case).</summary>
    public bool IsEmpty => _ranges.Length == 0;
    /// <summary>Bad blocks in all runs together.</summary>
    public long TotalBlocks { get; }

    /// <summary>The list with blocks [<paramref name="start"/>, +<paramref name="count"/>) added (merged with the runs they touch).</summary>
    /// <exception cref="ArgumentException">A negative start, a count below 1, or a result of more than <see cref="MaxRanges"/> runs.</exception>
    public BadBlockList Add(long start, long count)
    {
        RequireRange(start, count);
        var result = new List<BadBlockRange>(_ranges.Length + 1);
        long s = start, e = start + count;
        foreach (BadBlockRange r in _ranges)
        {
            if (r.End < s || r.Start > e) { result.Add(r); continue; }
            s = Math.Min(s, r.Start);
            e = Math.Max(e, r.End);
        }
        result.Add(new BadBlockRange(s, e - s));
        result.Sort((a, b) => a.Start.CompareTo(b.Start));
        if (result.Count > MaxRanges)
            throw new ArgumentException($"the bad-block list holds at most {MaxRanges} separate runs; clear some first (namespace clear-errors)");
        return new BadBlockList([.. result]);
    }

    /// <summary>The list without blocks [<paramref name="start"/>, +<paramref name="count"/>) (runs are cut where the range ends inside them).</summary>
    public BadBlockList Remove(long start, long count)
    {
        RequireRange(start, count);
        if (!Overlaps(start, count)) return this;
        long e = start + count;
        var result = new List<BadBlockRange>(_ranges.Length + 1);
        foreach (BadBlockRange r in _ranges)
        {
            if (r.End <= start || r.Start >= e) { result.Add(r); continue; }
            if (r.Start < start) result.Add(new BadBlockRange(r.Start, start - r.Start));
            if (r.End > e) result.Add(new BadBlockRange(e, r.End - e));
        }
        return result.Count == 0 ? Empty : new BadBlockList([.. result]);
    }

    /// <summary>True when any block of [<paramref name="start"/>, +<paramref name="count"/>) is bad.</summary>
    public bool Overlaps(long start, long count) => FirstOverlap(start, count, out _);

    /// <summary>The first run (by start) that shares a block with [<paramref name="start"/>, +<paramref name="count"/>).</summary>
    public bool FirstOverlap(long start, long count, out BadBlockRange range)
    {
        BadBlockRange[] runs = _ranges;
        // The first run ending after start; it overlaps when it also begins before the range ends.
        int lo = 0, hi = runs.Length;
        while (lo < hi)
        {
            int mid = (lo + hi) >>> 1;
            if (runs[mid].End <= start) lo = mid + 1;
            else hi = mid;
        }
        if (lo < runs.Length && runs[lo].Start < start + count)
        {
            range = runs[lo];
            return true;
        }
        range = default;
        return false;
    }

    private static void RequireRange(long start, long count)
    {
        if (start < 0) throw new ArgumentException($"block {start} is negative");
        if (count < 1) throw new ArgumentException($"a count of {count} blocks names no block (at least 1)");
    }

    /// <summary>Writes the table (<see cref="TableSize"/> bytes at <see cref="TableOffset"/> of an info block) with its checksum.</summary>
    internal void Write(Span<byte> table)
    {
        table = table[..TableSize];
        table.Clear();
        Magic.CopyTo(table);
        BinaryPrimitives.WriteUInt16LittleEndian(table[8..], Version);
        BinaryPrimitives.WriteUInt16LittleEndian(table[10..], (ushort)_ranges.Length);
        for (int i = 0; i < _ranges.Length; i++)
        {
            Span<byte> slot = table.Slice(HeaderSize + i * RangeSize, RangeSize);
            BinaryPrimitives.WriteInt64LittleEndian(slot, _ranges[i].Start);
            BinaryPrimitives.WriteUInt32LittleEndian(slot[8..], (uint)_ranges[i].Count);
        }
        BinaryPrimitives.WriteUInt64LittleEndian(table[ChecksumOffset..], Fletcher64.ComputeSkipping(table, ChecksumOffset));
    }

    /// <summary>
    /// Parses and validates a table: magic, version, checksum, a count within bounds, runs sorted,
    /// disjoint, not touching and inside a data area of <paramref name="dataBlocks"/> blocks, every
    /// reserved field and unused slot zero.
    /// </summary>
    internal static bool TryParse(ReadOnlySpan<byte> table, long dataBlocks, out BadBlockList? list, out string? error)
    {
        list = null;
        table = table[..TableSize];
        if (!table[..8].SequenceEqual(Magic)) { error = "bad-block table: no PFNBADBL magic"; return false; }
        ushort version = BinaryPrimitives.ReadUInt16LittleEndian(table[8..]);
        if (version != Version) { error = $"bad-block table: unsupported version {version} (this build reads {Version})"; return false; }
        ulong stored = BinaryPrimitives.ReadUInt64LittleEndian(table[ChecksumOffset..]);
        ulong computed = Fletcher64.ComputeSkipping(table, ChecksumOffset);
        if (stored != computed) { error = $"bad-block table: checksum mismatch (stored {stored:x16}, computed {computed:x16})"; return false; }
        int count = BinaryPrimitives.ReadUInt16LittleEndian(table[10..]);
        if (count > MaxRanges) { error = $"bad-block table: {count} runs (at most {MaxRanges})"; return false; }
        if (BinaryPrimitives.ReadUInt32LittleEndian(table[12..]) != 0) { error = "bad-block table: reserved header field is not zero"; return false; }
        var ranges = new BadBlockRange[count];
        long previousEnd = -1;
        for (int i = 0; i < MaxRanges; i++)
        {
            ReadOnlySpan<byte> slot = table.Slice(HeaderSize + i * RangeSize, RangeSize);
            if (i >= count)
            {
                if (slot.ContainsAnyExcept((byte)0)) { error = $"bad-block table: unused slot {i} is not zero"; return false; }
                continue;
            }
            long start = BinaryPrimitives.ReadInt64LittleEndian(slot);
            long n = BinaryPrimitives.ReadUInt32LittleEndian(slot[8..]);
            // Differences, not sums: start comes from the media and start + n could wrap past the check.
            if (n < 1 || start < 0 || start > dataBlocks || n > dataBlocks - start)
            { error = $"bad-block table: run {i} ({start}+{n}) is empty or outside the data area of {dataBlocks} blocks"; return false; }
            if (start <= previousEnd) { error = $"bad-block table: run {i} ({start}+{n}) is out of order, overlaps or touches the one before"; return false; }
            if (BinaryPrimitives.ReadUInt32LittleEndian(slot[12..]) != 0) { error = $"bad-block table: run {i} has a non-zero reserved field"; return false; }
            ranges[i] = new BadBlockRange(start, n);
            previousEnd = start + n;
        }
        list = count == 0 ? Empty : new BadBlockList(ranges);
        error = null;
        return true;
    }

    /// <summary>Null when every run lies inside a data area of <paramref name="dataBlocks"/> blocks and fits the table, else the reason.</summary>
    internal string? Check(long dataBlocks)
    {
        if (_ranges.Length > MaxRanges) return $"{_ranges.Length} bad-block runs (at most {MaxRanges})";
        foreach (BadBlockRange r in _ranges)
        {
            if (r.End > dataBlocks) return $"bad blocks {r} reach past the data area of {dataBlocks} blocks";
            if (r.Count > uint.MaxValue) return $"bad-block run {r} is longer than a table entry holds";
        }
        return null;
    }

    /// <inheritdoc/>
    public bool Equals(BadBlockList? other) => other is not null && _ranges.AsSpan().SequenceEqual(other._ranges);
    /// <inheritdoc/>
    public override bool Equals(object? obj) => Equals(obj as BadBlockList);
    /// <inheritdoc/>
    public override int GetHashCode()
    {
        var h = new HashCode();
        foreach (BadBlockRange r in _ranges) h.Add(r);
        return h.ToHashCode();
    }

    /// <summary>"none", or the runs as START+COUNT separated by spaces.</summary>
    public override string ToString() => IsEmpty ? "none" : string.Join(' ', _ranges);
}
