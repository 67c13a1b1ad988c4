namespace PfnBlock.Namespaces.Btt;

/// <summary>
/// The outcome of one sector operation on a <see cref="Btt"/>. The BTT is a namespace format, not
/// a block device, so it reports what it found on the media; the block device above it
/// (<c>Devices/Btt/BttDevice</c>) decides what a bio's status becomes.
/// </summary>
public enum BttStatus : byte
{
    /// <summary>The sector was read, written or marked.</summary>
    Ok,
    /// <summary>The sector number is not below <see cref="Btt.ExternalNlba"/>.</summary>
    OutOfRange,
    /// <summary>
    /// The sector's map entry has the E flag (set by <see cref="Btt.SetError"/> or another
    /// implementation): reads fail until the sector is rewritten.
    /// </summary>
    MediaError,
    /// <summary>
    /// Metadata damage: the sector's map entry names a block outside its arena. Nothing is read or
    /// written through it (a write would free a block that is not the arena's); <c>pfnblock check</c>
    /// reports it.
    /// </summary>
    BadMapEntry,
    /// <summary>The arena's info block has its error flag set; both drivers then refuse writes, and so does this one.</summary>
    ArenaInError,
}
