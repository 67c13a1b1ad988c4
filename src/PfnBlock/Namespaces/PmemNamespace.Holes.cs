namespace PfnBlock.Namespaces;

/// <summary>
/// Sparse namespaces: on tmpfs the namespace file itself can have holes. A discard of whole pages
/// punches them out of the file (the memory is freed, and a later write allocates it again), and
/// queries tell holes from pages that exist. Elsewhere (a DAX filesystem under MAP_SYNC, a disk
/// filesystem's page cache) nothing is punched and every page exists.
/// </summary>
/// <remarks>
/// Punching only on tmpfs keeps the crash model as it is: on tmpfs a namespace survives a process
/// kill but never a power failure, and a punch is one system call that takes effect in the page
/// cache at once (a kill leaves each page punched or not, as a zeroing store would); on a DAX or disk
/// filesystem a punch would be a filesystem metadata change whose durability neither FLUSH (an
/// <c>sfence</c> under MAP_SYNC) nor the crash-state explorer covers.
/// </remarks>
public sealed unsafe partial class PmemNamespace
{
    private readonly NamespaceHoles? _holes;

    /// <summary>True when whole pages of the data area can be punched out of the file (a writable namespace on tmpfs, mapped shared).</summary>
    public bool PunchesHoles => _holes is { CanPunch: true };

    /// <summary>True when the data area's file can have holes and queries ask about them (a tmpfs namespace).</summary>
    public bool TracksHoles => _holes is not null;

    /// <summary>
    /// Punches the pages of [<paramref name="offset"/>, +<paramref name="length"/>) of the data area
    /// (page-aligned) out of the file; they read as zeros. False when the namespace cannot punch or the
    /// file refused (then the caller zeroes the range itself). The caller keeps direct-access pins off
    /// the range while it runs (a pinned page must not change under its holder).
    /// </summary>
    public bool PunchHole(long offset, long length)
    {
        if (_holes is not { CanPunch: true } || ((offset | length) & (Memory.Pfn.PageSize - 1)) != 0 || offset < 0 || length <= 0 || length > DataSize - offset)
            return false;
        return _holes.Punch(offset, length);
    }

    /// <summary>
    /// The run of the data area from <paramref name="offset"/> towards <paramref name="end"/> that is
    /// all holes (<paramref name="hole"/> true) or all pages that exist; returns where it ends. A
    /// namespace that does not track holes answers "exists" up to <paramref name="end"/>.
    /// </summary>
    public long AllocationRun(long offset, long end, out bool hole)
    {
        hole = false;
        return _holes is null ? end : _holes.Run(offset, end, out hole);
    }

    /// <summary>
    /// True when a page of [<paramref name="offset"/>, +<paramref name="length"/>) of the data area
    /// may be a hole: a read must not load it through the mapping, which on tmpfs would allocate the
    /// page (undoing the punch) and, on a full tmpfs, raise SIGBUS. Cheap: a look at a bitmap.
    /// </summary>
    public bool MayHaveHoles(long offset, long length) => _holes is not null && _holes.AnyMaybe(offset, length);

    /// <summary>
    /// Called before a write of [<paramref name="offset"/>, +<paramref name="length"/>) to the data
    /// area: gives holes in it their memory back first. False when the filesystem has no space left
    /// (the write must fail then: a store into a hole that cannot be allocated would raise SIGBUS).
    /// </summary>
    public bool ReserveForWrite(long offset, long length) => _holes is null || _holes.Reserve(offset, length);

    /// <summary>How many writes made pages of theirs that might be holes exist first (<c>MADV_POPULATE_WRITE</c>; for tests).</summary>
    internal long HoleReservations => _holes?.Reservations ?? 0;

    /// <summary>Called after a write of [<paramref name="offset"/>, +<paramref name="length"/>) through the block layer: those pages exist now.</summary>
    public void NoteWritten(long offset, long length) => _holes?.Written(offset, length);
}
