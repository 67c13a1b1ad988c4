using PfnBlock.Block;
using PfnBlock.Common;
using PfnBlock.Memory;

namespace PfnBlock.Devices.Ram;

/// <summary>
/// A RAM disk (the kernel's <c>brd</c>): its sectors are a DRAM arena registered in the address
/// space. Volatile, so it advertises no write cache: flushes complete at once.
/// </summary>
public sealed unsafe class RamDevice : MemoryDevice, IRegisteredDevice
{
    private readonly DramArena _arena;

    private RamDevice(string name, DramArena arena) : base(name, arena.BaseAddress, arena.Size, arena.AddressSpace) => _arena = arena;

    /// <inheritdoc/>
    public static DeviceType Type { get; } = new()
    {
        Name = "ram",
        Summary = "a RAM disk (volatile: its data is gone when the process exits)",
        Arguments = [new("SIZE", ArgumentKind.Size, "capacity, a multiple of 4k (e.g. 512M)")],
        Options =
        [
            new("name", ArgumentKind.Text, "the disk's name; equal specs share one disk, so two disks of one size need two names", "NAME"),
            new("map", ArgumentKind.Text, "page-descriptor map of the disk's DRAM arena: none (default), dense, huge, temporary or on-demand ('device' needs a namespace to hold it)", "KIND"),
        ],
        Open = (spec, ctx) => Create(SizeParser.Parse(spec.Arguments[0]), ctx.AddressSpace, spec.Option("name") ?? "ram0", MapOf(spec.Option("map"))),
        Samples = [new("16 MiB", _ => "ram:16M"), new("16 MiB, dense descriptor map", _ => "ram:16M,name=ramdense,map=dense")],
    };

    /// <summary>Creates a RAM disk of <paramref name="bytes"/> bytes (a multiple of 4096) whose arena keeps <paramref name="map"/> descriptors.</summary>
    /// <exception cref="ArgumentException">A bad size, or <see cref="DescriptorMapKind.Device"/> (DRAM has no device to hold it).</exception>
    public static RamDevice Create(long bytes, PhysicalAddressSpace? space = null, string name = "ram0", DescriptorMapKind map = DescriptorMapKind.None)
    {
        if (bytes <= 0 || bytes % Pfn.PageSize != 0) throw new ArgumentException($"RAM disk size {bytes} must be a positive multiple of 4096");
        return new RamDevice(name, DramArena.Create(bytes, space, name, map));
    }

    private static DescriptorMapKind MapOf(string? name)
    {
        if (name is null) return DescriptorMapKind.None;
        DescriptorMapKind kind = DescriptorMaps.Parse(name);
        // The memmap-on-device position needs a device: a RAM disk is DRAM all the way down.
        if (kind == DescriptorMapKind.Device)
            throw new ArgumentException("map=device keeps the descriptors in a reserve of the device, and a RAM disk has none: use a pmem namespace (namespace create --map device) or another map");
        return kind;
    }

    /// <summary>The arena that holds the sectors.</summary>
    public DramArena Arena => _arena;

    /// <inheritdoc/>
    public override DeviceLimits Limits { get; } = DeviceLimits.Memory();

    /// <inheritdoc/>
    public override DeviceFeatures Features =>
        DeviceFeatures.Discard | DeviceFeatures.DiscardZeroesData | DeviceFeatures.WriteZeroes | DeviceFeatures.Synchronous
        | DeviceFeatures.AllocationMap; // zero pages found by reading them (MemoryDevice)

    /// <inheritdoc/>
    public override string Description => $"RAM disk {Name} ({SizeParser.Format(CapacityBytes)}, volatile, {DescriptorMaps.Name(_arena.Descriptors.Kind)} descriptor map)";

    /// <inheritdoc/>
    protected override void WriteData(byte* dst, byte* src, nuint length) => Buffer.MemoryCopy(src, dst, length, length);
    /// <inheritdoc/>
    protected override void ZeroData(byte* dst, nuint length) => new Span<byte>(dst, checked((int)length)).Clear();

    /// <inheritdoc/>
    protected override void Dispose(bool disposing) => _arena.Dispose();
}
