using PfnBlock.Block;
using PfnBlock.Memory;

namespace PfnBlock.Exports.Copy;

/// <summary>
/// A stretch of a copy's DAX side (at most 1 GiB, the kernel's limit for one fixed buffer),
/// pinned as a whole and registered with the O_DIRECT file's io_uring, so the chunks inside it go
/// as READ_FIXED/WRITE_FIXED: the kernel pins no pages per I/O.
/// </summary>
/// <remarks>
/// The window's pin is what keeps the registration safe: while it is held, a discard, write-zeroes,
/// shrink or destroy of those frames waits (or is refused) in the pin seam, so the ring never
/// writes into pages the namespace file no longer has. <see cref="Release"/> therefore unregisters
/// first and unpins second, and the copy calls it only once no chunk of the window is in flight.
/// A window whose range could not be pinned (a discard is pending there) or registered holds
/// nothing, and its chunks go as before: pinned one by one, READV/WRITEV.
/// </remarks>
internal sealed class RegisteredWindow
{
    /// <summary>The largest window: the kernel refuses a fixed buffer above 1 GiB.</summary>
    public const long MaxBytes = 1L << 30;

    private DaxRange _pin;
    private IDisposable? _lease;

    private RegisteredWindow(long start, long end)
    {
        Start = start;
        End = end;
    }

    /// <summary>First device byte of the window.</summary>
    public long Start { get; }
    /// <summary>Device byte just past the window.</summary>
    public long End { get; }
    /// <summary>True while the window is registered with the file's ring.</summary>
    public bool Registered => _lease is not null;
    /// <summary>Chunks of this window in flight (the copy's thread only).</summary>
    public int InFlight;
    /// <summary>The copy has moved past the window: released once <see cref="InFlight"/> is 0.</summary>
    public bool Retired;

    /// <summary>
    /// Pins [<paramref name="start"/>, <paramref name="end"/>) of <paramref name="dax"/> and registers it
    /// with <paramref name="file"/>; <paramref name="errno"/> is the registration's refusal (0 when
    /// it worked or was not tried because the range could not be pinned).
    /// </summary>
    public static RegisteredWindow Open(IDaxDevice dax, IFixedBufferDevice file, long start, long end, out int errno)
    {
        errno = 0;
        var w = new RegisteredWindow(start, end);
        long pages = (end - start) >> Pfn.PageShift;
        long got = dax.DirectAccess(start >> Pfn.PageShift, pages, out DaxRange pin);
        if (got != pages)
        {
            if (got > 0) pin.Unpin();
            return w;
        }
        w._lease = file.RegisterFixedBuffer(pin, out errno);
        if (w._lease is null) pin.Unpin();
        else w._pin = pin;
        return w;
    }

    /// <summary>Unregisters, then unpins (the order the data's safety needs); idempotent. No chunk of the window may be in flight.</summary>
    public void Release()
    {
        if (_lease is null) return;
        _lease.Dispose();
        _lease = null;
        _pin.Unpin();
        _pin = default;
    }
}
