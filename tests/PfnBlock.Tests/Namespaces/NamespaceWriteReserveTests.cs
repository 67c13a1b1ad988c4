using PfnBlock.Block;
using PfnBlock.Devices.Pmem;
using PfnBlock.Memory;
using PfnBlock.Namespaces;

namespace PfnBlock.Tests.Namespaces;

/// <summary>
/// Before a write stores into pages of a tmpfs namespace that may be holes (never written since
/// create, or punched by a discard), it makes them exist with one <c>MADV_POPULATE_WRITE</c>: once
/// per write, not once per page, never again for a page written since, and a full filesystem fails
/// the write with an error instead of killing the process with SIGBUS.
/// </summary>
public sealed class NamespaceWriteReserveTests : IDisposable
{
    private readonly Scratch _scratch = new();
    public void Dispose() => _scratch.Dispose();

    [Fact]
    public void PagesThatMayBeHolesArePreparedOncePerWriteAndAgainAfterAPunch()
    {
        using var dev = new PmemDevice(PmemNamespace.Create(_scratch.NewPath("reserve"), new NamespaceCreateOptions { Size = 1 << 20 }));
        using var buf = DramArena.Create(64 * Pfn.PageSize, dev.AddressSpace);
        Assert.True(dev.Namespace.TracksHoles);
        Assert.Equal(AllocationState.Hole, dev.QueryAllocation(0, 8, out _)); // never written: a hole to the map

        for (int p = 0; p < 16; p++) Write(dev, buf, p, 1, (byte)(p + 1));
        Assert.Equal(16, dev.Namespace.HoleReservations);
        Write(dev, buf, 3, 1, 0xb3); // written since: nothing to prepare
        Assert.Equal(16, dev.Namespace.HoleReservations);
        Write(dev, buf, 16, 48, 0x40); // 48 fresh pages in one write: one call
        Assert.Equal(17, dev.Namespace.HoleReservations);
        Assert.Equal(AllocationState.Data, dev.QueryAllocation(0, 64 * 8, out long run));
        Assert.Equal(64 * 8, run);

        // A discard punches pages 4 and 5 out of the file: the next write there prepares them again.
        Assert.Equal(BlockStatus.Ok, Discard(dev, 4, 2));
        Assert.Equal(AllocationState.Hole, dev.QueryAllocation(4 * 8, 16, out _));
        Write(dev, buf, 4, 1, 0xa4);
        Assert.Equal(18, dev.Namespace.HoleReservations);

        for (int p = 0; p < 64; p++)
        {
            byte want = p switch { 3 => 0xb3, 4 => 0xa4, 5 => 0, < 16 => (byte)(p + 1), _ => 0x40 };
            Assert.Equal(want, Read(dev, buf, p));
        }
    }

    [Fact]
    public void AWriteIntoAHoleOfAFullTmpfsFailsAndTheAllocatedPagesStillTakeWrites()
    {
        using PrivateMount mount = PrivateMount.Tmpfs("never", sizeMiB: 8);
        using var dev = new PmemDevice(PmemNamespace.Create(Path.Combine(mount.Directory, "ns"), new NamespaceCreateOptions { Size = 4 << 20 }));
        using var buf = DramArena.Create(Pfn.PageSize, dev.AddressSpace);
        Assert.Equal(BlockStatus.Ok, Discard(dev, 0, 256)); // the first MiB leaves the file
        FillUp(Path.Combine(mount.Directory, "filler"));

        // A store into the hole would raise SIGBUS: the write fails first.
        Assert.Equal(BlockStatus.IoError, TryWrite(dev, buf, 7, 0x77));
        // Pages fallocated at create need no space: never written, they take a write.
        Assert.Equal(BlockStatus.Ok, TryWrite(dev, buf, 300, 0x30));
        Assert.Equal(0x30, Read(dev, buf, 300));
    }

    [Fact]
    public void ReadingPunchedPagesOfAFullTmpfsGivesZerosAndAllocatesNothing()
    {
        using PrivateMount mount = PrivateMount.Tmpfs("never", sizeMiB: 8);
        string path = Path.Combine(mount.Directory, "ns");
        using var dev = new PmemDevice(PmemNamespace.Create(path, new NamespaceCreateOptions { Size = 4 << 20 }));
        using var buf = DramArena.Create(4 * Pfn.PageSize, dev.AddressSpace);
        Write(dev, buf, 9, 1, 0x99);
        Assert.Equal(BlockStatus.Ok, Discard(dev, 0, 8)); // pages 0-7 leave the file; 9 stays
        FillUp(Path.Combine(mount.Directory, "filler"));

        // A load from a punched page of a shared tmpfs mapping allocates it (SIGBUS on a full
        // filesystem): the read must give zeros without touching the page.
        for (int p = 0; p < 8; p++) Assert.Equal(0, Read(dev, buf, p));
        // A read across holes and data, in one bio of several vectors.
        Span<byte> mem = buf.AddressSpace!.KmapSpan(buf.PfnAt(0), 0, 4 * Pfn.PageSize);
        mem.Fill(0xee);
        var bio = new Bio().Init(BioOp.Read, 6 * 8L).AddVec(buf.PfnAt(0), 0, 2 * Pfn.PageSize).AddVec(buf.PfnAt(2), 0, 2 * Pfn.PageSize);
        Assert.Equal(BlockStatus.Ok, dev.SubmitAndWait(bio));
        Assert.True(mem[..(2 * Pfn.PageSize)].IndexOfAnyExcept((byte)0) < 0, "the punched pages 6 and 7 did not read as zeros");
        Assert.True(mem.Slice(3 * Pfn.PageSize, Pfn.PageSize).IndexOfAnyExcept((byte)0x99) < 0, "page 9 did not read back");
        // And the reads left them holes: nothing was allocated.
        Assert.Equal(AllocationState.Hole, dev.QueryAllocation(0, 8 * 8, out long run));
        Assert.Equal(8 * 8, run);
    }

    private static void FillUp(string path)
    {
        var chunk = new byte[64 << 10];
        using var f = new FileStream(path, FileMode.CreateNew);
        try
        {
            while (true) { f.Write(chunk); f.Flush(); }
        }
        catch (IOException)
        {
            // ENOSPC: the filesystem is full.
        }
    }

    private static BlockStatus Discard(PmemDevice dev, int page, int pages)
    {
        var bio = new Bio().Init(BioOp.Discard, page * 8L);
        bio.Iter.Size = (uint)(pages * Pfn.PageSize);
        return dev.SubmitAndWait(bio);
    }

    private static BlockStatus TryWrite(PmemDevice dev, DramArena buf, int page, byte value) => Write(dev, buf, page, 1, value, check: false);

    private static BlockStatus Write(PmemDevice dev, DramArena buf, int page, int pages, byte value, bool check = true)
    {
        buf.AddressSpace!.KmapSpan(buf.PfnAt(0), 0, pages * Pfn.PageSize).Fill(value);
        BlockStatus status = dev.SubmitAndWait(new Bio().Init(BioOp.Write, page * 8L).AddVec(buf.PfnAt(0), 0, (uint)(pages * Pfn.PageSize)));
        if (check) Assert.Equal(BlockStatus.Ok, status);
        return status;
    }

    private static byte Read(PmemDevice dev, DramArena buf, int page)
    {
        Span<byte> mem = buf.AddressSpace!.KmapSpan(buf.PfnAt(0), 0, Pfn.PageSize);
        mem.Fill(0xee);
        Assert.Equal(BlockStatus.Ok, dev.SubmitAndWait(new Bio().Init(BioOp.Read, page * 8L).AddVec(buf.PfnAt(0), 0, Pfn.PageSize)));
        Assert.True(mem.IndexOfAnyExcept(mem[0]) < 0, $"page {page} is not one byte value throughout");
        return mem[0];
    }
}
