using PfnBlock.Block;
using PfnBlock.Devices.Btt;
using PfnBlock.Devices.DirectFile;
using PfnBlock.Devices.Null;
using PfnBlock.Devices.Pmem;
using PfnBlock.Devices.Ram;
using PfnBlock.Memory;
using PfnBlock.Namespaces;

namespace PfnBlock.Devices;

/// <summary>The kinds of device a spec can name.</summary>
public enum DeviceKind
{
    /// <summary><c>pmem:PATH</c>: a namespace.</summary>
    Pmem,
    /// <summary><c>ram:SIZE</c>: a RAM disk.</summary>
    Ram,
    /// <summary><c>null:SIZE</c>: a null device.</summary>
    Null,
    /// <summary><c>file:PATH</c>: a file or block device through O_DIRECT (<c>file:PATH,buffered</c>: through the page cache).</summary>
    File,
}

/// <summary>
/// A device named on the command line: <c>pmem:PATH</c>, <c>ram:SIZE</c>, <c>null:SIZE</c>,
/// <c>file:PATH</c> or <c>file:PATH,buffered</c>. Parsing checks the syntax only; <see cref="Open"/>
/// checks the thing named.
/// </summary>
/// <param name="Kind">The kind of device.</param>
/// <param name="Path">The path (pmem, file), else null.</param>
/// <param name="Size">The size in bytes (ram, null), else 0.</param>
public sealed record DeviceSpec(DeviceKind Kind, string? Path, long Size)
{
    private const string BufferedSuffix = ",buffered";

    /// <summary>For <c>file:</c>: open without O_DIRECT, through the page cache (the <c>,buffered</c> suffix).</summary>
    public bool Buffered { get; init; }

    /// <summary>Parses a spec.</summary>
    /// <exception cref="FormatException">The text is not a valid spec; the message says why.</exception>
    public static DeviceSpec Parse(string text)
    {
        int colon = text.IndexOf(':');
        if (colon <= 0 || colon == text.Length - 1)
            throw new FormatException($"invalid device spec '{text}': expected pmem:PATH, ram:SIZE, null:SIZE or file:PATH");
        string kind = text[..colon];
        string arg = text[(colon + 1)..];
        return kind switch
        {
            "pmem" => new DeviceSpec(DeviceKind.Pmem, arg, 0),
            "file" => ParseFile(text, arg),
            "ram" => new DeviceSpec(DeviceKind.Ram, null, SizeParser.Parse(arg)),
            "null" => new DeviceSpec(DeviceKind.Null, null, SizeParser.Parse(arg)),
            _ => throw new FormatException($"unknown device kind '{kind}' in '{text}': expected pmem, ram, null or file"),
        };
    }

    private static DeviceSpec ParseFile(string text, string arg)
    {
        bool buffered = arg.EndsWith(BufferedSuffix, StringComparison.Ordinal);
        string path = buffered ? arg[..^BufferedSuffix.Length] : arg;
        if (path.Length == 0) throw new FormatException($"invalid device spec '{text}': expected file:PATH or file:PATH,buffered");
        return new DeviceSpec(DeviceKind.File, path, 0) { Buffered = buffered };
    }

    /// <summary>Opens the device named.</summary>
    /// <param name="space">The address space bio vectors are numbered in.</param>
    /// <param name="readOnly">Open files and namespaces read-only (O_RDONLY, shared claim, no stores to the file); RAM and null devices are unaffected.</param>
    public IBlockDevice Open(PhysicalAddressSpace? space = null, bool readOnly = false) => Kind switch
    {
        DeviceKind.Pmem => OpenPmem(Path!, space, readOnly),
        DeviceKind.Ram => RamDevice.Create(Size, space),
        DeviceKind.Null => new NullDevice(Size, space),
        DeviceKind.File => FileDevice.Open(Path!, new FileDeviceOptions { Buffered = Buffered, ReadOnly = readOnly }, space),
        _ => throw new ArgumentOutOfRangeException(nameof(Kind)),
    };

    /// <summary>
    /// A pmem path is a PfnBlock namespace — raw (<see cref="PmemDevice"/>) or sector
    /// (<see cref="BttDevice"/>) — or a PMDK pmemblk pool file (<see cref="BttDevice"/>).
    /// </summary>
    private static IBlockDevice OpenPmem(string path, PhysicalAddressSpace? space, bool readOnly)
    {
        if (BttDevice.IsPmdkPool(path)) return BttDevice.OpenPmemblk(path, space, readOnly: readOnly);
        PmemNamespace ns = PmemNamespace.Open(path, space, readOnly);
        try
        {
            return ns.Info.Mode == NamespaceMode.Sector ? BttDevice.OpenNamespace(ns) : new PmemDevice(ns);
        }
        catch
        {
            ns.Dispose();
            throw;
        }
    }

    /// <inheritdoc/>
    public override string ToString() => Kind switch
    {
        DeviceKind.Pmem => $"pmem:{Path}",
        DeviceKind.File => Buffered ? $"file:{Path}{BufferedSuffix}" : $"file:{Path}",
        DeviceKind.Ram => $"ram:{SizeParser.Format(Size)}",
        _ => $"null:{SizeParser.Format(Size)}",
    };
}

/// <summary>Sizes as people write them: 4096, 4k, 64M, 1G, 1T (binary units; an optional trailing B or iB).</summary>
public static class SizeParser
{
    /// <summary>Parses a size.</summary>
    /// <exception cref="FormatException">Not a size, or not positive.</exception>
    public static long Parse(string text)
    {
        string t = text.Trim();
        if (t.EndsWith("iB", StringComparison.OrdinalIgnoreCase)) t = t[..^2];
        else if (t.EndsWith('B') || t.EndsWith('b')) t = t[..^1];
        int shift = 0;
        if (t.Length > 0)
        {
            shift = char.ToLowerInvariant(t[^1]) switch { 'k' => 10, 'm' => 20, 'g' => 30, 't' => 40, _ => 0 };
            if (shift != 0) t = t[..^1];
        }
        if (!long.TryParse(t, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out long n) || n <= 0)
            throw new FormatException($"invalid size '{text}': expected a positive number with an optional k, M, G or T suffix");
        if (n > long.MaxValue >> shift) throw new FormatException($"size '{text}' is too large");
        return n << shift;
    }

    /// <summary>Formats a size with the largest exact binary unit.</summary>
    public static string Format(long bytes)
    {
        foreach ((int shift, string unit) in new[] { (40, "T"), (30, "G"), (20, "M"), (10, "k") })
            if (bytes >= 1L << shift && (bytes & ((1L << shift) - 1)) == 0) return $"{bytes >> shift}{unit}";
        return bytes.ToString(System.Globalization.CultureInfo.InvariantCulture);
    }
}
