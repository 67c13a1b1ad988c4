using System.Reflection;
using System.Text;

namespace PfnBlock.Devices;

/// <summary>
/// The registry of device kinds and table targets. Every class in the library that implements
/// <see cref="IRegisteredDevice"/> or <see cref="IRegisteredTarget"/> is found here on first use:
/// a new device or target is one file that registers itself and needs no edit elsewhere. Help
/// texts are generated from the registrations, so they cannot drift from the parser.
/// </summary>
public static class DeviceTypes
{
    private static readonly Lock s_lock = new();
    private static Dictionary<string, DeviceType>? s_devices;
    private static Dictionary<string, TargetType>? s_targets;
    private static readonly HashSet<Assembly> s_scanned = [];

    /// <summary>Every device kind, by name.</summary>
    public static IReadOnlyList<DeviceType> All { get { EnsureLoaded(); lock (s_lock) return [.. s_devices!.Values.OrderBy(t => t.Name, StringComparer.Ordinal)]; } }

    /// <summary>Every target type, by name.</summary>
    public static IReadOnlyList<TargetType> Targets { get { EnsureLoaded(); lock (s_lock) return [.. s_targets!.Values.OrderBy(t => t.Name, StringComparer.Ordinal)]; } }

    /// <summary>The device kind called <paramref name="name"/>, or null.</summary>
    public static DeviceType? Find(string name)
    {
        EnsureLoaded();
        lock (s_lock) return s_devices!.GetValueOrDefault(name);
    }

    /// <summary>The target type called <paramref name="name"/>, or null.</summary>
    public static TargetType? FindTarget(string name)
    {
        EnsureLoaded();
        lock (s_lock) return s_targets!.GetValueOrDefault(name);
    }

    /// <summary>Registers the kinds and targets of another assembly (plug-ins, test doubles).</summary>
    public static void RegisterAssembly(Assembly assembly)
    {
        EnsureLoaded();
        Scan(assembly);
    }

    /// <summary>Registers one device kind.</summary>
    /// <exception cref="ArgumentException">The name is taken by another registration.</exception>
    public static void Register(DeviceType type)
    {
        EnsureLoaded();
        Add(type);
    }

    /// <summary>Registers one target type.</summary>
    /// <exception cref="ArgumentException">The name is taken by another registration.</exception>
    public static void Register(TargetType type)
    {
        EnsureLoaded();
        Add(type);
    }

    private static void EnsureLoaded()
    {
        if (Volatile.Read(ref s_devices) is not null) return;
        lock (s_lock)
        {
            if (s_devices is not null) return;
            s_targets = new Dictionary<string, TargetType>(StringComparer.Ordinal);
            s_devices = new Dictionary<string, DeviceType>(StringComparer.Ordinal);
        }
        Scan(typeof(DeviceTypes).Assembly);
    }

    private static void Scan(Assembly assembly)
    {
        lock (s_lock) if (!s_scanned.Add(assembly)) return;
        foreach (Type t in assembly.GetTypes())
        {
            if (t.IsAbstract || t.IsInterface) continue;
            if (typeof(IRegisteredDevice).IsAssignableFrom(t)) Add((DeviceType)Registration(t, nameof(IRegisteredDevice.Type)));
            if (typeof(IRegisteredTarget).IsAssignableFrom(t)) Add((TargetType)Registration(t, nameof(IRegisteredTarget.TargetType)));
        }
    }

    private static object Registration(Type t, string property) =>
        t.GetProperty(property, BindingFlags.Public | BindingFlags.Static)?.GetValue(null)
        ?? throw new InvalidOperationException($"{t.FullName} registers nothing: its static {property} is missing or null");

    private static void Add(DeviceType type)
    {
        lock (s_lock)
            if (!s_devices!.TryAdd(type.Name, type) && !ReferenceEquals(s_devices[type.Name], type))
                throw new ArgumentException($"device kind '{type.Name}' is registered twice");
    }

    private static void Add(TargetType type)
    {
        lock (s_lock)
            if (!s_targets!.TryAdd(type.Name, type) && !ReferenceEquals(s_targets[type.Name], type))
                throw new ArgumentException($"target '{type.Name}' is registered twice");
    }

    /// <summary>A short list of the spec kinds for option help: <c>pmem:PATH, ram:SIZE, …</c>.</summary>
    public static string SpecSummary => string.Join(", ", All.Select(t => t.Name + ":" + string.Join(',', t.Arguments.Select(a => a.Name))));

    /// <summary>The full reference of device specs and table targets, as <c>pfnblock devices</c> prints it.</summary>
    public static string HelpText()
    {
        var sb = new StringBuilder();
        sb.AppendLine("Device specs: KIND:ARG[,OPTION...] or @NAME. Items are separated by commas; write an item that");
        sb.AppendLine("contains a comma or a bracket, or a nested spec, inside [ ] (brackets nest). Within one process,");
        sb.AppendLine("equal specs name one open device, shared (as dm_get_device shares a device across tables).");
        sb.AppendLine();
        foreach (DeviceType t in All)
        {
            sb.Append("  ").AppendLine(t.Usage);
            sb.Append("      ").AppendLine(t.Summary);
            foreach (SpecArgument a in t.Arguments) sb.Append("      ").Append(a.Name).Append(": ").AppendLine(a.Help);
            foreach (SpecOption o in t.Options)
                sb.Append("      ").Append(o.Value is null ? o.Name : $"{o.Name}={o.ValueName}").Append(": ").AppendLine(o.Help);
        }
        sb.AppendLine();
        sb.AppendLine("Table targets (lines of a table:FILE, as dmsetup create --table takes them: START LENGTH TARGET ARGS,");
        sb.AppendLine("in 512-byte sectors; lower devices are named by spec where dmsetup takes a /dev path):");
        foreach (TargetType t in Targets)
        {
            sb.Append("  ").Append(t.Usage).Append("   (v").Append(t.Version).AppendLine(")");
            sb.Append("      ").AppendLine(t.Summary);
        }
        return sb.ToString();
    }
}
