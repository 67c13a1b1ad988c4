namespace PfnBlock.Devices.DirectFile;

/// <summary>
/// A pinned range of device frames registered with a <see cref="FileDevice"/>'s io_uring as a fixed
/// buffer (<see cref="FileDevice.RegisterFixedBuffer"/>): while it lasts, O_DIRECT reads into and
/// writes out of the range go as READ_FIXED/WRITE_FIXED and the kernel pins no pages per I/O.
/// </summary>
/// <remarks>
/// The kernel holds its own pin on the pages for as long as the registration lasts. If the frames
/// left the namespace meanwhile (a discard punching them out of the file, a shrink, a destroy), the
/// ring would go on writing into pages the file no longer has. So the holder keeps the range pinned
/// through the pin seam (which makes discard, write-zeroes, shrink and destroy of it wait or refuse)
/// for the lease's whole life, and disposes the lease, with none of its I/O in flight, before it
/// unpins.
/// </remarks>
public sealed class FixedBufferLease : IDisposable
{
    private readonly FileIoEngine _engine;
    private readonly int _id;
    private int _disposed;

    internal FixedBufferLease(FileIoEngine engine, int id, long bytes)
    {
        _engine = engine;
        _id = id;
        Bytes = bytes;
    }

    /// <summary>Bytes registered.</summary>
    public long Bytes { get; }

    /// <summary>Unregisters the range (the kernel unpins its pages); once. A no-op on a device already disposed, whose ring took every registration with it.</summary>
    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) == 0) _engine.UnregisterRange(_id);
    }
}
