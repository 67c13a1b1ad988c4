using PfnBlock.Common;
using PfnBlock.Block;
using PfnBlock.Memory;

namespace PfnBlock.Devices;

/// <summary>
/// A kind of device a spec can name (<c>pmem</c>, <c>ram</c>, <c>file</c>, <c>table</c>, …): its
/// arguments with their help, how to open one, and small instances for the conformance suite.
/// A device class registers its kind by implementing <see cref="IRegisteredDevice"/>.
/// </summary>
public sealed class DeviceType
{
    /// <summary>The kind as written before the colon.</summary>
    public required string Name { get; init; }
    /// <summary>One line saying what the device is.</summary>
    public required string Summary { get; init; }
    /// <summary>Positional arguments, in order.</summary>
    public IReadOnlyList<SpecArgument> Arguments { get; init; } = [];
    /// <summary>Options and flags after the positional arguments.</summary>
    public IReadOnlyList<SpecOption> Options { get; init; } = [];
    /// <summary>Opens the device a parsed spec names.</summary>
    public required Func<DeviceSpec, DeviceOpenContext, IBlockDevice> Open { get; init; }
    /// <summary>
    /// Small instances of this kind: every one is run through the block-device conformance suite,
    /// so a new kind is tested by registering.
    /// </summary>
    public IReadOnlyList<DeviceSample> Samples { get; init; } = [];

    /// <summary>The usage line: <c>KIND:ARG[,option][,key=VALUE]</c>.</summary>
    public string Usage => Name + ":" + string.Join(',', Arguments.Select(a => a.Name))
        + string.Concat(Options.Select(o => o.Value is null ? $"[,{o.Name}]" : $"[,{o.Name}={o.ValueName}]"));
}

/// <summary>A positional argument of a device kind.</summary>
/// <param name="Name">Its name in usage lines (<c>PATH</c>, <c>SIZE</c>).</param>
/// <param name="Kind">How it is checked and canonicalised.</param>
/// <param name="Help">What it means.</param>
public sealed record SpecArgument(string Name, ArgumentKind Kind, string Help);

/// <summary>An option of a device kind: a flag (<paramref name="Value"/> null) or <c>NAME=VALUE</c>.</summary>
/// <param name="Name">The option's name.</param>
/// <param name="Value">The kind of its value, or null for a flag.</param>
/// <param name="Help">What it does.</param>
/// <param name="ValueName">The value's name in usage lines.</param>
public sealed record SpecOption(string Name, ArgumentKind? Value, string Help, string ValueName = "VALUE");

/// <summary>How a spec argument is checked when parsed and written in canonical form.</summary>
public enum ArgumentKind
{
    /// <summary>Free text, kept as written.</summary>
    Text,
    /// <summary>A filesystem path; canonical form is the full path.</summary>
    Path,
    /// <summary>A size such as 512M (binary units); canonical form uses the largest exact unit.</summary>
    Size,
    /// <summary>A non-negative integer.</summary>
    Number,
}

/// <summary>Checking and canonicalising of <see cref="ArgumentKind"/> values.</summary>
public static class ArgumentKinds
{
    /// <summary>Checks <paramref name="value"/> for argument <paramref name="name"/> of spec <paramref name="spec"/>; returns it unchanged.</summary>
    /// <exception cref="FormatException">The value is not of its kind.</exception>
    public static string Check(this ArgumentKind kind, string value, string name, string spec)
    {
        switch (kind)
        {
            case ArgumentKind.Size:
                try { _ = SizeParser.Parse(value); }
                catch (FormatException e) { throw new FormatException($"{name} in '{spec}': {e.Message}", e); }
                break;
            case ArgumentKind.Number:
                if (!long.TryParse(value, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out _))
                    throw new FormatException($"{name} in '{spec}': '{value}' is not a non-negative integer");
                break;
        }
        return value;
    }

    /// <summary>The canonical form of a checked value.</summary>
    public static string Canonical(this ArgumentKind kind, string value) => kind switch
    {
        ArgumentKind.Path => System.IO.Path.GetFullPath(value),
        ArgumentKind.Size => SizeParser.Format(SizeParser.Parse(value)),
        ArgumentKind.Number => long.Parse(value, System.Globalization.CultureInfo.InvariantCulture).ToString(System.Globalization.CultureInfo.InvariantCulture),
        _ => value,
    };
}

/// <summary>What a device kind's <see cref="DeviceType.Open"/> gets besides the spec.</summary>
public sealed class DeviceOpenContext
{
    private readonly DeviceSet _set;
    private readonly List<DeviceHandle> _acquired = [];
    private readonly IReadOnlyList<string> _opening;

    internal DeviceOpenContext(DeviceSet set, string key, IReadOnlyList<string> opening)
    {
        _set = set;
        Key = key;
        _opening = opening;
    }

    /// <summary>The address space frames are numbered in (the set's).</summary>
    public PhysicalAddressSpace? AddressSpace => _set.AddressSpace;
    /// <summary>Open for reading only: writes must be refused and nothing may be written on open.</summary>
    public bool ReadOnly => _set.ReadOnly;
    /// <summary>The canonical spec being opened (a name for the device where its kind has none).</summary>
    public string Key { get; }

    /// <summary>
    /// Opens a lower device by spec (nested, or by <c>@NAME</c>), shared with every other user of
    /// the same spec in the set. The handle is released with the set if the open fails; on
    /// success the opened device owns it (see <see cref="TakeAcquired"/>).
    /// </summary>
    public DeviceHandle Acquire(string spec)
    {
        DeviceHandle h = _set.Acquire(DeviceSpec.Parse(spec), _opening);
        _acquired.Add(h);
        return h;
    }

    /// <summary>Hands the lower devices acquired so far to the device being opened, which releases them on dispose.</summary>
    public IDisposable TakeAcquired()
    {
        DeviceHandle[] handles = [.. _acquired];
        _acquired.Clear();
        foreach (DeviceHandle h in handles) h.OwnedByDevice = true;
        return new HandleGroup(handles);
    }

    /// <summary>Releases what was acquired (the open failed).</summary>
    internal void ReleaseAcquired()
    {
        for (int i = _acquired.Count - 1; i >= 0; i--) _acquired[i].Dispose();
        _acquired.Clear();
    }

    private sealed class HandleGroup(DeviceHandle[] handles) : IDisposable
    {
        public void Dispose()
        {
            for (int i = handles.Length - 1; i >= 0; i--) handles[i].Dispose();
        }
    }
}

/// <summary>A small instance of a device kind for the conformance suite.</summary>
/// <param name="Name">What the sample shows ("512-byte sectors").</param>
/// <param name="Create">Makes the files the instance needs in the context's directories and returns the spec that opens it.</param>
public sealed record DeviceSample(string Name, Func<SampleContext, string> Create);

/// <summary>Where samples put the files they need, and helpers to make them.</summary>
/// <param name="Directory">A private directory on tmpfs (deleted after the test).</param>
/// <param name="DiskDirectory">A private directory on a disk filesystem that takes O_DIRECT (deleted after the test).</param>
public sealed record SampleContext(string Directory, string DiskDirectory)
{
    private int _next;

    /// <summary>A fresh path in <see cref="Directory"/>.</summary>
    public string NewPath(string hint) => System.IO.Path.Combine(Directory, $"{hint}-{Interlocked.Increment(ref _next)}");
}

/// <summary>A device class that registers its kind: the registry finds it by this interface.</summary>
public interface IRegisteredDevice
{
    /// <summary>The kind this class opens.</summary>
    static abstract DeviceType Type { get; }
}
