using System.Runtime.CompilerServices;
using PfnBlock.Interop;
using PfnBlock.Memory;
using PfnBlock.Namespaces;

namespace PfnBlock.Tests.Interop;

/// <summary>
/// <see cref="SafeFdHandle"/> closes and <see cref="SafeMmapHandle"/> unmaps exactly once, failures
/// leave errno to the caller, and a pmem region keeps its mapping while it is registered.
/// </summary>
public sealed unsafe class SafeHandleTests : IDisposable
{
    private readonly Scratch _scratch = new();
    public void Dispose() => _scratch.Dispose();

    // Other tests open descriptors in parallel, so a closed number may be reused at once: compare
    // what the number names rather than whether it exists.
    private static string? FdTarget(int fd)
    {
        try { return File.ResolveLinkTarget($"/proc/self/fd/{fd}", returnFinalTarget: false)?.FullName; }
        catch (FileNotFoundException) { return null; } // closed, not reused
    }

    private static bool IsMapped(string path) => File.ReadAllLines("/proc/self/maps").Any(l => l.EndsWith(path, StringComparison.Ordinal));

    [Fact]
    public void AnFdIsClosedOnceOnDispose()
    {
        string path = _scratch.NewFile(new byte[4096]);
        SafeFdHandle fd = SafeFdHandle.Open(path, Libc.O_RDONLY | Libc.O_CLOEXEC, 0);
        Assert.False(fd.IsInvalid);
        Assert.Equal(path, FdTarget(fd.Fd));
        int number = fd.Fd;
        fd.Dispose();
        fd.Dispose();
        Assert.True(fd.IsClosed);
        Assert.NotEqual(path, FdTarget(number));
    }

    [Fact]
    public void AFailedOpenIsInvalidAndKeepsErrno()
    {
        using SafeFdHandle fd = SafeFdHandle.Open(_scratch.NewPath(), Libc.O_RDONLY | Libc.O_CLOEXEC, 0);
        Assert.True(fd.IsInvalid);
        Assert.Equal(Libc.ENOENT, Libc.Errno);
        Assert.Equal(-1, fd.Fd);
    }

    [Fact]
    public void AMappingIsUnmappedOnceWithItsLength()
    {
        string path = _scratch.NewFile(new byte[64 << 10]);
        using SafeFdHandle fd = SafeFdHandle.Open(path, Libc.O_RDWR | Libc.O_CLOEXEC, 0);
        SafeMmapHandle map = SafeMmapHandle.TryMap(64 << 10, Libc.PROT_READ | Libc.PROT_WRITE, Libc.MAP_SHARED, fd.Fd, 0)!;
        Assert.Equal((nuint)(64 << 10), map.Length);
        map.Address[65535] = 0x5A;
        Assert.True(IsMapped(path));
        map.Dispose();
        map.Dispose();
        Assert.False(IsMapped(path));
        Assert.Equal(0x5A, File.ReadAllBytes(path)[65535]);
    }

    [Fact]
    public void AFailedMapReturnsNullAndKeepsErrno()
    {
        Assert.Null(SafeMmapHandle.TryMap(4096, Libc.PROT_READ, Libc.MAP_SHARED, -1, 0)); // not anonymous, no fd
        Assert.Equal(9 /* EBADF */, Libc.Errno);
    }

    [Fact]
    public void ARegisteredPmemRegionKeepsItsMappingWhenTheNamespaceIsDropped()
    {
        var space = new PhysicalAddressSpace();
        string path = _scratch.NewNamespace();
        Pfn first = OpenAndDrop(path, space, out PmemRegion region);
        for (int i = 0; i < 3; i++) { GC.Collect(); GC.WaitForPendingFinalizers(); }
        // Still registered, so still mapped: the bytes written through the dropped namespace read back.
        Assert.Equal(0xA5, space.KmapSpan(first, 100, 1)[0]);
        Assert.True(IsMapped(path));
        region.Dispose();
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static Pfn OpenAndDrop(string path, PhysicalAddressSpace space, out PmemRegion region)
    {
        PmemNamespace ns = PmemNamespace.Open(path, space);
        region = ns.Region;
        Pfn first = region.PfnAt(0);
        space.KmapSpan(first, 100, 1)[0] = 0xA5;
        return first; // ns is never disposed
    }
}
