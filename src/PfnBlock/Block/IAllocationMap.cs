namespace PfnBlock.Block;

/// <summary>What a run of sectors holds, as far as the device can tell (the NBD <c>base:allocation</c> states).</summary>
public enum AllocationState : byte
{
    /// <summary>May hold data: the safe answer whenever the device cannot tell (also for sectors whose reads fail).</summary>
    Data,
    /// <summary>Reads return zeros, and the device holds storage for the sectors (zeros written, a BTT zero flag, all-zero pages found by reading memory).</summary>
    Zero,
    /// <summary>Reads return zeros, and nothing is allocated for the sectors (a hole punched in a file, a BTT block never written); a write may need new storage.</summary>
    Hole,
}

/// <summary>
/// The allocation map of a device that knows which of its sectors are unallocated or zero (the
/// kernel's <c>SEEK_DATA</c>/<c>SEEK_HOLE</c> for files, the NBD <c>base:allocation</c> context),
/// advertised by <see cref="DeviceFeatures.AllocationMap"/>. Exports turn the answers into NBD
/// block-status extents and read replies that skip zeros.
/// </summary>
/// <remarks>
/// <para>The caller passes a range inside the device (a first sector ≥ 0, at least one
/// sector, ending at or before the capacity); implementations may assume it. The answer describes
/// the run starting at the first sector: its state and its length, at least one sector and at
/// most the range asked about. A run may stop short of where the state really changes (callers loop
/// and merge equal neighbours), and runs start and end on logical-block boundaries except where the
/// query itself did not.</para>
/// <para>Answers are a snapshot: with I/O in flight to a range the answer may describe the state
/// before or after it, as a read would. <see cref="AllocationState.Data"/> is always a correct
/// answer; <see cref="AllocationState.Zero"/> and <see cref="AllocationState.Hole"/> promise that
/// reads of the run return zeros, so a device never gives them for sectors whose reads fail (media
/// errors). A query does not block on I/O and allocates nothing.</para>
/// </remarks>
public interface IAllocationMap
{
    /// <summary>The state of the sectors from <paramref name="sector"/> and how many of them (of the next <paramref name="sectors"/>) share it.</summary>
    /// <param name="sector">First sector (512-byte units).</param>
    /// <param name="sectors">How far to look, in sectors (≥ 1).</param>
    /// <param name="run">Sectors from <paramref name="sector"/> in the returned state: 1 ≤ run ≤ <paramref name="sectors"/>.</param>
    AllocationState QueryAllocation(long sector, long sectors, out long run);
}
