using BenchmarkDotNet.Attributes;
using PfnBlock.Block;
using PfnBlock.Devices.Pmem;
using PfnBlock.Memory;
using PfnBlock.Namespaces;

namespace PfnBlock.Microbench;

/// <summary>
/// What a pin costs with each descriptor map of the thread: pin and unpin one frame of a 1 GiB
/// namespace (a sparse file on /dev/shm), the frame stepping through the namespace so the
/// descriptor is rarely in cache (as a random I/O's would not be); and the DAX path a zero-copy
/// NBD read takes (pin, translate, unpin) without the copy.
/// </summary>
[MemoryDiagnoser]
public unsafe class DescriptorBenchmarks
{
    private const long DataBytes = 1L << 30;
    private string _path = null!;
    private PmemDevice _dev = null!;
    private IFramePins _pins = null!;
    private long _frames;
    private long _next;

    /// <summary>The map under test.</summary>
    [Params(DescriptorMapKind.None, DescriptorMapKind.Dense, DescriptorMapKind.Device, DescriptorMapKind.Huge, DescriptorMapKind.Temporary, DescriptorMapKind.OnDemand)]
    public DescriptorMapKind Map { get; set; }

    [GlobalSetup]
    public void Setup()
    {
        _path = Path.Combine("/dev/shm", $"pfnblock-microbench-{Environment.ProcessId}-{Map}");
        long size = DataBytes + (Map == DescriptorMapKind.Device ? 20L << 20 : 0) + (4 << 20);
        _dev = new PmemDevice(PmemNamespace.Create(_path, new NamespaceCreateOptions { Size = size, Align = 4096, MapKind = Map, Force = true }, new PhysicalAddressSpace()));
        _pins = _dev.Namespace.Region.Pins;
        _frames = _dev.Namespace.Region.FrameCount;
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _dev.Dispose();
        File.Delete(_path);
    }

    // A large odd stride visits every frame before repeating, in an order caches cannot follow.
    private long NextFrame() => _next = (_next + 7919 * 67) % _frames;

    /// <summary>Pin and unpin one frame through the region's pin store.</summary>
    [Benchmark]
    public bool PinUnpin()
    {
        long f = NextFrame();
        bool pinned = _pins.TryPin(f, 1, out long token);
        _pins.Unpin(f, 1, token);
        return pinned;
    }

    /// <summary>DirectAccess of one page (pin and translate) and its unpin: the pin work of a zero-copy 4 KiB NBD read.</summary>
    [Benchmark]
    public nint DaxPinTranslateUnpin()
    {
        _dev.DirectAccess(NextFrame(), 1, out DaxRange range);
        nint a = (nint)range.Address;
        range.Unpin();
        return a;
    }
}
