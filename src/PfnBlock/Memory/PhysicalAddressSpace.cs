using System.Runtime.CompilerServices;

namespace PfnBlock.Memory;

/// <summary>
/// The physical memory model: numbers the frames of every registered <see cref="MemoryRegion"/>
/// and maps a <see cref="Pfn"/> back to its region and CPU address in O(1) through a section
/// table, like the kernel's SPARSEMEM (<c>__pfn_to_section</c>).
/// </summary>
/// <remarks>
/// Each region gets a section-aligned range of frame numbers; a section belongs to at most one
/// region. Frame numbers are never reused after a region is removed, so a pfn that outlives its
/// region resolves to nothing instead of to someone else's memory.
/// </remarks>
public sealed unsafe class PhysicalAddressSpace
{
    /// <summary>log2 of frames per section: 2^15 frames = 128 MiB, SECTION_SIZE_BITS 27 on x86-64.</summary>
    public const int SectionShift = 15;
    /// <summary>Frames per section.</summary>
    public const long FramesPerSection = 1L << SectionShift;

    private readonly Lock _lock = new();
    private MemoryRegion?[] _sections = new MemoryRegion?[64];
    // Section 0 is never handed out, so pfn 0 (a default Pfn) is always invalid.
    private long _nextSection = 1;
    private readonly List<MemoryRegion> _regions = [];

    /// <summary>The process-wide address space used when none is given.</summary>
    public static PhysicalAddressSpace Shared { get; } = new();

    /// <summary>The regions registered now.</summary>
    public IReadOnlyList<MemoryRegion> Regions
    {
        get { lock (_lock) return _regions.ToArray(); }
    }

    /// <summary>Registers a region (memory hot-add) and numbers its frames.</summary>
    /// <returns>The pfn of the region's first frame.</returns>
    public Pfn Add(MemoryRegion region)
    {
        ArgumentNullException.ThrowIfNull(region);
        lock (_lock)
        {
            if (region.AddressSpace is not null)
                throw new InvalidOperationException($"region {region.Name} is already registered");
            long sections = (region.FrameCount + FramesPerSection - 1) >> SectionShift;
            long first = _nextSection;
            long end = first + sections;
            if (end > (long)(~Pfn.FlagsMask >> SectionShift))
                throw new InvalidOperationException("physical address space exhausted");
            MemoryRegion?[] table = _sections;
            if (end > table.Length)
            {
                long length = table.Length;
                while (length < end) length *= 2;
                var grown = new MemoryRegion?[length];
                Array.Copy(table, grown, table.Length);
                table = grown;
            }
            for (long s = first; s < end; s++) table[s] = region;
            region.BaseFrame = (ulong)(first << SectionShift);
            region.AddressSpace = this;
            _nextSection = end;
            _regions.Add(region);
            Volatile.Write(ref _sections, table);
            return new Pfn(region.BaseFrame, region.Flags);
        }
    }

    /// <summary>Removes a region (memory hot-remove). Its pfns stop resolving; they are never reused.</summary>
    public void Remove(MemoryRegion region)
    {
        lock (_lock)
        {
            if (region.AddressSpace != this) return;
            long first = (long)(region.BaseFrame >> SectionShift);
            long sections = (region.FrameCount + FramesPerSection - 1) >> SectionShift;
            for (long s = first; s < first + sections; s++) _sections[s] = null;
            _regions.Remove(region);
            region.AddressSpace = null;
        }
    }

    /// <summary>The region holding <paramref name="pfn"/>, or null (<c>pfn_valid</c> fails).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public MemoryRegion? FindRegion(Pfn pfn)
    {
        ulong frame = pfn.Frame;
        MemoryRegion?[] table = Volatile.Read(ref _sections);
        ulong section = frame >> SectionShift;
        if (section >= (ulong)table.Length) return null;
        MemoryRegion? region = table[section];
        if (region is null || frame - region.BaseFrame >= (ulong)region.FrameCount) return null;
        return region;
    }

    /// <summary>True when the pfn names a frame of a registered region.</summary>
    public bool IsValid(Pfn pfn) => FindRegion(pfn) is not null;

    /// <summary>
    /// "kmap": the CPU address of byte <paramref name="offset"/> of the frame <paramref name="pfn"/>,
    /// checking that <paramref name="length"/> bytes from there stay inside the frame's region.
    /// </summary>
    /// <exception cref="FrameNotAddressableException">The pfn is unknown, device-only, or the range leaves its region.</exception>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public byte* Kmap(Pfn pfn, uint offset, uint length)
    {
        MemoryRegion? region = FindRegion(pfn);
        if (region is null || region.BaseAddress == null) return ThrowNotAddressable(pfn, region);
        ulong byteInRegion = ((pfn.Frame - region.BaseFrame) << Pfn.PageShift) + offset;
        if (byteInRegion + length > (ulong)region.Size) return ThrowPastRegion(pfn, offset, length, region);
        return region.BaseAddress + byteInRegion;
    }

    /// <summary>Like <see cref="Kmap"/> but returns null instead of throwing; used on the I/O path.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public byte* TryKmap(Pfn pfn, uint offset, uint length)
    {
        MemoryRegion? region = FindRegion(pfn);
        if (region is null || region.BaseAddress == null) return null;
        ulong byteInRegion = ((pfn.Frame - region.BaseFrame) << Pfn.PageShift) + offset;
        if (byteInRegion + length > (ulong)region.Size) return null;
        return region.BaseAddress + byteInRegion;
    }

    /// <summary>
    /// Pins <paramref name="frames"/> frames from <paramref name="pfn"/> in their region's pin store
    /// (<see cref="MemoryRegion.Pins"/>), so discard and teardown of the region wait for them.
    /// </summary>
    /// <returns>The pin; an empty one when a fence covers the frames (a discard is pending).</returns>
    /// <exception cref="FrameNotAddressableException">The pfn is not a frame of any region, or the range runs past its region.</exception>
    public FramePin Pin(Pfn pfn, long frames)
    {
        MemoryRegion? region = FindRegion(pfn);
        if (region is null) throw new FrameNotAddressableException($"cannot pin {pfn}: it is not a frame of any registered region");
        long first = (long)(pfn.Frame - region.BaseFrame);
        if (frames <= 0 || frames > region.FrameCount - first)
            throw new FrameNotAddressableException($"cannot pin {frames} frames from {pfn}: region {region.Name} ends {region.FrameCount - first} frames after it");
        return FramePin.TryPin(region.Pins, first, frames);
    }

    /// <summary>A span over <paramref name="length"/> bytes at <paramref name="offset"/> of frame <paramref name="pfn"/>.</summary>
    public Span<byte> KmapSpan(Pfn pfn, uint offset, int length) => new(Kmap(pfn, offset, (uint)length), length);

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static byte* ThrowNotAddressable(Pfn pfn, MemoryRegion? region) =>
        throw new FrameNotAddressableException(region is null
            ? $"{pfn} is not a frame of any registered region"
            : $"{pfn} belongs to {region.Name}, which has no CPU mapping ({region.Kind})");

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static byte* ThrowPastRegion(Pfn pfn, uint offset, uint length, MemoryRegion region) =>
        throw new FrameNotAddressableException($"{pfn}+{offset} length {length} runs past the end of region {region.Name}");
}

/// <summary>Thrown when a pfn cannot be mapped for CPU access.</summary>
public sealed class FrameNotAddressableException(string message) : InvalidOperationException(message);
