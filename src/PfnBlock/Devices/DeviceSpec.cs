using System.Text;
using PfnBlock.Block;
using PfnBlock.Memory;

namespace PfnBlock.Devices;

/// <summary>
/// A device named in text: <c>KIND:ARG[,ARG…][,OPTION…]</c>, or <c>@NAME</c> for a device defined
/// under a name (<see cref="DeviceSet.Define(string, string)"/>). Parsing checks the syntax and the arguments
/// against the kind's registration (<see cref="DeviceTypes"/>); opening checks the thing named.
/// </summary>
/// <remarks>
/// <para><b>Grammar.</b> After the colon come comma-separated items. The first items are the
/// kind's positional arguments (a path, a size), taken as they stand, so a path may contain
/// <c>=</c>; the items after them are options, either <c>KEY=VALUE</c> or a bare flag
/// (<c>file:/var/tmp/disk.img,buffered</c>). An item that contains a comma or a bracket, and a
/// nested spec, is written inside square brackets, which nest:
/// <c>file:[/data/a,b.img]</c>. Nothing else is special.</para>
/// <para><b>Identity.</b> <see cref="Key"/> is the spec in canonical form (full paths, sizes in
/// their largest exact unit, options sorted): within one <see cref="DeviceSet"/> equal keys name
/// one open device.</para>
/// </remarks>
public sealed class DeviceSpec
{
    private readonly string[] _arguments;
    private readonly SortedDictionary<string, string?> _options;

    private DeviceSpec(DeviceType? type, string? reference, string[] arguments, SortedDictionary<string, string?> options, string text)
    {
        Type = type;
        Reference = reference;
        _arguments = arguments;
        _options = options;
        Text = text;
    }

    /// <summary>The kind of device, or null for an <c>@NAME</c> reference.</summary>
    public DeviceType? Type { get; }
    /// <summary>For <c>@NAME</c>: the name referred to; else null.</summary>
    public string? Reference { get; }
    /// <summary>The text as given.</summary>
    public string Text { get; }
    /// <summary>The positional arguments, as many as the kind declares.</summary>
    public IReadOnlyList<string> Arguments => _arguments;
    /// <summary>The options given: value, or null for a flag.</summary>
    public IReadOnlyDictionary<string, string?> Options => _options;

    /// <summary>True when flag (or option) <paramref name="name"/> was given.</summary>
    public bool Has(string name) => _options.ContainsKey(name);

    /// <summary>The value of option <paramref name="name"/>, or <paramref name="fallback"/> when it was not given.</summary>
    public string? Option(string name, string? fallback = null) => _options.TryGetValue(name, out string? v) ? v : fallback;

    /// <summary>The canonical form: equal keys name the same device.</summary>
    public string Key => Reference is not null ? "@" + Reference : Type!.Name + ":" + string.Join(',', CanonicalItems());

    /// <summary>Parses a spec against the registered kinds.</summary>
    /// <exception cref="FormatException">The text is not a valid spec; the message says why and shows the kind's usage.</exception>
    public static DeviceSpec Parse(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        if (text.StartsWith('@'))
        {
            string name = text[1..];
            if (!DeviceSet.IsValidName(name)) throw new FormatException($"invalid device reference '{text}': expected @NAME (letters, digits, '-', '_', '.')");
            return new DeviceSpec(null, name, [], [], text);
        }
        int colon = text.IndexOf(':');
        if (colon <= 0 || colon == text.Length - 1)
            throw new FormatException($"invalid device spec '{text}': expected KIND:ARGS or @NAME (kinds: {string.Join(", ", DeviceTypes.All.Select(t => t.Name))})");
        string kind = text[..colon];
        DeviceType type = DeviceTypes.Find(kind)
            ?? throw new FormatException($"unknown device kind '{kind}' in '{text}': expected one of {string.Join(", ", DeviceTypes.All.Select(t => t.Name))}");
        List<string> items = SplitItems(text, colon + 1);
        int positional = type.Arguments.Count;
        if (items.Count < positional)
            throw new FormatException($"invalid device spec '{text}': {kind} takes {positional} argument{(positional == 1 ? "" : "s")} ({type.Usage})");
        var arguments = new string[positional];
        for (int i = 0; i < positional; i++)
        {
            SpecArgument a = type.Arguments[i];
            if (items[i].Length == 0) throw new FormatException($"invalid device spec '{text}': empty {a.Name} ({type.Usage})");
            arguments[i] = a.Kind.Check(items[i], a.Name, text);
        }
        var options = new SortedDictionary<string, string?>(StringComparer.Ordinal);
        for (int i = positional; i < items.Count; i++)
        {
            string item = items[i];
            int eq = item.IndexOf('=');
            string name = eq < 0 ? item : item[..eq];
            string? value = eq < 0 ? null : item[(eq + 1)..];
            SpecOption option = type.Options.FirstOrDefault(o => o.Name == name)
                ?? throw new FormatException($"unknown option '{name}' in '{text}' ({type.Usage})");
            if (option.Value is null && value is not null) throw new FormatException($"option '{name}' of {kind} is a flag and takes no value, in '{text}'");
            if (option.Value is ArgumentKind k)
            {
                if (value is null || value.Length == 0) throw new FormatException($"option '{name}' of {kind} needs a value ({name}={option.ValueName}), in '{text}'");
                value = k.Check(value, name, text);
            }
            if (!options.TryAdd(name, value)) throw new FormatException($"option '{name}' is given twice in '{text}'");
        }
        return new DeviceSpec(type, null, arguments, options, text);
    }

    /// <summary>Splits the items after the colon at top-level commas; brackets group, and the outer pair is dropped.</summary>
    private static List<string> SplitItems(string text, int start)
    {
        var items = new List<string>();
        var item = new StringBuilder();
        int depth = 0;
        bool bracketed = false;
        for (int i = start; i < text.Length; i++)
        {
            char c = text[i];
            if (c == '[')
            {
                if (depth == 0)
                {
                    if (item.Length > 0) throw new FormatException($"invalid device spec '{text}': '[' must open an item (at offset {i})");
                    bracketed = true;
                    depth++;
                    continue;
                }
                depth++;
            }
            else if (c == ']')
            {
                if (depth == 0) throw new FormatException($"invalid device spec '{text}': unbalanced ']' at offset {i}");
                if (--depth == 0)
                {
                    if (i + 1 < text.Length && text[i + 1] != ',') throw new FormatException($"invalid device spec '{text}': ']' must close an item (at offset {i})");
                    continue;
                }
            }
            else if (c == ',' && depth == 0)
            {
                items.Add(item.ToString());
                item.Clear();
                bracketed = false;
                continue;
            }
            item.Append(c);
        }
        if (depth != 0) throw new FormatException($"invalid device spec '{text}': unbalanced '['");
        if (item.Length > 0 || bracketed || items.Count > 0) items.Add(item.ToString());
        return items;
    }

    private IEnumerable<string> CanonicalItems()
    {
        for (int i = 0; i < _arguments.Length; i++) yield return Quote(Type!.Arguments[i].Kind.Canonical(_arguments[i]));
        foreach ((string name, string? value) in _options)
        {
            SpecOption o = Type!.Options.First(x => x.Name == name);
            yield return value is null ? name : name + "=" + Quote(o.Value!.Value.Canonical(value));
        }
    }

    /// <summary>
    /// Opens the device on its own, shared with nobody (a command or test that needs one device);
    /// disposing it releases everything it stacks on. Use a <see cref="DeviceSet"/> to share devices.
    /// </summary>
    public IBlockDevice Open(PhysicalAddressSpace? addressSpace = null, bool readOnly = false) =>
        new DeviceSet(addressSpace, readOnly).Acquire(this).Device;

    /// <summary>Brackets an item that the grammar would otherwise split or strip.</summary>
    public static string Quote(string item) => item.AsSpan().IndexOfAny(",[]") >= 0 || item.Length == 0 ? "[" + item + "]" : item;

    /// <summary>The spec in canonical form (<see cref="Key"/>).</summary>
    public override string ToString() => Key;
}
