using System.CommandLine;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using PfnBlock.Management.Control;

namespace PfnBlock.Cli.Commands;

/// <summary>
/// <c>pfnblock ctl COMMAND [ARGS…] [--json]</c>: the generic client of a running server's control
/// socket. Sends one request and prints the result: as indented <c>key: value</c> lines for
/// people, or with <c>--json</c> as one line of JSON. An error reply is one error line and exit 1.
/// With <c>md … --watch</c> it then follows the arrays' sync until idle (<see cref="MdWatch"/>).
/// </summary>
internal static class CtlCommand
{
    public static Command Create()
    {
        var control = StatCommand.ControlOption();
        var json = new Option<bool>("--json") { Description = "Print the result as one line of JSON." };
        var command = new Argument<string>("COMMAND") { Description = "The command ('help' lists what the server answers: stats, devices, exports, …)." };
        var args = new Argument<string[]>("ARGS") { Description = "The command's arguments.", Arity = ArgumentArity.ZeroOrMore };
        var watch = new Option<bool>("--watch") { Description = "With md: after the command, follow the arrays' rebuild, resync or check with a live progress bar (speed, ETA) until idle." };
        var cmd = new Command("ctl", "Send a command to a running server's control socket and print its reply.") { command, args, control, json, watch };
        cmd.SetAction(r => Cli.Run(() =>
        {
            using ControlClient client = ControlClient.Connect(r.GetValue(control) ?? ServeCommand.DefaultControlSocket());
            string name = r.GetValue(command)!;
            string[] words = r.GetValue(args) ?? [];
            if (r.GetValue(watch) && name != "md") throw new ArgumentException("--watch follows md arrays only: pfnblock ctl md [NAME …] --watch");
            JsonNode? result;
            try
            {
                result = client.Result(name, words);
                if (r.GetValue(watch))
                {
                    MdWatch.Run(client, words.Length > 0 ? words[0] : null);
                    return 0;
                }
            }
            catch (ControlException e)
            {
                Console.Error.WriteLine($"pfnblock: error: {e.Message}");
                return Cli.ExitFailure;
            }
            if (r.GetValue(json)) Console.WriteLine(result?.ToJsonString() ?? "null");
            else Console.Write(Render(result));
            return 0;
        }));
        return cmd;
    }

    /// <summary>A JSON value as indented text: objects as <c>key: value</c> lines, arrays as <c>- </c> items.</summary>
    internal static string Render(JsonNode? node)
    {
        var sb = new StringBuilder();
        Write(sb, node, 0);
        return sb.ToString();
    }

    private static void Write(StringBuilder sb, JsonNode? node, int indent)
    {
        string pad = new(' ', indent);
        switch (node)
        {
            case JsonObject o:
                foreach ((string key, JsonNode? value) in o)
                {
                    if (IsScalar(value)) sb.Append(pad).Append(key).Append(": ").AppendLine(Scalar(value));
                    else if (value is JsonArray { Count: 0 } or JsonObject { Count: 0 }) sb.Append(pad).Append(key).AppendLine(": (none)");
                    else
                    {
                        sb.Append(pad).Append(key).AppendLine(":");
                        Write(sb, value, indent + 2);
                    }
                }
                break;
            case JsonArray a:
                foreach (JsonNode? item in a)
                {
                    if (IsScalar(item)) { sb.Append(pad).Append("- ").AppendLine(Scalar(item)); continue; }
                    // The item's first line follows the dash; the rest line up under it.
                    string body = Render(item);
                    string[] lines = body.TrimEnd('\n').Split('\n');
                    for (int i = 0; i < lines.Length; i++) sb.Append(pad).Append(i == 0 ? "- " : "  ").AppendLine(lines[i]);
                }
                break;
            default:
                sb.AppendLine(Scalar(node));
                break;
        }
    }

    private static bool IsScalar(JsonNode? node) => node is null or JsonValue;

    private static string Scalar(JsonNode? node) =>
        node is null ? "null" : node.GetValueKind() == JsonValueKind.String ? node.GetValue<string>() : node.ToJsonString();
}
