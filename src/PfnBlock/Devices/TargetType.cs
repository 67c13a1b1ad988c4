using System.Globalization;
using PfnBlock.Block;
using PfnBlock.Memory;

namespace PfnBlock.Devices;

/// <summary>
/// A kind of table target (the kernel's <c>struct target_type</c>): its name and version as
/// <c>dmsetup targets</c> lists them, its table syntax, and its constructor. A target class
/// registers its type by implementing <see cref="IRegisteredTarget"/>.
/// </summary>
public sealed class TargetType
{
    /// <summary>The name a table line uses (<c>linear</c>).</summary>
    public required string Name { get; init; }
    /// <summary>The version of its table syntax and behaviour (dm's <c>version</c> triple).</summary>
    public Version Version { get; init; } = new(1, 0, 0);
    /// <summary>The arguments after the name, e.g. <c>DEVICE OFFSET</c>; empty for none.</summary>
    public required string Arguments { get; init; }
    /// <summary>One line saying what the target does.</summary>
    public required string Summary { get; init; }
    /// <summary>The constructor (dm's <c>ctr</c>): reads its arguments from the context and reports bad ones with <see cref="TargetContext.Fail"/>.</summary>
    public required Func<TargetContext, Target> Create { get; init; }
    /// <summary>
    /// Small instances for the conformance suite, each run as a one-line table over lower devices
    /// the suite provides: a new target is tested by registering.
    /// </summary>
    public IReadOnlyList<TargetSample> Samples { get; init; } = [];

    /// <summary>The usage line: <c>linear DEVICE OFFSET</c> (<c>zero</c> for a target without arguments).</summary>
    public string Usage => Arguments.Length == 0 ? Name : Name + " " + Arguments;
}

/// <summary>A target class that registers its type: the registry finds it by this interface.</summary>
public interface IRegisteredTarget
{
    /// <summary>The type this class implements.</summary>
    static abstract TargetType TargetType { get; }
}

/// <summary>A small instance of a target for the conformance suite.</summary>
/// <param name="Name">What the sample shows.</param>
/// <param name="Line">The table line's arguments after the target name, and the sectors it maps, for the lower devices given.</param>
public sealed record TargetSample(string Name, Func<TargetSampleContext, TargetLine> Line);

/// <summary>The part of a table line a target sample makes.</summary>
/// <param name="Arguments">The arguments after the target name.</param>
/// <param name="Sectors">The length of the line in 512-byte sectors.</param>
public sealed record TargetLine(string Arguments, long Sectors);

/// <summary>What a target sample may stack on.</summary>
/// <param name="Lower">Specs of distinct lower devices, each <paramref name="LowerSectors"/> sectors long.</param>
/// <param name="LowerSectors">The size of each lower device in sectors.</param>
public sealed record TargetSampleContext(IReadOnlyList<string> Lower, long LowerSectors)
{
    /// <summary>Makes a fresh pmem namespace of the lower devices' size and returns its spec (for a target that needs one whatever it stacks on, e.g. a write cache's cache device).</summary>
    public Func<string> NewPmem { get; init; } = () => throw new NotSupportedException("this sample context makes no pmem namespaces");
}

/// <summary>A lower device a target opened, with the spec its table line named it by (printed back in the target's arguments).</summary>
/// <param name="Device">The device.</param>
/// <param name="Spec">The spec as the table wrote it.</param>
public sealed record LowerDevice(IBlockDevice Device, string Spec);

/// <summary>A target's constructor arguments were refused (dm's <c>ti-&gt;error</c>); the table reports the line.</summary>
public sealed class TargetException(string message) : Exception(message);

/// <summary>
/// What a target constructor gets: its table line's arguments, its range, and a way to open the
/// lower devices the arguments name (shared within the set, released with the table).
/// </summary>
public sealed class TargetContext
{
    private readonly DeviceOpenContext _open;

    internal TargetContext(DeviceOpenContext open, long begin, long length, string[] args)
    {
        _open = open;
        Begin = begin;
        Length = length;
        Args = args;
    }

    /// <summary>The first sector of the line's range on the mapped device.</summary>
    public long Begin { get; }
    /// <summary>Sectors the line maps.</summary>
    public long Length { get; }
    /// <summary>The arguments after the target name, split at whitespace.</summary>
    public IReadOnlyList<string> Args { get; }
    /// <summary>The address space the table's bios number their frames in (for a target that touches data without a lower device, e.g. zero).</summary>
    public PhysicalAddressSpace AddressSpace => _open.AddressSpace ?? PhysicalAddressSpace.Shared;

    /// <summary>Refuses the line with <paramref name="message"/> (dm's <c>ti->error = …; return -EINVAL</c>).</summary>
    public static TargetException Fail(string message) => new(message);

    /// <summary>Checks the argument count (dm: "Invalid argument count").</summary>
    public void RequireArgs(int count)
    {
        if (Args.Count != count) throw Fail($"Invalid argument count (expected {count}, got {Args.Count})");
    }

    /// <summary>Opens the lower device argument <paramref name="index"/> names (a spec or @NAME).</summary>
    public LowerDevice Device(int index)
    {
        try { return new LowerDevice(_open.Acquire(Args[index]).Device, Args[index]); }
        catch (Exception e) when (e is FormatException or ArgumentException)
        {
            throw Fail($"Device lookup failed: {Args[index]}: {e.Message}");
        }
    }

    /// <summary>Argument <paramref name="index"/> as a sector number; <paramref name="error"/> names it when it is not one.</summary>
    public long Sector(int index, string error)
    {
        if (!long.TryParse(Args[index], NumberStyles.None, CultureInfo.InvariantCulture, out long v)) throw Fail($"{error}: '{Args[index]}'");
        return v;
    }

    /// <summary>
    /// Argument <paramref name="index"/> as a whole number from 0 to <paramref name="max"/> (dm's
    /// <c>dm_read_arg</c>); <paramref name="error"/> names it when it is not one.
    /// </summary>
    public long Number(int index, string error, long max = long.MaxValue)
    {
        if (!long.TryParse(Args[index], NumberStyles.None, CultureInfo.InvariantCulture, out long v) || v > max)
            throw Fail($"{error}: '{Args[index]}'{(max < long.MaxValue ? $" (a number from 0 to {max})" : "")}");
        return v;
    }

    /// <summary>Checks that <paramref name="sectors"/> sectors from <paramref name="start"/> fit on <paramref name="device"/> (dm's <c>device_area_is_invalid</c>).</summary>
    public static void RequireArea(IBlockDevice device, long start, long sectors)
    {
        if (start > device.CapacitySectors || sectors > device.CapacitySectors - start)
            throw Fail($"Device too small: {device.Name} has {device.CapacitySectors} sectors, the line needs {start} + {sectors}");
        long lbs = device.Limits.LogicalBlockSize >> Bio.SectorShift;
        if (start % lbs != 0) throw Fail($"Start sector {start} is not aligned to the {device.Limits.LogicalBlockSize}-byte blocks of {device.Name}");
    }
}
