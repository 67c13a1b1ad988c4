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
        Options = [new("name", ArgumentKind.Text, "the disk's name; equal specs share one disk, so two disks of one size need two names", "NAME")],
        Open = (spec, ctx) => Create(SizeParser.Parse(spec.Arguments[0]), ctx.AddressSpace, spec.Option("name") ?? "ram0"),
        Samples = [new("16 MiB", _ => "ram:16M")],
    };

    /// <summary>Creates a RAM disk of <paramref name="bytes"/> bytes (a multiple of 4096).</summary>
    public static RamDevice Create(long bytes, PhysicalAddressSpace? space = null, string name = "ram0")
    {
        if (bytes <= 0 || bytes % Pfn.PageSize != 0) throw new ArgumentException($"RAM disk size {bytes} must be a positive multiple of 4096");
        return new RamDevice(name, DramArena.Create(bytes, space, name));
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
    public override string Description => $"RAM disk {Name} ({SizeParser.Format(CapacityBytes)}, volatile)";

    /// <inheritdoc/>
    protected override void WriteData(byte* dst, byte* src, nuint length) => Buffer.MemoryCopy(src, dst, length, length);
    /// <inheritdoc/>
    protected override void ZeroData(byte* dst, nuint length) => new Span<byte>(dst, checked((int)length)).Clear();

    /// <inheritdoc/>
    protected override void Dispose(bool disposing) => _arena.Dispose();
}
