using System.Diagnostics.CodeAnalysis;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace PfnBlock.Management.Control;

/// <summary>
/// The control socket's wire format: one JSON object per line each way (newline-delimited JSON).
/// A request is <c>{"command": "NAME", "args": ["…"], "id": …}</c> (<c>args</c> and <c>id</c>
/// optional; <c>id</c>, any JSON value, is echoed so a client may pipeline). A reply is
/// <c>{"ok": true, "result": …}</c> or <c>{"ok": false, "error": "why"}</c>. A line longer than
/// <see cref="MaxLineBytes"/> is answered with an error and skipped to its end.
/// </summary>
public static class ControlProtocol
{
    /// <summary>The longest request line read (its newline excluded).</summary>
    public const int MaxLineBytes = 64 * 1024;

    /// <summary>A parsed request.</summary>
    /// <param name="Command">The command's name.</param>
    /// <param name="Args">Its arguments.</param>
    /// <param name="Id">The id to echo, or null.</param>
    public sealed record Request(string Command, IReadOnlyList<string> Args, JsonNode? Id);

    /// <summary>Parses a request line.</summary>
    /// <param name="line">The line, without its newline.</param>
    /// <param name="request">The request, when the line is one.</param>
    /// <param name="id">The line's id, whenever it is a JSON object that has one (errors echo it too).</param>
    /// <param name="error">Why the line is not a request.</param>
    public static bool TryParseRequest(ReadOnlySpan<byte> line, [NotNullWhen(true)] out Request? request, out JsonNode? id, [NotNullWhen(false)] out string? error)
    {
        request = null;
        id = null;
        JsonNode? node;
        try { node = JsonNode.Parse(line); }
        catch (JsonException e)
        {
            error = $"malformed JSON: {e.Message}";
            return false;
        }
        if (node is not JsonObject o)
        {
            error = "a request must be a JSON object: {\"command\": \"NAME\", \"args\": [...]}";
            return false;
        }
        id = o["id"]?.DeepClone();
        if (o["command"] is not JsonValue c || c.GetValueKind() != JsonValueKind.String || c.GetValue<string>() is not { Length: > 0 } command)
        {
            error = "the request has no \"command\" string";
            return false;
        }
        var args = new List<string>();
        if (o["args"] is { } argsNode)
        {
            if (argsNode is not JsonArray array)
            {
                error = "\"args\" must be an array of strings";
                return false;
            }
            foreach (JsonNode? a in array)
            {
                // Numbers and booleans are taken as their text, so `"args": [3]` and `["3"]` mean the same.
                JsonValueKind kind = a is JsonValue ? a.GetValueKind() : JsonValueKind.Undefined;
                if (kind is not (JsonValueKind.String or JsonValueKind.Number or JsonValueKind.True or JsonValueKind.False))
                {
                    error = "\"args\" must hold strings";
                    return false;
                }
                args.Add(kind == JsonValueKind.String ? a!.GetValue<string>() : a!.ToJsonString());
            }
        }
        request = new Request(command, args, id);
        error = null;
        return true;
    }

    /// <summary>A request line (with its newline).</summary>
    public static byte[] EncodeRequest(string command, IEnumerable<string> args, JsonNode? id = null)
    {
        var request = new JsonObject { ["command"] = command, ["args"] = new JsonArray([.. args.Select(a => (JsonNode?)JsonValue.Create(a))]) };
        if (id is not null) request["id"] = id.DeepClone();
        return Line(request);
    }

    /// <summary>A success reply line.</summary>
    public static byte[] Success(JsonNode? result, JsonNode? id) =>
        Line(WithId(new JsonObject { ["ok"] = true, ["result"] = result }, id));

    /// <summary>An error reply line.</summary>
    public static byte[] Failure(string error, JsonNode? id) =>
        Line(WithId(new JsonObject { ["ok"] = false, ["error"] = error }, id));

    private static JsonObject WithId(JsonObject reply, JsonNode? id)
    {
        if (id is not null) reply["id"] = id.DeepClone();
        return reply;
    }

    private static byte[] Line(JsonNode node) => Encoding.UTF8.GetBytes(node.ToJsonString() + "\n");
}
