using PfnBlock.Block;
using PfnBlock.Devices.Pmem;
using PfnBlock.Devices.Ram;
using PfnBlock.Memory;
using PfnBlock.Namespaces;

namespace PfnBlock.Tests.Performance;

/// <summary>
/// The I/O path allocates nothing in steady state: pooled bios, a cached completion delegate,
/// 4 KiB reads and writes at random sectors. Measured with the current thread's allocation
/// counter over 100k I/Os after a warm-up (no timing involved).
/// </summary>
public sealed class ZeroAllocationTests : IDisposable
{
    private const int WarmUp = 20_000;
    private const int Measured = 100_000;

    private readonly Scratch _scratch = new();
    private readonly PfnBlock.Devices.DeviceSet _set = new();

    public void Dispose()
    {
        _set.Dispose();
        _scratch.Dispose();
    }

    private sealed class Counters { public long Done, Failed; }

    private IBlockDevice Create(string kind) => kind switch
    {
        "pmem" => new PmemDevice(PmemNamespace.Create(_scratch.NewPath("alloc"), new() { Size = 16 << 20 })),
        // Two levels of dm-linear, remapping in place, over pmem: frames, hooks and accounting on every level.
        "stack2" => _set.Open(Table(32768 - 2048, $"linear {Table(32768, $"linear pmem:{_scratch.NewNamespace(17 << 20)} 0")} 2048")),
        // Two levels where the lower one fans every bio out into clones from its pool.
        "clone2" => _set.Open(Table(32768, $"linear {Table(32768, "clone ram:16M,name=alloc 4")} 0")),
        _ => RamDevice.Create(16 << 20),
    };

    private string Table(long sectors, string line)
    {
        PfnBlock.Devices.DeviceTypes.RegisterAssembly(typeof(ZeroAllocationTests).Assembly);
        string path = _scratch.NewPath("alloc.table");
        File.WriteAllText(path, $"0 {sectors} {line}\n");
        return "table:" + path;
    }

    /// <summary>Runs <paramref name="io"/> (a loop of that many I/Os) to warm up, then measures the bytes the measured loop allocates on this thread.</summary>
    private static long AllocatedBy(Action<int> io)
    {
        io(WarmUp);
        long before = GC.GetAllocatedBytesForCurrentThread();
        io(Measured);
        return GC.GetAllocatedBytesForCurrentThread() - before;
    }

    [Theory]
    [InlineData("pmem", false)]
    [InlineData("ram", false)]
    [InlineData("stack2", false)]
    [InlineData("clone2", false)]
    [InlineData("pmem", true)]
    [InlineData("ram", true)]
    [InlineData("stack2", true)]
    [InlineData("clone2", true)]
    public void CallbackCompletionAllocatesNothingPerIo(string kind, bool plugged)
    {
        IBlockDevice device = Create(kind);
        using var arena = DramArena.Create(1 << 20, device.AddressSpace, "alloc-buffers");
        Pfn buffer = arena.Allocator.Allocate(1).First;
        var pool = new BioPool();
        var counters = new Counters();
        Action<Bio> endIo = b =>
        {
            if (b.Status == BlockStatus.Ok) counters.Done++; else counters.Failed++;
            b.Release();
        };
        long sectors = device.CapacitySectors - 8;
        ulong state = 12345;

        void Run(int count)
        {
            for (int i = 0; i < count; i++)
            {
                // Plugged: batches of 16, which a memory device copies side by side.
                if (plugged && i % 16 == 0) BlockPlug.Start();
                state = state * 6364136223846793005UL + 1442695040888963407UL;
                long sector = (long)((state >> 33) % (ulong)sectors) & ~7L;
                Bio bio = pool.Rent((i & 1) == 0 ? BioOp.Write : BioOp.Read, sector);
                bio.EndIo = endIo;
                bio.AddVec(buffer, 0, Pfn.PageSize);
                device.Submit(bio);
                if (plugged && (i % 16 == 15 || i == count - 1)) BlockPlug.Finish();
            }
        }

        long allocated = AllocatedBy(Run);

        Assert.Equal(WarmUp + Measured, counters.Done);
        Assert.Equal(0, counters.Failed);
        Assert.True(allocated == 0, $"{kind}{(plugged ? ", plugged" : "")}: {allocated} bytes allocated for {Measured} I/Os, expected 0 ({(double)allocated / Measured:F3} B/I/O)");
        Assert.Equal(WarmUp + Measured, device.Stats.Snapshot().Read.Ios + device.Stats.Snapshot().Write.Ios);
        device.Dispose();
    }

    [Theory]
    [InlineData("pmem")]
    [InlineData("ram")]
    [InlineData("stack2")]
    [InlineData("clone2")]
    public void AwaitedCompletionAllocatesNothingPerIo(string kind)
    {
        IBlockDevice device = Create(kind);
        using var arena = DramArena.Create(1 << 20, device.AddressSpace, "alloc-buffers");
        Pfn buffer = arena.Allocator.Allocate(1).First;
        var pool = new BioPool();
        long failed = 0;

        void Run(int count)
        {
            for (int i = 0; i < count; i++)
            {
                Bio bio = pool.Rent((i & 1) == 0 ? BioOp.Write : BioOp.Read, (i * 8L) % (device.CapacitySectors - 8));
                bio.AddVec(buffer, 0, Pfn.PageSize);
                if (device.SubmitAndWait(bio) != BlockStatus.Ok) failed++;
                bio.Release();
            }
        }

        long allocated = AllocatedBy(Run);

        Assert.Equal(0, failed);
        Assert.True(allocated == 0, $"{kind}: {allocated} bytes allocated for {Measured} awaited I/Os, expected 0 ({(double)allocated / Measured:F3} B/I/O)");
        device.Dispose();
    }
}
