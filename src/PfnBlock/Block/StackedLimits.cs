namespace PfnBlock.Block;

/// <summary>
/// Combines the limits and features of the devices under a stacked device, as the kernel's
/// <c>blk_stack_limits</c> does: the strictest alignment and the smallest transfer win, a
/// capability that changes correctness or where completions run (discard, zeroing, synchronous
/// completion, DAX, polling) is kept only when every path has it, and one that creates
/// obligations (a volatile write cache, read-only) is kept when any path has it.
/// </summary>
public static class StackedLimits
{
    /// <summary>Features kept only when every lower device has them.</summary>
    public const DeviceFeatures RequiredOfAll = DeviceFeatures.Discard | DeviceFeatures.DiscardZeroesData | DeviceFeatures.WriteZeroes
        | DeviceFeatures.Synchronous | DeviceFeatures.Dax | DeviceFeatures.Poll;

    /// <summary>
    /// Features kept when any lower device has them. An allocation map is worth asking when any
    /// path can answer: a target over a device without one answers "data", which is always safe.
    /// </summary>
    public const DeviceFeatures FromAny = DeviceFeatures.WriteCache | DeviceFeatures.ReadOnly | DeviceFeatures.DiscardsData
        | DeviceFeatures.AllocationMap;

    /// <summary>The limits a device stacked on <paramref name="lower"/> must respect.</summary>
    /// <exception cref="ArgumentException">No devices, or devices numbering their frames in different address spaces (a bio's pfns mean something in one space only).</exception>
    public static DeviceLimits Limits(IEnumerable<IBlockDevice> lower)
    {
        DeviceLimits? result = null;
        Memory.PhysicalAddressSpace? space = null;
        foreach (IBlockDevice d in lower)
        {
            space ??= d.AddressSpace;
            if (!ReferenceEquals(space, d.AddressSpace))
                throw new ArgumentException($"'{d.Name}' numbers its frames in another address space than the devices stacked with it");
            DeviceLimits l = d.Limits;
            result = result is not DeviceLimits r ? l : new DeviceLimits(
                Math.Max(r.LogicalBlockSize, l.LogicalBlockSize),
                Math.Max(r.PhysicalBlockSize, l.PhysicalBlockSize),
                Math.Min(r.MaxBytesPerBio, l.MaxBytesPerBio),
                Math.Max(r.DmaAlignment, l.DmaAlignment));
        }
        return result ?? throw new ArgumentException("a stacked device needs at least one lower device");
    }

    /// <summary>
    /// The features of a device stacked on <paramref name="lower"/>. FUA is kept only when every
    /// device with a write cache honours it natively (the block layer does not emulate it).
    /// </summary>
    public static DeviceFeatures Features(IEnumerable<IBlockDevice> lower)
    {
        DeviceFeatures all = ~DeviceFeatures.None, any = DeviceFeatures.None;
        bool fuaEverywhere = true;
        int count = 0;
        foreach (IBlockDevice d in lower)
        {
            DeviceFeatures f = d.Features;
            all &= f;
            any |= f;
            if ((f & DeviceFeatures.WriteCache) != 0 && (f & DeviceFeatures.Fua) == 0) fuaEverywhere = false;
            count++;
        }
        if (count == 0) return DeviceFeatures.None;
        DeviceFeatures result = (all & RequiredOfAll) | (any & FromAny);
        if ((result & DeviceFeatures.WriteCache) != 0 && fuaEverywhere) result |= DeviceFeatures.Fua;
        return result;
    }
}
