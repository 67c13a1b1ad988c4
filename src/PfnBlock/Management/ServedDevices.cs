using PfnBlock.Block;
using PfnBlock.Exports.Nbd;

namespace PfnBlock.Management;

/// <summary>A device a server serves, directly as an export or under one.</summary>
/// <param name="Label">What metrics and the control socket call it: the canonical spec it was opened by (unique in the server), else its name.</param>
/// <param name="Device">The device.</param>
/// <param name="Exports">The exports whose device it is (empty for a device below a stack).</param>
/// <param name="Lower">The labels of the devices its table maps onto (empty unless it is a mapped device).</param>
public sealed record ServedDevice(string Label, IBlockDevice Device, IReadOnlyList<string> Exports, IReadOnlyList<string> Lower);

/// <summary>
/// Finds every device a server serves: each export's device and, for a stacked (mapped) device,
/// every device under each line of its table, recursively; a device shared by several stacks
/// or lines is listed once, stacks before what they stack on.
/// </summary>
public static class ServedDevices
{
    /// <summary>The devices <paramref name="server"/> serves, in export order, each device before the devices under it.</summary>
    public static IReadOnlyList<ServedDevice> Walk(ServerContext server)
    {
        ArgumentNullException.ThrowIfNull(server);
        var specs = new Dictionary<IBlockDevice, string>(ReferenceEqualityComparer.Instance);
        foreach ((string spec, IBlockDevice device) in server.Devices.OpenDevices) specs.TryAdd(device, spec);

        var order = new List<IBlockDevice>();
        var labels = new Dictionary<IBlockDevice, string>(ReferenceEqualityComparer.Instance);
        var taken = new HashSet<string>(StringComparer.Ordinal);
        void Visit(IBlockDevice device)
        {
            if (labels.ContainsKey(device)) return;
            string label = specs.GetValueOrDefault(device) ?? device.Name;
            // Devices made outside the set (tests, embedders) may share a name; labels must not.
            for (int n = 2; !taken.Add(label); n++) label = $"{specs.GetValueOrDefault(device) ?? device.Name}#{n}";
            labels.Add(device, label);
            order.Add(device);
            if (device is MappedDevice mapped)
                foreach (TableEntry line in mapped.Table)
                    foreach (IBlockDevice lower in line.Target.Devices) Visit(lower);
        }
        foreach (NbdExport export in server.Exports.All) Visit(export.Device);

        return [.. order.Select(d => new ServedDevice(labels[d], d,
            [.. server.Exports.All.Where(e => ReferenceEquals(e.Device, d)).Select(e => e.Name)],
            d is MappedDevice m ? [.. m.Table.SelectMany(l => l.Target.Devices).Select(x => labels[x]).Distinct()] : []))];
    }
}
