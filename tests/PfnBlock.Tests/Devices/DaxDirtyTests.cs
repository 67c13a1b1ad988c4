using CsCheck;
using PfnBlock.Devices.Pmem;
using PfnBlock.Memory;
using PfnBlock.Namespaces;

namespace PfnBlock.Tests.Devices;

/// <summary>
/// DAX mappings for applications on a namespace without MAP_SYNC (tmpfs): writes mark frames
/// dirty where the descriptor map keeps state, and a flush writes back exactly the dirty frames
/// (counted run by run) and nothing else, for every map; the huge map splits a 2 MiB descriptor
/// only where less than 2 MiB was written.
/// </summary>
public sealed class DaxDirtyTests : IDisposable
{
    private readonly Scratch _scratch = new();
    public void Dispose() => _scratch.Dispose();

    public static TheoryData<DescriptorMapKind> Kinds => [.. DescriptorMaps.All];

    private PmemDevice Device(DescriptorMapKind kind) => new(PmemNamespace.Create(_scratch.NewPath(DescriptorMaps.Name(kind)),
        new NamespaceCreateOptions { Size = 8 << 20, Align = 4096, MapKind = kind }, new PhysicalAddressSpace()));

    [Theory]
    [MemberData(nameof(Kinds))]
    public unsafe void AFlushWritesBackExactlyTheDirtyFrames(DescriptorMapKind kind)
    {
        using PmemDevice dev = Device(kind);
        long pages = dev.Namespace.Region.FrameCount;
        using DaxMapping map = dev.MapDax(0, pages);
        Assert.True(dev.Pins.IsPinned(0, pages));
        map.Write(5000, new byte[100]);                  // frame 1
        map.Write(2 * 4096, new byte[4096]);             // frame 2
        map.Write(9 * 4096 + 4090, new byte[10]);        // frames 9 and 10
        map.Write(2 << 20, new byte[2 << 20]);           // frames 512..1023, one whole 2 MiB
        var runs = new List<(long, long)>();
        Assert.Equal((4 + 512) * 4096L, map.Persist((f, n) => runs.Add((f, n))));
        Assert.Equal([(1L, 2L), (9, 2), (512, 512)], runs);
        Assert.Equal(0, map.Persist()); // nothing written since
        if (dev.Namespace.Region.Descriptors is HugeDescriptorMap huge)
        {
            // The first 2 MiB was written in pieces: split; the second as a whole: still one descriptor.
            Assert.Equal(1, huge.Splits);
            Assert.True(huge.IsSplit(0) && !huge.IsSplit(512));
        }
        Assert.Equal(kind is DescriptorMapKind.None or DescriptorMapKind.Temporary, dev.Namespace.Region.Dirty is DirtyBitmap);
        Assert.Throws<ArgumentOutOfRangeException>(() => map.Write(map.Length - 1, new byte[2]));
        map.Dispose();
        Assert.False(dev.Pins.AnyPinned);
        Assert.Throws<ObjectDisposedException>(() => map.Write(0, new byte[1]));
    }

    [Theory]
    [MemberData(nameof(Kinds))]
    public void RandomWritesFlushTheFramesTheModelSays(DescriptorMapKind kind)
    {
        using PmemDevice dev = Device(kind);
        long pages = dev.Namespace.Region.FrameCount;
        using DaxMapping map = dev.MapDax(0, pages);
        long bytes = pages * 4096;
        var buffer = new byte[3 << 20];
        Gen.Select(Gen.Long[0, bytes - 1], Gen.Int[1, 3 << 20]).Array[1, 12].Sample(writes =>
        {
            var model = new HashSet<long>();
            foreach ((long offset, int length0) in writes)
            {
                int length = (int)Math.Min(length0, bytes - offset);
                map.Write(offset, buffer.AsSpan(0, length));
                for (long f = offset / 4096; f <= (offset + length - 1) / 4096; f++) model.Add(f);
            }
            var flushed = new HashSet<long>();
            long written = map.Persist((f, n) => { for (long i = f; i < f + n; i++) Assert.True(flushed.Add(i), $"frame {i} written back twice"); });
            Assert.Equal(model.Count * 4096L, written);
            Assert.True(model.SetEquals(flushed));
        }, iter: 30, threads: 1); // one namespace's dirty set: samples must not interleave
    }

    [Fact]
    public void AMappingIsRefusedWhileADiscardIsPendingAndOutsideTheNamespace()
    {
        using PmemDevice dev = Device(DescriptorMapKind.Dense);
        int fence = dev.Pins.Fence(10, 1);
        Assert.Contains("discard of them is pending", Assert.Throws<InvalidOperationException>(() => dev.MapDax(8, 4)).Message);
        dev.Pins.Unfence(fence);
        Assert.Throws<ArgumentOutOfRangeException>(() => dev.MapDax(dev.Namespace.Region.FrameCount, 1));
        Assert.False(dev.Pins.AnyPinned);
    }
}
