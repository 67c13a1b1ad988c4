namespace PfnBlock.Block;

/// <summary>
/// A device this process owns only as long as no other host takes it over: a shared image under an
/// exclusive lock (an RBD image), which another host may fence off by breaking the lock and
/// blocklisting this client when it believes this host dead.
/// </summary>
/// <remarks>
/// A layer that acknowledges writes before they reach the device (a write-back cache) asks this
/// to stop acknowledging once the device is lost: the new owner will never see those writes.
/// Once lost, the device stays lost for the life of this open (a blocklisting is not undone by
/// waiting; reopening in a new process is the way back, see docs/DESIGN.md).
/// </remarks>
public interface IOwnedDevice
{
    /// <summary>
    /// Why this process no longer owns the device (its client was blocklisted, its lock was
    /// broken), or null while it does. Cheap (no I/O; the device notes a loss when a request fails
    /// with it, and checks its lock state locally); once non-null it stays so.
    /// </summary>
    string? LostOwnership { get; }

    /// <summary>
    /// Asks the owner of record whether this process still owns the device (one round trip to it,
    /// bounded by the device's request timeout) and returns <see cref="LostOwnership"/> after. For
    /// a caller that may go a long time without any request failing on the device: a cache that
    /// absorbs every write and has nothing to write back.
    /// </summary>
    string? ProbeOwnership();
}
