using PfnBlock.Exports.Nbd;

namespace PfnBlock.Management;

/// <summary>NBD commands as metrics labels and control replies spell them: lower case, words joined by '_'.</summary>
public static class NbdCommandNames
{
    /// <summary>Every command a request may carry, by number (READ 0 … BLOCK_STATUS 7).</summary>
    public static IReadOnlyList<NbdCommand> All { get; } = Enum.GetValues<NbdCommand>();

    /// <summary>The name of <paramref name="command"/> (<c>write_zeroes</c>, <c>block_status</c>).</summary>
    public static string Of(NbdCommand command) => command switch
    {
        NbdCommand.Disc => "disconnect",
        NbdCommand.WriteZeroes => "write_zeroes",
        NbdCommand.BlockStatus => "block_status",
        _ => command.ToString().ToLowerInvariant(),
    };
}
