using System.Text.Json.Nodes;

namespace PfnBlock.Management.Control.Commands;

/// <summary><c>help</c>: the commands this control socket answers, with their arguments and summaries.</summary>
public sealed class HelpCommand : IRegisteredControlCommand
{
    /// <inheritdoc/>
    public static ControlCommand Command { get; } = new("help", "", "the commands this socket answers", Run);

    private static JsonArray Run(ControlRequest request)
    {
        request.RequireArgs(0, 0);
        return [.. request.Commands.All.Select(c => (JsonNode?)new JsonObject
        {
            ["command"] = c.Name,
            ["usage"] = c.Usage.Length == 0 ? c.Name : $"{c.Name} {c.Usage}",
            ["summary"] = c.Summary,
        })];
    }
}
