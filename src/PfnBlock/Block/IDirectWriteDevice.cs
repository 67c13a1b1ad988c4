namespace PfnBlock.Block;

/// <summary>
/// A device whose writes may be stored straight into its memory by whoever produces the data
/// (an NBD server's socket receive), instead of the producer filling a buffer and a bio copying
/// it: one copy instead of two. The device keeps its write contract: between
/// <see cref="BeginDirectWrite"/> and <see cref="EndDirectWrite"/> the caller only stores bytes
/// (any stores, cached or not) into <see cref="DirectWrite.Address"/>; the end makes them as
/// durable as a completed write bio would be, honours FUA, does the bookkeeping a write bio does
/// (holes, bad blocks, statistics) and releases the range.
/// </summary>
public interface IDirectWriteDevice
{
    /// <summary>
    /// Readies device bytes [<paramref name="offset"/>, +<paramref name="length"/>) to be stored
    /// into: checks the range, makes its holes exist (a store into a hole that cannot be allocated
    /// would raise SIGBUS) and pins it, so a discard of it waits until the end.
    /// </summary>
    /// <returns>False when the range must go through a write bio instead (out of bounds or
    /// unaligned, a discard of it pending, a bad block in it, no space for its holes, the device
    /// closing); then nothing was changed and <paramref name="write"/> is empty.</returns>
    bool BeginDirectWrite(long offset, int length, out DirectWrite write);

    /// <summary>
    /// Ends a direct write of which the first <paramref name="stored"/> bytes were stored
    /// (<paramref name="stored"/> &lt; the length: the producer failed, e.g. the client went away
    /// mid-payload; the write fails and what it stored is undefined data, as for a failed write
    /// bio). Must be called exactly once per successful <see cref="BeginDirectWrite"/>.
    /// </summary>
    /// <param name="write">The write begun; emptied.</param>
    /// <param name="stored">Bytes stored from the start of the range.</param>
    /// <param name="flags"><see cref="BioFlags.Fua"/> to make this write durable before it completes, as a FUA bio would.</param>
    /// <returns>The status a write bio of the range would have completed with.</returns>
    BlockStatus EndDirectWrite(ref DirectWrite write, long stored, BioFlags flags);
}

/// <summary>A direct write in progress (<see cref="IDirectWriteDevice"/>): where to store, and what the device needs to end it.</summary>
public unsafe struct DirectWrite
{
    internal DirectWrite(DaxRange range, byte* address, long offset, int length, long startTicks)
    {
        Range = range;
        Address = address;
        Offset = offset;
        Length = length;
        StartTicks = startTicks;
    }

    /// <summary>The CPU address of the write's first byte, valid until <see cref="IDirectWriteDevice.EndDirectWrite"/>.</summary>
    public byte* Address { get; }
    /// <summary>The device offset of the first byte.</summary>
    public long Offset { get; }
    /// <summary>Bytes to store.</summary>
    public int Length { get; }
    /// <summary>True while begun and not yet ended.</summary>
    public readonly bool IsActive => Address != null;
    /// <summary>The pinned pages under the write.</summary>
    internal DaxRange Range { get; }
    /// <summary>When it began (a Stopwatch timestamp), for the device's statistics.</summary>
    internal long StartTicks { get; }
}
