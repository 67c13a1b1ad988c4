using PfnBlock.Block;

namespace PfnBlock.Exports.Nbd;

/// <summary>
/// Checks one transmission request against its export and the negotiated options, before any
/// work: unknown commands and flags, ranges, alignment and read-only, with the error the spec
/// prescribes for each.
/// </summary>
public static class NbdRequestValidator
{
    /// <summary>Flags each command may carry (none for unknown commands).</summary>
    public static NbdCommandFlags AllowedFlags(NbdCommand command, bool structuredReplies) => command switch
    {
        NbdCommand.Read => structuredReplies ? NbdCommandFlags.DontFragment : NbdCommandFlags.None,
        NbdCommand.Write or NbdCommand.Trim => NbdCommandFlags.Fua,
        NbdCommand.WriteZeroes => NbdCommandFlags.Fua | NbdCommandFlags.NoHole | NbdCommandFlags.FastZero,
        NbdCommand.BlockStatus => NbdCommandFlags.ReqOne,
        _ => NbdCommandFlags.None,
    };

    /// <summary>The error to answer with, or <see cref="NbdError.None"/> when the request may be carried out.</summary>
    public static NbdError Validate(NbdExport export, NbdNegotiation negotiation, NbdCommand command, NbdCommandFlags flags, ulong offset, uint length)
    {
        if (command is > NbdCommand.BlockStatus or NbdCommand.Disc) return NbdError.Inval;
        if ((flags & ~AllowedFlags(command, negotiation.StructuredReplies)) != 0) return NbdError.Inval;

        DeviceFeatures features = export.Device.Features;
        bool writes = command is NbdCommand.Write or NbdCommand.Trim or NbdCommand.WriteZeroes;
        switch (command)
        {
            case NbdCommand.Flush:
                return offset == 0 && length == 0 ? NbdError.None : NbdError.Inval;
            case NbdCommand.BlockStatus:
                if (!negotiation.BaseAllocation) return NbdError.Inval;
                break;
            case NbdCommand.Trim when (features & DeviceFeatures.Discard) == 0:
            case NbdCommand.WriteZeroes when (features & DeviceFeatures.WriteZeroes) == 0:
                return NbdError.Inval;
        }
        if (writes && export.ReadOnly) return NbdError.Perm;
        if (length == 0) return NbdError.Inval;
        if (command is NbdCommand.Read or NbdCommand.Write && length > NbdProtocol.MaxPayload) return NbdError.Inval;

        ulong size = (ulong)export.Size;
        if (offset > size || length > size - offset)
            return command is NbdCommand.Write or NbdCommand.WriteZeroes ? NbdError.NoSpc : NbdError.Inval;
        // Clients that never asked for block sizes may send any alignment: the connection read-modify-writes.
        if (command != NbdCommand.BlockStatus && negotiation.BlockSizesRequested && !export.IsAligned(offset, length)) return NbdError.Inval;
        return NbdError.None;
    }

    /// <summary>The wire error for a failed bio.</summary>
    public static NbdError FromBlockStatus(BlockStatus status, NbdCommand command) => status switch
    {
        BlockStatus.Ok => NbdError.None,
        BlockStatus.ReadOnly => NbdError.Perm,
        BlockStatus.OutOfRange => command is NbdCommand.Write or NbdCommand.WriteZeroes ? NbdError.NoSpc : NbdError.Inval,
        BlockStatus.Invalid or BlockStatus.NotSupported => NbdError.Inval,
        _ => NbdError.Io,
    };
}
