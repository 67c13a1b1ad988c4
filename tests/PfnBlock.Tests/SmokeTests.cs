using PfnBlock.Block;
using PfnBlock.Devices.Pmem;
using PfnBlock.Memory;
using PfnBlock.Namespaces;

namespace PfnBlock.Tests;

public sealed class SmokeTests
{
    [Fact]
    public unsafe void PmemWriteThenReadRoundTrips()
    {
        string path = Path.Combine("/dev/shm", $"pfnblock-smoke-{Guid.NewGuid():N}");
        try
        {
            using var arena = DramArena.Create(1 << 20);
            using var dev = new PmemDevice(PmemNamespace.Create(path, new NamespaceCreateOptions { Size = 8 << 20 }));
            FrameRun buf = arena.Allocator.Allocate(2);
            Span<byte> src = arena.AddressSpace!.KmapSpan(buf.First, 0, 4096);
            for (int i = 0; i < src.Length; i++) src[i] = (byte)(i * 7);
            var bio = new Bio().Init(BioOp.Write, 8).AddVec(buf.First, 0, 4096);
            Assert.Equal(BlockStatus.Ok, dev.SubmitAndWait(bio));
            Pfn dst = buf.First.Add(1);
            bio.Init(BioOp.Read, 8).AddVec(dst, 0, 4096);
            Assert.Equal(BlockStatus.Ok, dev.SubmitAndWait(bio));
            Assert.True(src.SequenceEqual(arena.AddressSpace.KmapSpan(dst, 0, 4096)));
        }
        finally { File.Delete(path); }
    }
}
