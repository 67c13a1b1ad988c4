using PfnBlock.Block;
using PfnBlock.Devices;

namespace PfnBlock.Targets.Error;

/// <summary>
/// Fails every I/O with <see cref="BlockStatus.IoError"/> (the kernel's <c>error</c> target,
/// dm-target.c's <c>io_err</c>): a hole in a table, or a stand-in for a dead leg. Table:
/// <c>START LENGTH error</c>. No lower device, so a flush of the table never reaches it
/// (<see cref="Target.FlushBios"/> is 0) and it restricts no feature of the lines beside it.
/// </summary>
/// <remarks>
/// It has no conformance samples: the suite checks that data written reads back, which a target
/// that fails everything cannot do by design. <c>ErrorTargetTests</c> checks its own contract.
/// </remarks>
public sealed class ErrorTarget : Target, IRegisteredTarget
{
    private ErrorTarget() { }

    /// <inheritdoc/>
    public static TargetType TargetType { get; } = new()
    {
        Name = "error",
        Version = new(1, 7, 0),
        Arguments = "",
        Summary = "every read, write, flush, discard and write-zeroes of the line fails with an I/O error",
        Create = ctx =>
        {
            ctx.RequireArgs(0);
            return new ErrorTarget();
        },
    };

    /// <inheritdoc/>
    public override MapResult Map(Bio bio, out IBlockDevice? lower)
    {
        lower = null;
        bio.Complete(BlockStatus.IoError); // dm's DM_MAPIO_KILL
        return MapResult.Submitted;
    }

    /// <inheritdoc/>
    public override string Arguments => "";
}
