using System.Runtime.CompilerServices;

namespace PfnBlock.Memory;

/// <summary>
/// Type flags carried in the high bits of a <see cref="Pfn"/>, at the bit positions of the
/// kernel's <c>include/linux/pfn_t.h</c> (PFN_SG_CHAIN 63 … PFN_SPECIAL 59).
/// </summary>
[Flags]
public enum PfnFlags : ulong
{
    /// <summary>Ordinary DRAM, covered by the default descriptor map.</summary>
    None = 0,
    /// <summary>PFN_SPECIAL (bit 59): may be mapped for execute-in-place, never pinned.</summary>
    Special = 1UL << 59,
    /// <summary>PFN_MAP (bit 60): the frame has a page descriptor set up by its driver.</summary>
    Map = 1UL << 60,
    /// <summary>PFN_DEV (bit 61): device memory, not covered by the default descriptor map.</summary>
    Dev = 1UL << 61,
    /// <summary>PFN_SG_LAST (bit 62): kept for layout fidelity; unused here as in Linux.</summary>
    SgLast = 1UL << 62,
    /// <summary>PFN_SG_CHAIN (bit 63): kept for layout fidelity; unused here as in Linux.</summary>
    SgChain = 1UL << 63,
}

/// <summary>
/// A page frame number plus type flags in one 64-bit word: the seed's <c>__pfn_t</c>.
/// The low 52 bits number a 4 KiB frame of the <see cref="PhysicalAddressSpace"/>; the high 12 bits
/// hold <see cref="PfnFlags"/>. It is a plain value: copying it costs a register, and no object
/// exists per frame.
/// </summary>
/// <remarks>
/// The flags are a hint fixed when the frame's region is registered, never mutable state: a
/// region keeps its flags for its whole life and its frame numbers are never reused while any
/// bio can still hold them (regions are only removed once quiesced), so a flag cannot go stale.
/// </remarks>
public readonly struct Pfn : IEquatable<Pfn>
{
    /// <summary>log2 of the frame size.</summary>
    public const int PageShift = 12;
    /// <summary>The frame size in bytes (4 KiB).</summary>
    public const int PageSize = 1 << PageShift;
    /// <summary>Bits of the word that hold flags: as many as a page offset has, at the top (PFN_FLAGS_MASK).</summary>
    public const ulong FlagsMask = ~((1UL << (64 - PageShift)) - 1);

    private readonly ulong _value;

    /// <summary>Creates a pfn from a frame number and flags.</summary>
    /// <exception cref="ArgumentOutOfRangeException">The frame number overlaps the flag bits.</exception>
    public Pfn(ulong frame, PfnFlags flags = PfnFlags.None)
    {
        if ((frame & FlagsMask) != 0)
            throw new ArgumentOutOfRangeException(nameof(frame), frame, "frame number overlaps the pfn flag bits");
        _value = frame | ((ulong)flags & FlagsMask);
    }

    private Pfn(ulong raw, bool _) => _value = raw;

    /// <summary>Reinterprets a raw 64-bit word (as stored by <see cref="Raw"/>).</summary>
    public static Pfn FromRaw(ulong raw) => new(raw, false);

    /// <summary>The raw 64-bit word: frame number | flags.</summary>
    public ulong Raw => _value;

    /// <summary>The frame number without flags (<c>pfn_t_to_pfn</c>).</summary>
    public ulong Frame
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        get => _value & ~FlagsMask;
    }

    /// <summary>The PFN_* type flags in the top 12 bits, fixed by the region at registration: hints for consumers, never trusted for safety (every access goes through the section table).</summary>
    public PfnFlags Flags => (PfnFlags)(_value & FlagsMask);

    /// <summary>The physical address of the frame's first byte (<c>pfn_t_to_phys</c>).</summary>
    public ulong PhysicalAddress => Frame << PageShift;

    /// <summary>True when a page descriptor may exist for the frame (<c>pfn_t_has_page</c>: MAP set or DEV clear).</summary>
    public bool HasDescriptor => (Flags & PfnFlags.Map) != 0 || (Flags & PfnFlags.Dev) == 0;

    /// <summary>True for device memory with a driver-established descriptor (<c>pfn_t_devmap</c>).</summary>
    public bool IsDevMap => (Flags & (PfnFlags.Dev | PfnFlags.Map)) == (PfnFlags.Dev | PfnFlags.Map);

    /// <summary>The pfn <paramref name="frames"/> frames further on, with the same flags.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public Pfn Add(ulong frames) => new(_value + frames, false);

    /// <summary>The frame holding a physical address, with the given flags (<c>phys_to_pfn_t</c>).</summary>
    public static Pfn FromPhysical(ulong physicalAddress, PfnFlags flags = PfnFlags.None) => new(physicalAddress >> PageShift, flags);

    /// <inheritdoc/>
    public bool Equals(Pfn other) => _value == other._value;
    /// <inheritdoc/>
    public override bool Equals(object? obj) => obj is Pfn p && Equals(p);
    /// <inheritdoc/>
    public override int GetHashCode() => _value.GetHashCode();
    /// <summary>Equality of frame and flags.</summary>
    public static bool operator ==(Pfn a, Pfn b) => a._value == b._value;
    /// <summary>Inequality of frame or flags.</summary>
    public static bool operator !=(Pfn a, Pfn b) => a._value != b._value;
    /// <inheritdoc/>
    public override string ToString() => Flags == PfnFlags.None ? $"pfn:{Frame:x}" : $"pfn:{Frame:x}[{Flags}]";
}
