using PfnBlock.Block;
using PfnBlock.Targets.Md;

namespace PfnBlock.Tests.Targets.Md;

/// <summary>
/// The write-intent bitmap's lock-free write path: a write counted in its thread's own counters
/// keeps its region's bit from being cleared by the daemon and holds a sync's barrier off until
/// it ends — also when it ends on another thread than the one that started it.
/// </summary>
public sealed class WriteIntentBitmapTests : IDisposable
{
    private readonly MdHarness _h = new();

    public void Dispose() => _h.Dispose();

    private sealed class NoWaiter : IBitmapWaiter
    {
        public IBitmapWaiter? NextWaiter { get; set; }
        public int FirstRegion => 0;
        public int LastRegion => 0;
        public void BitsDurable() { }
    }

    private static T OnThread<T>(Func<T> body)
    {
        T result = default!;
        var t = new Thread(() => result = body());
        t.Start();
        t.Join();
        return result;
    }

    [Fact]
    public void AFastPathWriteInFlightKeepsItsBitAndHoldsOffABarrierUntilItEndsOnAnotherThread()
    {
        string[] m = _h.Members(2);
        _h.Create(1, m);
        IBlockDevice md = _h.Open(MdHarness.Spec(m));
        MdArray array = MdArray.Of(md)!;
        WriteIntentBitmap regions = array.Regions;
        Assert.NotNull(regions.Bitmap);
        // A write through the array makes region 0's bit durable.
        Assert.Equal(BlockStatus.Ok, _h.Write(md, 0, new byte[4096]));
        Assert.True(regions.IsSet(0));

        // A write started on one thread (durable region: the per-thread way)...
        bool perThread = false;
        WriteIntent intent = OnThread(() => regions.StartWrite(0, 0, new NoWaiter(), out perThread));
        Assert.Equal(WriteIntent.Ready, intent);
        Assert.True(perThread);
        Assert.Equal(1, regions.InFlight);
        // ...survives daemon passes (the first only forgets that the region was touched).
        for (int pass = 0; pass < 3; pass++) regions.ClearIdle();
        Assert.True(regions.IsSet(0), "the daemon cleared the bit of a region with a write in flight");

        // A barrier waits for it.
        var barrier = new Thread(() => regions.RaiseBarrier(0));
        barrier.Start();
        Assert.False(barrier.Join(300), "the barrier went up over a write in flight");
        // Ended on a third thread: the counts are per thread, only their sum means anything.
        OnThread(() => { regions.EndWrite(0, 0, perThread); return 0; });
        Assert.True(barrier.Join(10_000), "the barrier did not go up once the write ended");
        Assert.Equal(WriteIntent.Blocked, OnThread(() => regions.StartWrite(0, 0, new NoWaiter(), out _)));
        regions.LowerBarrier(0);
        Assert.Equal(0, regions.InFlight);

        // Idle now: two passes clear the bit.
        for (int pass = 0; pass < 2; pass++) regions.ClearIdle();
        Assert.False(regions.IsSet(0));
        // The next write goes the locked way (bit not durable) and gets the bit back.
        Assert.Equal(BlockStatus.Ok, _h.Write(md, 0, new byte[4096]));
        Assert.True(regions.IsSet(0));
        Assert.Equal(0, regions.InFlight);
    }
}
