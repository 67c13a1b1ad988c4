using System.Diagnostics;
using PfnBlock.Block;
using PfnBlock.Devices;
using PfnBlock.Memory;
using PfnBlock.Targets.Delay;
using PfnBlock.Tests.Block;

namespace PfnBlock.Tests.Targets;

/// <summary>
/// dm-delay: each class of I/O waits at least its delay (lower bounds only: this machine is too
/// noisy for upper ones) and goes to its own device; a burst of held bios costs no thread and no
/// allocation per bio; a table going away releases what it holds; bad lines are refused.
/// </summary>
public sealed class DelayTargetTests : IDisposable
{
    private readonly Scratch _scratch = new();
    private readonly DeviceSet _set = new();

    static DelayTargetTests() => DeviceTypes.RegisterAssembly(typeof(DelayTargetTests).Assembly);

    public void Dispose()
    {
        _set.Dispose();
        _scratch.Dispose();
    }

    private string Table(string line)
    {
        string path = _scratch.NewPath("delay.table");
        File.WriteAllText(path, line + "\n");
        return "table:" + path;
    }

    private string Recording() => $"recording:1M,name=rec-{Path.GetFileName(_scratch.NewPath("rec"))},cache";

    private static double MillisecondsFor(IBlockDevice dev, Bio bio)
    {
        long start = Stopwatch.GetTimestamp();
        Assert.Equal(BlockStatus.Ok, TargetSeamProperties.RunOnce(dev, bio));
        return Stopwatch.GetElapsedTime(start).TotalMilliseconds;
    }

    [Fact]
    public void EachClassWaitsAtLeastItsDelayAndGoesToItsDevice()
    {
        string reads = Recording(), writes = Recording();
        IBlockDevice dev = _set.Open(Table($"0 1024 delay {reads} 16 0 {writes} 0 40 {writes} 8 80"));
        using var buffers = new IoBuffers(dev.AddressSpace, 1 << 20);
        using IoBuffers.Layout page = buffers.Single(4096);

        // No read delay: remapped in place, so it completes before Submit returns.
        Bio read = page.AddTo(new Bio().Init(BioOp.Read, 8));
        bool done = false;
        read.EndIo = _ => done = true;
        dev.Submit(read);
        Assert.True(done);

        Assert.True(MillisecondsFor(dev, page.AddTo(new Bio().Init(BioOp.Write, 8))) >= 40);
        Assert.True(MillisecondsFor(dev, new Bio().Init(BioOp.Flush, 0)) >= 80);
        var discard = new Bio().Init(BioOp.Discard, 32);
        discard.Iter.Size = 4096;
        Assert.True(MillisecondsFor(dev, discard) >= 40); // discards are writes

        Received r = Assert.Single(((RecordingDevice)_set.Open(reads)).Log);
        Assert.Equal((BioOp.Read, 24L), (r.Op, r.Sector));
        Received[] w = ((RecordingDevice)_set.Open(writes)).Log;
        Assert.Equal([(BioOp.Write, 8L), (BioOp.Flush, 0L), (BioOp.Discard, 32L)], w.Select(x => (x.Op, x.Sector)));
    }

    [Fact]
    public void ThreeArgumentsDelayEveryBioAlike()
    {
        IBlockDevice dev = _set.Open(Table($"0 1024 delay {Recording()} 0 25"));
        using var buffers = new IoBuffers(dev.AddressSpace, 1 << 20);
        using IoBuffers.Layout page = buffers.Single(4096);
        Assert.True(MillisecondsFor(dev, page.AddTo(new Bio().Init(BioOp.Read, 0))) >= 25);
        Assert.True(MillisecondsFor(dev, page.AddTo(new Bio().Init(BioOp.Write, 0))) >= 25);
        Assert.True(MillisecondsFor(dev, new Bio().Init(BioOp.Flush, 0)) >= 25);
    }

    [Fact]
    public void ABurstOfHeldBiosCostsNoThreadAndNoAllocationPerBio()
    {
        const int Burst = 1000;
        var dev = (MappedDevice)_set.Open(Table($"0 2048 delay ram:1M,name=burst-{Path.GetFileName(_scratch.NewPath("b"))} 0 300"));
        var target = (DelayTarget)dev.Table[0].Target;
        using var arena = DramArena.Create(1 << 20, dev.AddressSpace, "burst");
        Pfn buffer = arena.Allocator.Allocate(1).First;
        var pool = new BioPool();
        int completed = 0, failed = 0;
        using var all = new ManualResetEventSlim();
        Action<Bio> endIo = b =>
        {
            // Counted, not asserted here: xunit's Assert allocates, and this runs on the timer thread being measured.
            if (b.Status != BlockStatus.Ok) Interlocked.Increment(ref failed);
            b.Release();
            if (Interlocked.Increment(ref completed) % Burst == 0) all.Set();
        };
        long allocatedHere = 0, allocatedByTimer = 0;
        int threadsBefore = 0, threadsHolding = 0;
        // A thread of its own, so that no thread-pool thread blocks on the burst.
        var submitter = new Thread(() =>
        {
            // The first rounds warm up (pools, rings, statistics blocks). Bios released on the timer thread
            // fill that thread's pool cache (up to 32) before they go back to the shared stack, so the
            // second round still makes those 32; from the third on, nothing is made.
            for (int round = 0; round < 3; round++)
            {
                all.Reset();
                threadsBefore = Process.GetCurrentProcess().Threads.Count;
                long timerBefore = DelayTimer.AllocatedBytes;
                long before = GC.GetAllocatedBytesForCurrentThread();
                for (int i = 0; i < Burst; i++)
                {
                    Bio bio = pool.Rent(i % 2 == 0 ? BioOp.Write : BioOp.Read, i % 256 * 8);
                    bio.EndIo = endIo;
                    bio.AddVec(buffer, 0, Pfn.PageSize);
                    dev.Submit(bio);
                }
                allocatedHere = GC.GetAllocatedBytesForCurrentThread() - before;
                threadsHolding = Process.GetCurrentProcess().Threads.Count;
                Assert.True(target.Held > Burst / 2, $"only {target.Held} of {Burst} bios held"); // 300 ms: most are still waiting
                Assert.True(all.Wait(TimeSpan.FromSeconds(60)), "the burst never completed");
                allocatedByTimer = DelayTimer.AllocatedBytes - timerBefore;
            }
        });
        submitter.Start();
        submitter.Join();
        Assert.Equal(3 * Burst, completed);
        Assert.Equal(0, failed);
        Assert.Equal(0, allocatedHere);
        // Other tests share the timer thread (and may open devices it then counts for): allow a little, never a byte per bio.
        Assert.True(allocatedByTimer < Burst, $"the timer thread allocated {allocatedByTimer} bytes releasing {Burst} bios");
        Assert.True(threadsHolding - threadsBefore < 50, $"{threadsHolding - threadsBefore} more threads while {Burst} bios were held");
        Assert.NotNull(DelayTimer.Thread);
    }

    [Fact]
    public void DisposingTheTableReleasesHeldBiosAtOnce()
    {
        string lower = Recording();
        IBlockDevice dev = _set.Open(Table($"0 1024 delay {lower} 0 600000")); // ten minutes
        using var buffers = new IoBuffers(dev.AddressSpace, 1 << 20);
        using IoBuffers.Layout page = buffers.Single(4096);
        Bio bio = page.AddTo(new Bio().Init(BioOp.Write, 0));
        using var done = new ManualResetEventSlim();
        BlockStatus status = BlockStatus.Busy;
        bio.EndIo = b => { status = b.Status; done.Set(); };
        dev.Submit(bio);
        Assert.False(done.IsSet);
        Assert.Equal(1, ((DelayTarget)((MappedDevice)dev).Table[0].Target).Held);
        dev.Dispose();
        Assert.True(done.Wait(TimeSpan.FromSeconds(30)));
        Assert.Equal(BlockStatus.Ok, status);
    }

    [Theory]
    [InlineData("ram:1M 0", "Requires exactly 3, 6 or 9 arguments (got 2)")]
    [InlineData("ram:1M 0 1 ram:1M 0", "Requires exactly 3, 6 or 9 arguments (got 5)")]
    [InlineData("ram:1M x 1", "Invalid device sector: 'x'")]
    [InlineData("ram:1M 0 1.5", "Invalid delay: '1.5'")]
    [InlineData("ram:1M 0 1 ram:1M 0 -2", "Invalid write delay: '-2'")]
    [InlineData("ram:1M 0 1 ram:1M 0 2 ram:1M q 3", "Invalid flush device sector: 'q'")]
    [InlineData("ram:1M 0 1 nodev:1 0 2", "Device lookup failed: nodev:1")]
    [InlineData("ram:1M 1100 1", "Device too small: ram0 has 2048 sectors, the line needs 1100 + 1024")]
    public void BadDelayLinesSayWhichLineAndWhy(string args, string message)
    {
        var e = Assert.Throws<FormatException>(() => _set.Open(Table($"0 1024 delay {args}")));
        Assert.Contains($"line 1: delay: {message}", e.Message);
        Assert.Empty(_set.OpenDevices);
    }
}
