using PfnBlock.Common;
using PfnBlock.Devices;
using PfnBlock.Exports.Nbd;
using PfnBlock.Namespaces;
using PfnBlock.Targets.Table;
using YamlDotNet.Core;
using YamlDotNet.RepresentationModel;

namespace PfnBlock.Cli.Config;

/// <summary>
/// A whole stack in one file (<c>pfnblock serve --config stack.yaml</c>): the namespaces to create
/// if missing, named devices (specs or inline device-mapper tables), the exports and where to
/// listen. Read with YamlDotNet and <b>validated as a whole before anything is opened</b>: unknown
/// keys, bad sizes, specs that do not parse, table lines that do not parse or do not tile their
/// device, names used but not defined, names that refer to each other in a circle, namespaces
/// named but neither present nor declared, duplicate exports and bad listen addresses are all
/// reported with their line, and nothing is created or opened while any remains.
/// </summary>
/// <example><code>
/// namespaces:                  # created when missing, never overwritten
///   - { path: /dev/shm/a, size: 1G }
///   - { path: /dev/shm/b, size: 1G }
/// devices:                     # named devices, referred to as @NAME
///   a: pmem:/dev/shm/a
///   b: pmem:/dev/shm/b
///   both:
///     table:                   # dmsetup table lines
///       - 0 2093048 linear @a 0
///       - 2093048 2093048 linear @b 0
/// exports:
///   - { name: big, device: "@both" }
///   - { name: a-only, device: "@a", read-only: true }
/// listen: [ "tcp:127.0.0.1:10809" ]
/// </code></example>
internal sealed class StackConfig
{
    /// <summary>A namespace the stack needs, created when missing.</summary>
    public sealed record NamespaceDecl(string Path, long Size, NamespaceMode Mode, uint SectorSize, int Line);

    /// <summary>A named device: a spec, or inline table lines.</summary>
    public sealed record DeviceDecl(string Name, string? Spec, IReadOnlyList<string>? Table, int Line);

    /// <summary>An export of a device (a spec or <c>@NAME</c>).</summary>
    public sealed record ExportDecl(string Name, string Device, bool ReadOnly, string? Description, int Line);

    private StackConfig(string source) => Source = source;

    /// <summary>The file the stack came from.</summary>
    public string Source { get; }
    /// <summary>Namespaces to create when missing.</summary>
    public List<NamespaceDecl> Namespaces { get; } = [];
    /// <summary>Named devices, in file order.</summary>
    public List<DeviceDecl> Devices { get; } = [];
    /// <summary>Exports, the first being the default.</summary>
    public List<ExportDecl> Exports { get; } = [];
    /// <summary>Listening addresses (empty: the default).</summary>
    public List<NbdListenAddress> Listen { get; } = [];

    /// <summary>Reads and validates <paramref name="path"/>.</summary>
    /// <exception cref="FormatException">The file is not a valid stack; the message names the line.</exception>
    /// <exception cref="IOException">The file cannot be read.</exception>
    public static StackConfig Load(string path)
    {
        string text;
        try { text = File.ReadAllText(path); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new IOException($"{path}: cannot read the stack configuration: {e.Message}", e);
        }
        return Parse(text, path);
    }

    /// <summary>Parses and validates a stack configuration's text.</summary>
    /// <exception cref="FormatException">It is not a valid stack; the message names the line.</exception>
    public static StackConfig Parse(string text, string source)
    {
        var config = new StackConfig(source);
        var yaml = new YamlStream();
        try { yaml.Load(new StringReader(text)); }
        catch (YamlException e) { throw new FormatException($"{source} line {e.Start.Line}: {e.Message}", e); }
        if (yaml.Documents.Count == 0) throw new FormatException($"{source}: the file is empty");
        if (yaml.Documents[0].RootNode is not YamlMappingNode root) throw config.Error(yaml.Documents[0].RootNode, "expected a mapping with namespaces, devices, exports and listen");
        foreach ((YamlNode key, YamlNode value) in root.Children)
        {
            switch (config.Scalar(key))
            {
                case "namespaces": config.ReadNamespaces(value); break;
                case "devices": config.ReadDevices(value); break;
                case "exports": config.ReadExports(value); break;
                case "listen":
                    foreach (YamlNode item in config.Sequence(value))
                    {
                        try { config.Listen.Add(NbdListenAddress.Parse(config.Scalar(item))); }
                        catch (FormatException e) { throw config.Error(item, e.Message); }
                    }
                    break;
                default: throw config.Error(key, $"unknown key '{config.Scalar(key)}' (expected namespaces, devices, exports, listen)");
            }
        }
        config.Validate(root);
        return config;
    }

    private void ReadNamespaces(YamlNode node)
    {
        foreach (YamlNode item in Sequence(node))
        {
            Dictionary<string, YamlNode> m = Fields(item, "path", "size", "mode", "sector-size");
            string path = Path.GetFullPath(Required(m, item, "path"));
            long size;
            try { size = SizeParser.Parse(Required(m, item, "size")); }
            catch (FormatException e) { throw Error(m["size"], e.Message); }
            NamespaceMode mode = Optional(m, "mode") switch
            {
                null or "raw" => NamespaceMode.Raw,
                "sector" => NamespaceMode.Sector,
                string other => throw Error(m["mode"], $"mode '{other}': expected raw or sector"),
            };
            uint sectorSize = Optional(m, "sector-size") switch
            {
                null or "512" => 512,
                "4096" or "4k" or "4K" => 4096,
                string other => throw Error(m["sector-size"], $"sector-size '{other}': expected 512 or 4096"),
            };
            if (Namespaces.Any(n => n.Path == path)) throw Error(item, $"namespace {path} is declared twice");
            Namespaces.Add(new NamespaceDecl(path, size, mode, sectorSize, Line(item)));
        }
    }

    private void ReadDevices(YamlNode node)
    {
        if (node is not YamlMappingNode map) throw Error(node, "devices: expected a mapping of NAME: SPEC or NAME: { table: [lines] }");
        foreach ((YamlNode key, YamlNode value) in map.Children)
        {
            string name = Scalar(key);
            if (!DeviceSet.IsValidName(name)) throw Error(key, $"invalid device name '{name}': use letters, digits, '-', '_' and '.'");
            if (Devices.Any(d => d.Name == name)) throw Error(key, $"device '{name}' is defined twice");
            if (value is YamlScalarNode)
            {
                Devices.Add(new DeviceDecl(name, CheckSpec(value, Scalar(value)), null, Line(key)));
                continue;
            }
            Dictionary<string, YamlNode> m = Fields(value, "spec", "table");
            if (m.Count != 1) throw Error(value, $"device '{name}': give exactly one of spec or table");
            if (m.TryGetValue("spec", out YamlNode? spec)) Devices.Add(new DeviceDecl(name, CheckSpec(spec, Scalar(spec)), null, Line(key)));
            else Devices.Add(new DeviceDecl(name, null, ReadTable(name, m["table"]), Line(key)));
        }
    }

    /// <summary>Checks the syntax of every line and that the lines tile the device from sector 0 without gaps or overlaps.</summary>
    private List<string> ReadTable(string name, YamlNode node)
    {
        var lines = new List<string>();
        long next = 0;
        foreach (YamlNode item in Sequence(node))
        {
            string line = Scalar(item);
            try
            {
                if (TableDevice.ParseLine(line, $"device '{name}'") is not var (begin, length, _, args)) continue;
                if (begin != next)
                    throw new FormatException(begin > next ? $"device '{name}': gap before sector {begin} (the previous line ends at {next})"
                        : $"device '{name}': a line starts at sector {begin}, overlapping the previous one (which ends at {next})");
                next = begin + length;
                // Arguments that name devices are checked as specs here; the target checks the rest when it opens.
                foreach (string arg in args)
                    if (arg.StartsWith('@') || arg.Contains(':')) _ = DeviceSpec.Parse(arg);
            }
            catch (FormatException e) { throw Error(item, e.Message); }
            lines.Add(line);
        }
        if (lines.Count == 0) throw Error(node, $"device '{name}': the table has no lines");
        return lines;
    }

    private void ReadExports(YamlNode node)
    {
        foreach (YamlNode item in Sequence(node))
        {
            Dictionary<string, YamlNode> m = Fields(item, "name", "device", "read-only", "description");
            string name = Required(m, item, "name");
            if (Exports.Any(e => e.Name == name)) throw Error(item, $"export '{name}' is defined twice");
            bool readOnly = Optional(m, "read-only") switch
            {
                null or "false" => false,
                "true" => true,
                string other => throw Error(m["read-only"], $"read-only '{other}': expected true or false"),
            };
            string device = CheckSpec(m.GetValueOrDefault("device") ?? item, Required(m, item, "device"));
            Exports.Add(new ExportDecl(name, device, readOnly, Optional(m, "description"), Line(item)));
        }
    }

    private string CheckSpec(YamlNode node, string spec)
    {
        try { _ = DeviceSpec.Parse(spec); }
        catch (FormatException e) { throw Error(node, e.Message); }
        return spec;
    }

    /// <summary>The checks that need the whole file: references, circles, namespaces present or declared, at least one export.</summary>
    private void Validate(YamlNode root)
    {
        if (Exports.Count == 0) throw Error(root, "no exports: add at least one under 'exports'");
        var defined = Devices.ToDictionary(d => d.Name);
        var uses = new Dictionary<string, List<string>>();
        foreach (DeviceDecl d in Devices) uses[d.Name] = [.. SpecsOf(d).SelectMany(References)];
        foreach (DeviceDecl d in Devices)
            foreach (string r in uses[d.Name])
                if (!defined.ContainsKey(r)) throw new FormatException($"{Source} line {d.Line}: device '{d.Name}' uses '@{r}', which is not defined under devices");
        foreach (ExportDecl e in Exports)
            foreach (string r in References(e.Device))
                if (!defined.ContainsKey(r)) throw new FormatException($"{Source} line {e.Line}: export '{e.Name}' uses '@{r}', which is not defined under devices");

        // A name must not reach itself through other names (depth-first, the path printed).
        var state = new Dictionary<string, int>();
        void Visit(string name, List<string> path)
        {
            if (state.GetValueOrDefault(name) == 2) return;
            if (state.GetValueOrDefault(name) == 1)
                throw new FormatException($"{Source} line {defined[name].Line}: devices refer to each other in a circle: @{string.Join(" → @", path.SkipWhile(p => p != name))} → @{name}");
            state[name] = 1;
            path.Add(name);
            foreach (string r in uses[name]) Visit(r, path);
            path.RemoveAt(path.Count - 1);
            state[name] = 2;
        }
        foreach (DeviceDecl d in Devices) Visit(d.Name, []);

        // Every namespace a spec names must exist already or be declared here.
        var declared = Namespaces.Select(n => n.Path).ToHashSet();
        foreach ((string spec, int line) in Devices.SelectMany(d => SpecsOf(d).Select(s => (s, d.Line))).Concat(Exports.Select(e => (e.Device, e.Line))))
        {
            DeviceSpec parsed = DeviceSpec.Parse(spec);
            if (parsed.Type?.Name is "pmem" or "sector")
            {
                string p = Path.GetFullPath(parsed.Arguments[0]);
                if (!declared.Contains(p) && !File.Exists(p))
                    throw new FormatException($"{Source} line {line}: {spec} names {p}, which neither exists nor is declared under namespaces");
            }
        }
    }

    /// <summary>The specs a device declaration names: its own, or every device argument of its table lines.</summary>
    private static IEnumerable<string> SpecsOf(DeviceDecl d)
    {
        if (d.Spec is not null) { yield return d.Spec; yield break; }
        foreach (string line in d.Table!)
            if (TableDevice.ParseLine(line, "") is var (_, _, _, args))
                foreach (string a in args)
                    if (a.StartsWith('@') || a.Contains(':')) yield return a;
    }

    /// <summary>The names a spec refers to, directly or in nested bracketed items.</summary>
    private static IEnumerable<string> References(string spec)
    {
        DeviceSpec parsed = DeviceSpec.Parse(spec);
        if (parsed.Reference is string name) { yield return name; yield break; }
        foreach (string item in parsed.Arguments.Concat(parsed.Options.Values.OfType<string>()))
            if (item.StartsWith('@') || item.Contains(':'))
            {
                IEnumerable<string> nested;
                try { nested = References(item).ToList(); }
                catch (FormatException) { continue; } // a path with a colon, not a nested spec
                foreach (string r in nested) yield return r;
            }
    }

    /// <summary>Creates the declared namespaces that are missing; an existing one must match its declaration.</summary>
    /// <exception cref="IOException">An existing path holds something else or a namespace of another size or mode.</exception>
    public void CreateMissingNamespaces(Action<string> report)
    {
        foreach (NamespaceDecl n in Namespaces)
        {
            if (File.Exists(n.Path))
            {
                NamespaceProbeResult probe = NamespaceProbe.Probe(n.Path);
                if (probe.Info is not NamespaceInfoBlock info)
                    throw new IOException($"{Source} line {n.Line}: {n.Path} exists but is not a PfnBlock namespace ({probe.Message}); it is left as it is");
                if (info.Mode != n.Mode || new FileInfo(n.Path).Length != n.Size)
                    throw new IOException($"{Source} line {n.Line}: {n.Path} exists as a {info.Mode.ToString().ToLowerInvariant()} namespace of {new FileInfo(n.Path).Length} bytes, not the declared {n.Mode.ToString().ToLowerInvariant()} {n.Size}; it is left as it is");
                continue;
            }
            PmemNamespace.Create(n.Path, new NamespaceCreateOptions { Size = n.Size, Mode = n.Mode, SectorSize = n.SectorSize }).Dispose();
            report($"created {n.Path}: {SizeParser.Format(n.Size)} {n.Mode.ToString().ToLowerInvariant()} namespace");
        }
    }

    /// <summary>Defines every named device in <paramref name="set"/> (nothing is opened until an export or a table names it).</summary>
    public void Define(DeviceSet set)
    {
        foreach (DeviceDecl d in Devices)
        {
            if (d.Spec is not null) set.Define(d.Name, d.Spec);
            else
            {
                string name = d.Name, source = $"{Source} device '{d.Name}'";
                IReadOnlyList<string> lines = d.Table!;
                set.Define(name, ctx => TableDevice.Open(source, lines, name, ctx));
            }
        }
    }

    // ---- YAML helpers --------------------------------------------------------------------

    private FormatException Error(YamlNode node, string message) => new($"{Source} line {Line(node)}: {message}");

    private static int Line(YamlNode node) => (int)node.Start.Line;

    private string Scalar(YamlNode node) => node is YamlScalarNode { Value: string v } ? v : throw Error(node, "expected a single value here");

    private IEnumerable<YamlNode> Sequence(YamlNode node) => node as YamlSequenceNode ?? throw Error(node, "expected a list here");

    private Dictionary<string, YamlNode> Fields(YamlNode node, params string[] allowed)
    {
        if (node is not YamlMappingNode map) throw Error(node, $"expected a mapping with {string.Join(", ", allowed)}");
        var fields = new Dictionary<string, YamlNode>();
        foreach ((YamlNode key, YamlNode value) in map.Children)
        {
            string k = Scalar(key);
            if (!allowed.Contains(k)) throw Error(key, $"unknown key '{k}' (expected {string.Join(", ", allowed)})");
            fields[k] = value;
        }
        return fields;
    }

    private string Required(Dictionary<string, YamlNode> fields, YamlNode at, string key) =>
        fields.TryGetValue(key, out YamlNode? v) ? Scalar(v) : throw Error(at, $"'{key}' is missing");

    private string? Optional(Dictionary<string, YamlNode> fields, string key) => fields.TryGetValue(key, out YamlNode? v) ? Scalar(v) : null;
}
