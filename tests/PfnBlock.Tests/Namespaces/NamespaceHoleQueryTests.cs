using PfnBlock.Block;
using PfnBlock.Devices.Pmem;
using PfnBlock.Namespaces;

namespace PfnBlock.Tests.Namespaces;

/// <summary>
/// The allocation map of a fresh (fallocated, never written) tmpfs namespace: its pages are holes
/// until written, a page stored through the mapping behind the block layer's back is found as
/// data by asking the kernel, and a hole run is looked for at most 2 MiB at a time.
/// </summary>
public sealed class NamespaceHoleQueryTests : IDisposable
{
    private const long PageSectors = 4096 >> Bio.SectorShift;
    private readonly Scratch _scratch = new();
    public void Dispose() => _scratch.Dispose();

    [Fact]
    public unsafe void HolesOfAFreshNamespaceEndAtDataStoredThroughTheMapping()
    {
        using var dev = new PmemDevice(PmemNamespace.Create(_scratch.NewPath("holes"), new NamespaceCreateOptions { Size = 8 << 20 }));
        Assert.True(dev.Namespace.TracksHoles);
        long all = dev.CapacitySectors;
        // Not through a bio: only the kernel knows this page exists now.
        dev.Namespace.DataAddress[100 * 4096 + 7] = 0x5a;

        Assert.Equal((AllocationState.Hole, 100 * PageSectors), Query(dev, 0, all));
        Assert.Equal((AllocationState.Data, PageSectors), Query(dev, 100 * PageSectors, all - 100 * PageSectors));
        // From the next page on: holes again, one run of at most 512 pages (the caller asks again for the rest).
        Assert.Equal((AllocationState.Hole, 512 * PageSectors), Query(dev, 101 * PageSectors, all - 101 * PageSectors));
        Assert.Equal((AllocationState.Hole, 3 * PageSectors), Query(dev, 101 * PageSectors, 3 * PageSectors));
    }

    private static (AllocationState, long) Query(PmemDevice dev, long sector, long sectors)
    {
        AllocationState state = dev.QueryAllocation(sector, sectors, out long run);
        return (state, run);
    }
}
