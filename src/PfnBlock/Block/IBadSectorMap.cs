namespace PfnBlock.Block;

/// <summary>
/// A device that knows which of its sectors hold media errors (the kernel's <c>badblocks</c> of a
/// gendisk, PMDK's bad-block API): reads touching them complete with
/// <see cref="BlockStatus.MediaError"/> until whole logical blocks are written over them.
/// </summary>
/// <remarks>
/// A redundant target (mirror, RAID5) needs no query to repair what a read runs into: the read
/// fails with <see cref="BlockStatus.MediaError"/>, the target reads the range from redundancy
/// and writes it back to the failed leg, which clears the error. The query is for finding bad
/// sectors without reading them (a scrub, a resync that wants to skip or repair them first, a
/// status report). Answers are a snapshot: a write racing the query may clear what it reports.
/// </remarks>
public interface IBadSectorMap
{
    /// <summary>
    /// The first run of bad sectors (by start) that shares a sector with
    /// [<paramref name="sector"/>, +<paramref name="sectors"/>): true with its first sector and
    /// length in 512-byte sectors of this device (the run is not clipped to the range asked about).
    /// False when no sector of the range is known to be bad.
    /// </summary>
    bool FindBadSectors(long sector, long sectors, out long badStart, out long badCount);
}
