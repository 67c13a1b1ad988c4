using System.Text.Json.Nodes;
using PfnBlock.Block;

namespace PfnBlock.Management.Control.Commands;

/// <summary>
/// <c>devices</c>: every device the server serves (exported stacks and the devices under them):
/// its spec, description, size, limits and features, which exports use it, and for a mapped
/// device its table as <c>dmsetup table</c> prints it.
/// </summary>
public sealed class DevicesCommand : IRegisteredControlCommand
{
    /// <inheritdoc/>
    public static ControlCommand Command { get; } = new("devices", "",
        "the open devices with their specs, descriptions, limits, features and (for mapped devices) tables", Run);

    private static JsonArray Run(ControlRequest request)
    {
        request.RequireArgs(0, 0);
        var devices = new JsonArray();
        foreach (ServedDevice d in request.Server.ServedDevices())
        {
            IBlockDevice dev = d.Device;
            var entry = new JsonObject
            {
                ["device"] = d.Label,
                ["name"] = dev.Name,
                ["description"] = dev.Description,
                ["size_bytes"] = dev.CapacityBytes,
                ["logical_block_size"] = dev.Limits.LogicalBlockSize,
                ["physical_block_size"] = dev.Limits.PhysicalBlockSize,
                ["features"] = new JsonArray([.. Features(dev.Features).Select(f => (JsonNode?)f)]),
                ["exports"] = new JsonArray([.. d.Exports.Select(e => (JsonNode?)e)]),
                ["lower"] = new JsonArray([.. d.Lower.Select(l => (JsonNode?)l)]),
            };
            if (dev is MappedDevice mapped)
                entry["table"] = new JsonArray([.. mapped.Table.Select(line => (JsonNode?)line.ToString())]);
            devices.Add(entry);
        }
        return devices;
    }

    /// <summary>The features' names in lower case (<c>write_cache</c>, <c>dax</c>).</summary>
    private static IEnumerable<string> Features(DeviceFeatures features) =>
        Enum.GetValues<DeviceFeatures>()
            .Where(f => f != DeviceFeatures.None && System.Numerics.BitOperations.IsPow2((ulong)f) && (features & f) == f)
            .Select(f => System.Text.Json.JsonNamingPolicy.SnakeCaseLower.ConvertName(f.ToString()));
}
