namespace PfnBlock.Block;

/// <summary>
/// A device that can take memory registered with it ahead of time for its transfers (an O_DIRECT
/// file on io_uring: fixed buffers, so the kernel pins no pages per I/O). A copy between it and a
/// DAX device registers the DAX side's pinned frames through this, without knowing the device.
/// </summary>
public interface IFixedBufferDevice
{
    /// <summary>
    /// Registers the pinned frames of <paramref name="range"/> (at most 1 GiB). The caller keeps
    /// the range pinned until it has disposed the registration, and disposes it only once its own
    /// I/O in the range has completed: the kernel's pins on those pages must never outlive the pin
    /// seam's, or a discard could take pages the device still writes into.
    /// </summary>
    /// <returns>The registration (dispose to unregister), or null with <paramref name="errno"/>
    /// saying why the range stays on ordinary transfers.</returns>
    IDisposable? RegisterFixedBuffer(in DaxRange range, out int errno);
}
