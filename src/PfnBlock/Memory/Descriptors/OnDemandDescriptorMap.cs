using PfnBlock.Interop;

namespace PfnBlock.Memory;

/// <summary>
/// The <see cref="DescriptorMapKind.OnDemand"/> map (Jerome Glisse's "carve out a chunk of
/// kernel address space … for vmemmap and handle pagefault on it"): the whole memmap, 64 bytes
/// per frame, is reserved as address space with <c>MAP_NORESERVE</c> and never written up front;
/// the kernel's own page faults populate it a 4 KiB page (64 descriptors) at a time where a
/// descriptor is first written. DRAM cost is the pages touched, measured from
/// <c>/proc/self/smaps</c>.
/// </summary>
/// <remarks>
/// Reading an untouched descriptor maps the kernel's shared zero page (all fields 0, no DRAM:
/// smaps' Rss does not count it, <c>mincore</c> would), so lookups that only look cost nothing;
/// the first write allocates. Not every kernel has that zero page (a PVM guest booted with
/// <c>pvm_no_zero_page=1</c> allocates on a read fault too), so the pin table answers "is anything
/// pinned?" from its count of live pins without reading a descriptor (<see cref="DescriptorPins"/>).
/// Transparent huge pages are refused for the reservation (<c>MADV_NOHUGEPAGE</c>), or one
/// touched descriptor would cost 2 MiB. A descriptor's <see cref="PageDescriptor.Index"/> is
/// filled in by the first <see cref="Get"/> (initialising all of them up front would touch every
/// page); <see cref="Head"/>, which only reference counts use, never writes.
/// </remarks>
public sealed unsafe class OnDemandDescriptorMap : IPageDescriptorMap
{
    private readonly SafeMmapHandle _reservation;
    private readonly PageDescriptor* _map;
    private readonly long _frames;

    /// <summary>Reserves address space for the descriptors of <paramref name="frameCount"/> frames.</summary>
    /// <exception cref="IOException">The address space could not be reserved.</exception>
    public OnDemandDescriptorMap(long frameCount)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(frameCount);
        _frames = frameCount;
        nuint bytes = (nuint)((frameCount * PageDescriptor.Size + Pfn.PageSize - 1) & ~(long)(Pfn.PageSize - 1));
        _reservation = SafeMmapHandle.TryMap(bytes, Libc.PROT_READ | Libc.PROT_WRITE, Libc.MAP_PRIVATE | Libc.MAP_ANONYMOUS | Libc.MAP_NORESERVE, -1, 0)
            ?? throw Libc.ErrnoException(Libc.Errno, "mmap(MAP_NORESERVE)", "on-demand descriptor map");
        // A hint: refused THP only makes a touched descriptor cost 2 MiB instead of 4 KiB.
        _ = Libc.madvise((nint)_reservation.Address, bytes, Libc.MADV_NOHUGEPAGE);
        _map = (PageDescriptor*)_reservation.Address;
    }

    /// <inheritdoc/>
    public DescriptorMapKind Kind => DescriptorMapKind.OnDemand;
    /// <inheritdoc/>
    public int FramesPerDescriptor => 1;
    /// <inheritdoc/>
    public bool IsStable => true;
    /// <summary>Bytes of address space reserved (what a dense map would allocate).</summary>
    public long ReservedBytes => (long)_reservation.Length;

    /// <summary>Resident bytes of the reservation: the Rss line of its mapping in <c>/proc/self/smaps</c> (a file read: for measurement, not for hot paths).</summary>
    public long DramBytes => Smaps.ResidentBytes((nint)_map);

    /// <inheritdoc/>
    public long DeviceBytes => 0;

    /// <inheritdoc/>
    public PageDescriptor* Get(long frameIndex)
    {
        PageDescriptor* d = Head(frameIndex);
        // Written only when it differs, so frame 0's lookup and repeated lookups never store.
        if (d->Index != (ulong)frameIndex) d->Index = (ulong)frameIndex;
        return d;
    }

    /// <inheritdoc/>
    public PageDescriptor* Head(long frameIndex)
    {
        if ((ulong)frameIndex >= (ulong)_frames) DescriptorMaps.ThrowOutOfRange(frameIndex, _frames);
        return _map + frameIndex;
    }
    /// <inheritdoc/>
    public void Put(PageDescriptor* descriptor) { }

    /// <summary>
    /// Gives back the pages of descriptors that hold nothing (every field zero), as Ingo's
    /// "LRA scheme could unmap chunks" suggests: <c>MADV_DONTNEED</c> returns them to the zero
    /// page. Call only while no descriptor is being changed (it checks, then drops, a page).
    /// </summary>
    /// <returns>Bytes given back.</returns>
    public long Trim()
    {
        long released = 0;
        long pages = (long)_reservation.Length / Pfn.PageSize;
        var resident = new byte[pages];
        fixed (byte* vec = resident)
            if (Libc.mincore((nint)_map, _reservation.Length, vec) != 0) Libc.ThrowErrno("mincore");
        for (long p = 0; p < pages; p++)
        {
            if ((resident[p] & 1) == 0) continue;
            var words = new ReadOnlySpan<ulong>((byte*)_map + p * Pfn.PageSize, Pfn.PageSize / sizeof(ulong));
            if (words.ContainsAnyExcept(0UL)) continue;
            if (Libc.madvise((nint)((byte*)_map + p * Pfn.PageSize), Pfn.PageSize, Libc.MADV_DONTNEED) == 0) released += Pfn.PageSize;
        }
        return released;
    }

    /// <inheritdoc/>
    public void Dispose() => _reservation.Dispose();
}

/// <summary>Reads one mapping's lines of <c>/proc/self/smaps</c>.</summary>
public static class Smaps
{
    /// <summary>The Rss, in bytes, of the mapping that starts at <paramref name="start"/>; 0 when there is none.</summary>
    public static long ResidentBytes(nint start) => Field(start, "Rss:");

    /// <summary>A "kB" field (Rss:, ShmemPmdMapped:, FilePmdMapped:, KernelPageSize:…) of the mapping containing <paramref name="address"/>, in bytes; 0 when absent.</summary>
    public static long Field(nint address, string field)
    {
        ulong a = (ulong)address;
        bool inside = false;
        foreach (string line in File.ReadLines("/proc/self/smaps"))
        {
            if (line.Length > 0 && char.IsAsciiHexDigit(line[0]) && line.IndexOf('-') is int dash and > 0)
            {
                int space = line.IndexOf(' ');
                if (space < dash) continue;
                ulong lo = Convert.ToUInt64(line[..dash], 16), hi = Convert.ToUInt64(line[(dash + 1)..space], 16);
                if (inside) return 0;
                inside = a >= lo && a < hi;
                continue;
            }
            if (inside && line.StartsWith(field, StringComparison.Ordinal))
                return long.Parse(line[field.Length..].Trim().Split(' ')[0], System.Globalization.CultureInfo.InvariantCulture) * 1024;
        }
        return 0;
    }
}
