using PfnBlock.Memory;

namespace PfnBlock.Namespaces;

/// <summary>
/// A range of a namespace handed to an application for direct loads and stores (a DAX mapping),
/// from a block-mode namespace (<c>PmemDevice.MapDax</c>) or a devdax one
/// (<see cref="DaxNamespace.MapRange"/>): pinned through the region's pin seam for its whole life,
/// so the pin is the descriptor's reference count wherever the map keeps descriptors, and
/// discard, write-zeroes and teardown wait for it; writes through <see cref="Write"/> mark their
/// frames dirty in the region's dirty tracking, and <see cref="Persist"/> writes back only the
/// dirty frames, as the kernel's DAX fsync writes back only the entries tagged dirty.
/// </summary>
/// <remarks>
/// Why an explicit write call rather than catching stores: soft-dirty bits need
/// <c>/proc/self/clear_refs</c>, which resets the whole process's bits (every other mapping's
/// too), and userfaultfd write-protection needs a fault-handling thread and a fault per first
/// store; both cost more than the copy itself for 4 KiB writes. An application that stores through
/// <see cref="Address"/> directly makes its own ranges durable with <see cref="PersistRange"/>.
/// On a MAP_SYNC mapping (real DAX) write-back is a cache flush of the dirty lines' frames; on
/// a page-cache mapping (tmpfs, ext4 without DAX) it is msync of the dirty runs.
/// </remarks>
public sealed unsafe class DaxMapping : IDisposable
{
    private readonly MemoryRegion _region;
    private readonly PersistenceMode _persistence;
    private FramePin _pin;
    private int _disposed;

    /// <summary>Wraps a pin already taken on <paramref name="pin"/>'s frames of <paramref name="region"/> (the data area of a namespace mapped with <paramref name="persistence"/>).</summary>
    internal DaxMapping(MemoryRegion region, PersistenceMode persistence, FramePin pin)
    {
        _region = region;
        _persistence = persistence;
        _pin = pin;
        FirstPage = pin.First;
        Pages = pin.Frames;
    }

    /// <summary>The mapping's first page in the namespace's data area.</summary>
    public long FirstPage { get; }
    /// <summary>Pages mapped (and pinned).</summary>
    public long Pages { get; }
    /// <summary>Where the range starts in this process.</summary>
    public byte* Address => _region.BaseAddress + (FirstPage << Pfn.PageShift);
    /// <summary>Bytes mapped.</summary>
    public long Length => Pages << Pfn.PageShift;
    /// <summary>The pfn of the first page.</summary>
    public Pfn Pfn => _region.PfnAt(FirstPage);

    /// <summary>Copies <paramref name="data"/> to <paramref name="offset"/> of the mapping and marks the frames it touched dirty.</summary>
    /// <exception cref="ArgumentOutOfRangeException">The write leaves the mapping.</exception>
    /// <exception cref="ObjectDisposedException">The mapping was unmapped.</exception>
    public void Write(long offset, ReadOnlySpan<byte> data)
    {
        ObjectDisposedException.ThrowIf(_disposed != 0, this);
        if (offset < 0 || offset > Length - data.Length)
            throw new ArgumentOutOfRangeException(nameof(offset), $"a write of {data.Length} bytes at {offset} leaves the {Length}-byte mapping");
        if (data.IsEmpty) return;
        data.CopyTo(new Span<byte>(Address + offset, data.Length));
        long first = offset >> Pfn.PageShift;
        long last = (offset + data.Length - 1) >> Pfn.PageShift;
        _region.Dirty.MarkDirty(FirstPage + first, last - first + 1);
    }

    /// <summary>
    /// Writes back the namespace's dirty frames (this mapping's and any other's: one namespace,
    /// one dirty set, as one file has) and clears their marks.
    /// </summary>
    /// <param name="writtenBack">Hears each run written back (first page, pages), for tests and statistics.</param>
    /// <returns>Bytes written back.</returns>
    /// <exception cref="IOException">The write-back (msync) failed; the frames are marked dirty again.</exception>
    public long Persist(Action<long, long>? writtenBack = null)
    {
        ObjectDisposedException.ThrowIf(_disposed != 0, this);
        IDirtyFrames dirty = _region.Dirty;
        long frames = dirty.TakeDirty((first, count) =>
        {
            try { PmemNamespace.PersistMapped(_region.BaseAddress + (first << Pfn.PageShift), count << Pfn.PageShift, _persistence); }
            catch (IOException)
            {
                dirty.MarkDirty(first, count); // not written back: the next flush tries again
                throw;
            }
            writtenBack?.Invoke(first, count);
        });
        return frames << Pfn.PageShift;
    }

    /// <summary>Makes <paramref name="length"/> bytes at <paramref name="offset"/> of the mapping durable (for stores made through <see cref="Address"/>).</summary>
    public void PersistRange(long offset, long length)
    {
        ObjectDisposedException.ThrowIf(_disposed != 0, this);
        if (offset < 0 || length < 0 || offset > Length - length) throw new ArgumentOutOfRangeException(nameof(offset), $"[{offset}, +{length}) leaves the {Length}-byte mapping");
        PmemNamespace.PersistMapped(Address + offset, length, _persistence);
    }

    /// <summary>Unmaps: releases the pin (dirty frames stay dirty until a <see cref="Persist"/>).</summary>
    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        _pin.Unpin();
        _pin = default;
    }
}
