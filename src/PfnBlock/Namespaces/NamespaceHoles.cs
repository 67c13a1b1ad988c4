using PfnBlock.Interop;
using PfnBlock.Memory;

namespace PfnBlock.Namespaces;

/// <summary>
/// The holes of a namespace's data area in its tmpfs file: punched by discards (freeing the memory
/// behind them), found again by the kernel's page-cache residency and <c>SEEK_HOLE</c>, and tracked
/// meanwhile in a bitmap that spares the I/O path a system call where no hole can be.
/// </summary>
/// <remarks>
/// <para>One bit per 4 KiB page. A clear bit means the page is known to exist (it was found
/// resident or written since); a set bit means it may be a hole, and whoever needs to know asks the
/// kernel and clears the bit when the page turns out to exist. Only a punch (this code) makes a
/// hole, and it sets the bits before and after punching, so a clear bit is never wrong for long:
/// only a write racing a discard of the same page can leave one clear over a fresh hole, and then
/// the page is merely read through the mapping (refilled as zeros) instead of reported as a hole.</para>
/// <para>Why ask the kernel at all rather than trust the bitmap: pages also come back by ways the
/// block layer does not see (a read through the mapping faults a zero page in; a direct-access user
/// writes), and pages of a tmpfs file may be swapped out. <c>mincore</c> answers "is the page in
/// memory" for a bounded range; a page it calls absent is confirmed with <c>SEEK_HOLE</c>, which
/// counts swapped-out pages as data, so a swapped page is never taken for a hole. Both seeks walk
/// pages (<c>SEEK_DATA</c> every allocated but unwritten one up to the next data, <c>SEEK_HOLE</c>
/// every written one up to the next hole), so the confirmation asks <c>SEEK_HOLE</c> at a page the
/// bitmap marks as a maybe-hole, where it answers at once (<see cref="HoleAt"/>).</para>
/// </remarks>
internal sealed unsafe class NamespaceHoles
{
    // Pages per mincore call: 2 MiB, a stack buffer of 512 bytes.
    private const int Batch = 512;

    private readonly int _fd;
    private readonly long _fileOffset;
    private readonly byte* _data;
    private readonly long _pages;
    private readonly ulong[] _maybe;

    /// <param name="fd">The namespace file (kept open by its owner for this object's life).</param>
    /// <param name="fileOffset">Where the data area starts in the file.</param>
    /// <param name="data">The data area's mapping (shared, page-aligned).</param>
    /// <param name="dataSize">Bytes of the data area (whole pages).</param>
    /// <param name="canPunch">Discards may punch holes (a writable namespace).</param>
    public NamespaceHoles(int fd, long fileOffset, byte* data, long dataSize, bool canPunch)
    {
        _fd = fd;
        _fileOffset = fileOffset;
        _data = data;
        _pages = dataSize >> Pfn.PageShift;
        _maybe = new ulong[(_pages + 63) >> 6];
        CanPunch = canPunch;
        byte* vec = stackalloc byte[Batch];
        for (long p = 0; p < _pages; p += Batch)
        {
            int n = (int)Math.Min(Batch, _pages - p);
            bool known = Libc.mincore((nint)(_data + (p << Pfn.PageShift)), (nuint)n << Pfn.PageShift, vec) == 0;
            for (int i = 0; i < n; i++)
                if (!known || (vec[i] & 1) == 0) _maybe[(p + i) >> 6] |= 1UL << (int)((p + i) & 63);
        }
    }

    /// <summary>How many writes found pages of theirs that might be holes and made them exist first (for tests).</summary>
    internal long Reservations => Volatile.Read(ref _reservations);
    private long _reservations;

    /// <summary>Discards may punch holes (the namespace is writable).</summary>
    public bool CanPunch { get; }

    /// <summary>
    /// Punches the pages of [<paramref name="offset"/>, +<paramref name="length"/>) (page-aligned,
    /// data-area relative) out of the file: they read as zeros and hold no memory. False when the
    /// file refuses (the caller zeroes instead).
    /// </summary>
    public bool Punch(long offset, long length)
    {
        long first = offset >> Pfn.PageShift, count = length >> Pfn.PageShift;
        Mark(first, count);
        bool done = Libc.fallocate(_fd, Libc.FALLOC_FL_PUNCH_HOLE | Libc.FALLOC_FL_KEEP_SIZE, _fileOffset + offset, length) == 0;
        // Again: a query that found a page still there while the punch ran may have cleared its bit.
        Mark(first, count);
        return done;
    }

    /// <summary>
    /// The run from <paramref name="offset"/> (data-area relative) towards <paramref name="end"/>:
    /// holes, or pages that exist; returns where it stops (page-granular, at most <paramref name="end"/>).
    /// </summary>
    public long Run(long offset, long end, out bool hole)
    {
        long page = offset >> Pfn.PageShift;
        long lastPage = (end - 1) >> Pfn.PageShift;
        if (IsMaybe(page))
        {
            if (HoleAt(page, lastPage + 1, out long holeEnd))
            {
                hole = true;
                return Math.Min(end, holeEnd);
            }
            Clear(page);
        }
        hole = false;
        long p = page + 1;
        byte* vec = stackalloc byte[Batch];
        while (p <= lastPage)
        {
            p = NextMaybe(p, lastPage + 1);
            if (p > lastPage) break;
            // Confirm a stretch of maybe-holes with one mincore call; stop at the first real hole.
            int n = (int)Math.Min(Batch, lastPage + 1 - p);
            if (Libc.mincore((nint)(_data + (p << Pfn.PageShift)), (nuint)n << Pfn.PageShift, vec) != 0) return Math.Min(end, p << Pfn.PageShift);
            int i = 0;
            for (; i < n; i++)
            {
                if (!IsMaybe(p + i)) continue;
                if ((vec[i] & 1) != 0 || !IsHole(p + i)) Clear(p + i);
                else break;
            }
            p += i;
            if (i < n) break;
        }
        return Math.Min(end, p << Pfn.PageShift);
    }

    /// <summary>True when a page of [<paramref name="offset"/>, +<paramref name="length"/>) may be a hole (punched since it was last written).</summary>
    public bool AnyMaybe(long offset, long length)
    {
        long first = offset >> Pfn.PageShift, last = (offset + length - 1) >> Pfn.PageShift;
        return NextMaybe(first, last + 1) <= last;
    }

    /// <summary>
    /// Before a write of [<paramref name="offset"/>, +<paramref name="length"/>): makes every page
    /// of it that may be a hole exist and be mapped, so that a full filesystem fails the write here
    /// instead of killing the process with SIGBUS on a store through the mapping. False when there
    /// is no space.
    /// </summary>
    /// <remarks>
    /// One <c>MADV_POPULATE_WRITE</c> over the write's pages does what the stores' page faults would
    /// (allocate a hole, zero a fallocated page, fill the page table), once per call instead of once
    /// per 4 KiB page, and fails where they would raise SIGBUS. The pages are about to be written,
    /// so making them exist changes nothing a reader can see. Where the kernel lacks it (before
    /// 5.14), <c>fallocate</c> gives the holes their memory and the stores fault as before.
    /// </remarks>
    public bool Reserve(long offset, long length)
    {
        long first = offset >> Pfn.PageShift, last = (offset + length - 1) >> Pfn.PageShift;
        if (NextMaybe(first, last + 1) > last) return true;
        long start = first << Pfn.PageShift, bytes = (last + 1 - first) << Pfn.PageShift;
        Interlocked.Increment(ref _reservations);
        if (Libc.madvise((nint)(_data + start), (nuint)bytes, Libc.MADV_POPULATE_WRITE) == 0) return true;
        // A page could not be had (EFAULT where a store would raise SIGBUS, ENOMEM), or the kernel
        // has no MADV_POPULATE_WRITE (EINVAL): fallocate tells whether the filesystem is full.
        return Libc.fallocate(_fd, Libc.FALLOC_FL_KEEP_SIZE, _fileOffset + start, bytes) == 0 || Libc.Errno != Libc.ENOSPC;
    }

    /// <summary>After a write through the block layer: its pages exist now.</summary>
    public void Written(long offset, long length)
    {
        long first = offset >> Pfn.PageShift, last = (offset + length - 1) >> Pfn.PageShift;
        for (long p = NextMaybe(first, last + 1); p <= last; p = NextMaybe(p + 1, last + 1)) Clear(p);
    }

    /// <summary>
    /// The file has no data at <paramref name="page"/>: true with where the hole ends, looked for
    /// up to <paramref name="limit"/> (exclusive) and at most <see cref="Batch"/> pages on.
    /// </summary>
    /// <remarks>
    /// The first page with <c>SEEK_HOLE</c>, which answers at once when its offset is in a hole;
    /// the rest with one <c>mincore</c> when the system has no swap, else page by page.
    /// Not <c>SEEK_DATA</c>: on tmpfs it walks every page that is allocated but was never written
    /// (all of a namespace made with <c>fallocate</c>) up to the next data, 47 ms from the start of
    /// a fresh 4 GiB namespace, on every 4 KiB read of it.
    /// </remarks>
    private bool HoleAt(long page, long limit, out long holeEnd)
    {
        holeEnd = 0;
        if (!IsHole(page)) return false;
        long p = page + 1, stop = Math.Min(limit, page + Batch);
        byte* vec = stackalloc byte[Batch];
        // Without swap, a page mincore calls absent is a hole: one call for the run instead of a seek per page.
        if (p < stop && Libc.HasNoSwap() && Libc.mincore((nint)(_data + (p << Pfn.PageShift)), (nuint)(stop - p) << Pfn.PageShift, vec) == 0)
        {
            long first = p;
            while (p < stop && IsMaybe(p) && (vec[p - first] & 1) == 0) p++;
        }
        else
        {
            while (p < stop && IsMaybe(p) && IsHole(p)) p++;
        }
        holeEnd = p << Pfn.PageShift;
        return true;
    }

    /// <summary>One page is a hole: <c>SEEK_HOLE</c> from its start stays there. An error or data (swapped-out pages count as data): not a hole.</summary>
    private bool IsHole(long page)
    {
        long at = _fileOffset + (page << Pfn.PageShift);
        return Libc.lseek(_fd, at, Libc.SEEK_HOLE) == at;
    }

    private bool IsMaybe(long page) => (Volatile.Read(ref _maybe[page >> 6]) & (1UL << (int)(page & 63))) != 0;

    private void Clear(long page) => Interlocked.And(ref _maybe[page >> 6], ~(1UL << (int)(page & 63)));

    private void Mark(long first, long count)
    {
        for (long p = first; p < first + count; p++) Interlocked.Or(ref _maybe[p >> 6], 1UL << (int)(p & 63));
    }

    /// <summary>The first page at or after <paramref name="page"/> (below <paramref name="limit"/>) that may be a hole, else <paramref name="limit"/>.</summary>
    private long NextMaybe(long page, long limit)
    {
        while (page < limit)
        {
            ulong word = Volatile.Read(ref _maybe[page >> 6]) >> (int)(page & 63);
            if (word != 0) return Math.Min(limit, page + System.Numerics.BitOperations.TrailingZeroCount(word));
            page = (page | 63) + 1;
        }
        return limit;
    }

    /// <summary>
    /// Builds the page tables of the pages of a new mapping that exist, leaving holes alone (a read
    /// fault on a hole of a shared tmpfs mapping allocates a page, which <c>MAP_POPULATE</c> would do
    /// for every hole). Where <c>MADV_POPULATE_READ</c> is unavailable pages fault in on first use.
    /// </summary>
    public static void PopulateResident(byte* address, long length)
    {
        long pages = length >> Pfn.PageShift;
        byte* vec = stackalloc byte[Batch];
        long runStart = -1;
        for (long p = 0; p < pages; p += Batch)
        {
            int n = (int)Math.Min(Batch, pages - p);
            if (Libc.mincore((nint)(address + (p << Pfn.PageShift)), (nuint)n << Pfn.PageShift, vec) != 0) return;
            for (int i = 0; i < n; i++)
            {
                bool resident = (vec[i] & 1) != 0;
                if (resident && runStart < 0) runStart = p + i;
                else if (!resident && runStart >= 0)
                {
                    Populate(address, runStart, p + i);
                    runStart = -1;
                }
            }
        }
        if (runStart >= 0) Populate(address, runStart, pages);
    }

    private static void Populate(byte* address, long first, long end) =>
        _ = Libc.madvise((nint)(address + (first << Pfn.PageShift)), (nuint)(end - first) << Pfn.PageShift, Libc.MADV_POPULATE_READ);
}
