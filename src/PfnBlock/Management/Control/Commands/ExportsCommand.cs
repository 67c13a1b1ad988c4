using System.Text.Json.Nodes;
using PfnBlock.Exports.Nbd;

namespace PfnBlock.Management.Control.Commands;

/// <summary><c>exports</c>: every export with the device it serves, its size, block size and mode, and the addresses the server listens on.</summary>
public sealed class ExportsCommand : IRegisteredControlCommand
{
    /// <inheritdoc/>
    public static ControlCommand Command { get; } = new("exports", "",
        "the NBD exports: name, device, size, block size, read-only, description; and where the server listens", Run);

    private static JsonObject Run(ControlRequest request)
    {
        request.RequireArgs(0, 0);
        ServerContext server = request.Server;
        IReadOnlyList<ServedDevice> devices = server.ServedDevices();
        var exports = new JsonArray();
        foreach (NbdExport e in server.Exports.All)
        {
            exports.Add(new JsonObject
            {
                ["name"] = e.Name,
                ["device"] = devices.FirstOrDefault(d => ReferenceEquals(d.Device, e.Device))?.Label ?? e.Device.Name,
                ["description"] = e.Description,
                ["size_bytes"] = e.Size,
                ["min_block_size"] = e.MinBlockSize,
                ["read_only"] = e.ReadOnly,
                ["default"] = ReferenceEquals(e, server.Exports.All[0]),
            });
        }
        return new JsonObject
        {
            ["exports"] = exports,
            ["listening"] = new JsonArray([.. server.Listening.Select(a => (JsonNode?)a)]),
        };
    }
}
