using System.Diagnostics;
using PfnBlock.Block;
using PfnBlock.Devices.Ram;
using PfnBlock.Memory;

namespace PfnBlock.Tests.Block;

/// <summary>
/// <see cref="Bio.SetStartTime"/> and <see cref="Bio.CompletionTime"/>: the device accounts a bio
/// from the time its submitter gave, the submitter's completion callback sees the time the device
/// accounted the completion, and <see cref="Bio.Init"/> forgets both.
/// </summary>
public sealed class BioTimeTests
{
    [Fact]
    public void TheDeviceAccountsFromTheSubmittersTimeAndTheCallbackSeesTheCompletionsTime()
    {
        using IBlockDevice dev = RamDevice.Create(1 << 20);
        using var arena = DramArena.Create(1 << 16, dev.AddressSpace);
        var bio = new Bio();
        long completion = -1, seenAt = 0;
        void Run()
        {
            using var done = new ManualResetEventSlim();
            bio.EndIo = b => { completion = b.CompletionTime; seenAt = Stopwatch.GetTimestamp(); done.Set(); };
            dev.Submit(bio);
            Assert.True(done.Wait(TimeSpan.FromSeconds(30)), "bio never completed");
            Assert.Equal(BlockStatus.Ok, bio.Status);
        }

        // A start one second in the past: the write then took at least a second, by the device's books.
        long start = Stopwatch.GetTimestamp() - Stopwatch.Frequency;
        bio.Init(BioOp.Write, 8).AddVec(arena.PfnAt(0), 0, 4096);
        bio.SetStartTime(start);
        Run();
        Assert.True(dev.Stats.Snapshot().Write.Ticks >= Stopwatch.Frequency, "the device did not start the write at the submitter's time");
        Assert.InRange(completion, start + Stopwatch.Frequency, seenAt);

        // Init forgets both: the next write is timed by the device's own clock read, and a bio that
        // has not completed again shows no completion time.
        bio.Init(BioOp.Write, 16).AddVec(arena.PfnAt(1), 0, 4096);
        Assert.Equal(0, bio.CompletionTime);
        long before = dev.Stats.Snapshot().Write.Ticks, issued = Stopwatch.GetTimestamp();
        Run();
        Assert.True(dev.Stats.Snapshot().Write.Ticks - before < Stopwatch.Frequency / 2, "the second write kept the first one's start time");
        Assert.InRange(completion, issued, seenAt);
    }
}
