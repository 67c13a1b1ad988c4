using System.Text.Json.Nodes;

namespace PfnBlock.Management.Control;

/// <summary>
/// A command of the control socket: its name, how it is called, and its handler. A handler gets
/// the request's arguments and the server (<see cref="ControlRequest"/>) and returns the reply's
/// <c>result</c> as JSON; it reports a failure it expects (a bad argument, a member that is not
/// there) by throwing <see cref="ControlException"/>, whose message becomes the reply's
/// <c>error</c>. Handlers run on the connection's thread, one request at a time per connection,
/// possibly concurrently with other connections' requests.
/// </summary>
/// <param name="Name">The word a request names it by (<c>stats</c>).</param>
/// <param name="Usage">Its arguments as help shows them (<c>MEMBER</c>), empty for none.</param>
/// <param name="Summary">One line on what it does.</param>
/// <param name="Run">The handler.</param>
public sealed record ControlCommand(string Name, string Usage, string Summary, Func<ControlRequest, JsonNode?> Run);

/// <summary>One request as a handler sees it.</summary>
/// <param name="Args">The request's arguments, as strings.</param>
/// <param name="Server">The server: its devices, exports and NBD server.</param>
/// <param name="Commands">Every command the control socket knows (for <c>help</c>).</param>
public sealed record ControlRequest(IReadOnlyList<string> Args, ServerContext Server, ControlCommandRegistry Commands)
{
    /// <summary>Fails the request unless it has between <paramref name="min"/> and <paramref name="max"/> arguments.</summary>
    /// <exception cref="ControlException">It has not.</exception>
    public void RequireArgs(int min, int max)
    {
        if (Args.Count < min || Args.Count > max)
            throw new ControlException(min == max ? $"expected {min} argument{(min == 1 ? "" : "s")}, got {Args.Count}"
                : $"expected {min} to {max} arguments, got {Args.Count}");
    }
}

/// <summary>A command failed in a way its caller should hear about; the message is the reply's <c>error</c>.</summary>
public sealed class ControlException : Exception
{
    /// <summary>Creates the failure.</summary>
    public ControlException(string message) : base(message) { }

    /// <summary>Creates the failure with its cause.</summary>
    public ControlException(string message, Exception inner) : base(message, inner) { }

    /// <summary>Creates an empty failure (for serializers).</summary>
    public ControlException() { }
}

/// <summary>
/// A class that contributes a command to the control socket. Every non-abstract class of the
/// library implementing it is found by <see cref="ControlCommandRegistry.CreateDefault"/>, so a
/// new command is one file (<c>Management/Control/Commands/</c>) and needs no edit elsewhere.
/// </summary>
public interface IRegisteredControlCommand
{
    /// <summary>The command.</summary>
    static abstract ControlCommand Command { get; }
}
