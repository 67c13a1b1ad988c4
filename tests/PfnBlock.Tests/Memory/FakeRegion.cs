using PfnBlock.Memory;

namespace PfnBlock.Tests.Memory;

/// <summary>
/// A region with a made-up CPU address, for address-space bookkeeping tests: lookups and kmap
/// only compute addresses, so any number of frames costs nothing. Never dereference its memory.
/// </summary>
internal sealed unsafe class FakeRegion(long frames, RegionKind kind = RegionKind.Pmem, IPageDescriptorMap? descriptors = null, string name = "fake")
    : MemoryRegion(name, kind, frames, kind == RegionKind.DeviceOnly ? null : (byte*)0x7f00_0000_0000, PfnFlags.None, descriptors);
