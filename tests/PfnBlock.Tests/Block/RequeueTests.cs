using PfnBlock.Block;
using PfnBlock.Devices;
using PfnBlock.Memory;

namespace PfnBlock.Tests.Block;

/// <summary>Busy is never a failure: the block layer requeues it wherever in a stack it happens, and counts it.</summary>
public sealed class RequeueTests : IDisposable
{
    private readonly Scratch _scratch = new();
    private readonly DeviceSet _set = new();

    static RequeueTests() => DeviceTypes.RegisterAssembly(typeof(RequeueTests).Assembly);

    public void Dispose()
    {
        _set.Dispose();
        _scratch.Dispose();
    }

    [Theory]
    [InlineData("busyram:8M,percent=50,seed=3")]
    [InlineData("table")]
    public void ManySubmittersOnABusyDeviceSeeOnlySuccess(string spec)
    {
        if (spec == "table")
        {
            string path = _scratch.NewPath("busy.table");
            File.WriteAllText(path, "0 8192 requeue busyram:4M,percent=50,seed=7 50\n8192 8192 linear busyram:4M,percent=50,seed=8 0\n");
            spec = "table:" + path;
        }
        IBlockDevice dev = _set.Open(spec);
        using var arena = DramArena.Create(8 << 20, dev.AddressSpace);
        long errors = 0, busySeen = 0, completed = 0;
        const int threads = 4, perThread = 500;
        Parallel.For(0, threads, t =>
        {
            var rng = new Random(t);
            Pfn buffer = arena.PfnAt(t * 256);
            for (int i = 0; i < perThread; i++)
            {
                // Each thread owns a quarter of the device, so its reads check its own writes.
                long sector = t * (dev.CapacitySectors / threads) + rng.Next(0, (int)(dev.CapacitySectors / threads) - 8) / 8 * 8;
                byte stamp = (byte)(i + 1);
                Span<byte> mem = arena.AddressSpace!.KmapSpan(buffer, 0, 4096);
                mem.Fill(stamp);
                BlockStatus w = dev.SubmitAndWait(new Bio().Init(BioOp.Write, sector).AddVec(buffer, 0, 4096));
                mem.Clear();
                BlockStatus r = dev.SubmitAndWait(new Bio().Init(BioOp.Read, sector).AddVec(buffer, 0, 4096));
                if (w == BlockStatus.Busy || r == BlockStatus.Busy) Interlocked.Increment(ref busySeen);
                else if (w != BlockStatus.Ok || r != BlockStatus.Ok || mem.IndexOfAnyExcept(stamp) >= 0) Interlocked.Increment(ref errors);
                Interlocked.Increment(ref completed);
            }
        });
        Assert.Equal(threads * perThread, completed);
        Assert.Equal(0, busySeen);
        Assert.Equal(0, errors);
        long requeues = _set.OpenDevices.Sum(d => d.Device.Stats.Snapshot().Requeues);
        Assert.True(requeues > threads * perThread / 2, $"only {requeues} requeues counted");
        Assert.All(_set.OpenDevices, d => Assert.Equal(0, d.Device.Stats.Snapshot().InFlight));
    }

    [Fact]
    public void RequeuedBiosOfADisposedDeviceFailOnce()
    {
        string path = _scratch.NewPath("always.table");
        File.WriteAllText(path, "0 2048 requeue ram:1M 90\n");
        IBlockDevice dev = new DeviceSet().Open("table:" + path);
        using var arena = DramArena.Create(1 << 20, dev.AddressSpace);
        var log = new CompletionLog();
        var bios = Enumerable.Range(0, 50).Select(i => new Bio().Init(BioOp.Read, i * 8).AddVec(arena.PfnAt(i), 0, 4096)).ToArray();
        foreach (Bio b in bios) { b.EndIo = log.EndIo; dev.Submit(b); }
        dev.Dispose();
        foreach (Bio b in bios) SpinWait.SpinUntil(() => log.Of(b).Count == 1, 5000);
        Thread.Sleep(20); // a second completion, if there were one, would show up by now
        Assert.All(bios, b => Assert.Single(log.Of(b)));
        Assert.All(bios, b => Assert.True(log.Of(b)[0] is BlockStatus.Ok or BlockStatus.IoError));
    }
}
