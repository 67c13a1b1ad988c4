using CsCheck;
using PfnBlock.Memory;

namespace PfnBlock.Tests.Memory;

/// <summary>The DRAM frame allocator against a first-fit bitmap model.</summary>
public sealed class FrameAllocatorTests
{
    private readonly record struct Op(bool Allocate, int Frames, int AlignLog, int Victim);

    private static readonly Gen<Op> GenOp = Gen.Select(Gen.Int[0, 9], Gen.Int[1, 24], Gen.Int[0, 5], Gen.Int[0, 1000],
        (kind, frames, alignLog, victim) => new Op(kind < 6, frames, alignLog, victim));

    [Fact]
    public void RandomAllocateAndFreeSequencesMatchTheModel()
    {
        Gen.Select(Gen.Int[1, 200], GenOp.Array[1, 80]).Sample((total, ops) =>
        {
            var space = new PhysicalAddressSpace();
            var region = new FakeRegion(total);
            space.Add(region);
            var allocator = new FrameAllocator(region);
            bool[] used = new bool[total];
            var live = new List<FrameRun>();
            foreach (Op op in ops)
            {
                if (op.Allocate || live.Count == 0)
                {
                    int align = 1 << op.AlignLog;
                    int expected = -1;
                    for (int start = 0; start + op.Frames <= total && expected < 0; start += align)
                        if (!used.AsSpan(start, op.Frames).Contains(true)) expected = start;
                    bool ok = allocator.TryAllocate(op.Frames, align, out FrameRun run);
                    Assert.Equal(expected >= 0, ok);
                    if (!ok) continue;
                    long index = (long)(run.First.Frame - region.BaseFrame);
                    Assert.Equal(expected, index);                 // first fit
                    Assert.Equal(0, index % align);                // alignment honoured
                    Assert.Equal(op.Frames, run.Frames);
                    Assert.Equal(region.Flags, run.First.Flags);
                    Assert.Equal((long)op.Frames * Pfn.PageSize, run.Bytes);
                    used.AsSpan((int)index, op.Frames).Fill(true);
                    live.Add(run);
                }
                else
                {
                    FrameRun victim = live[op.Victim % live.Count];
                    allocator.Free(victim);
                    live.Remove(victim);
                    long index = (long)(victim.First.Frame - region.BaseFrame);
                    used.AsSpan((int)index, victim.Frames).Clear();
                    // Freeing it again is a double free and changes nothing.
                    long free = allocator.FreeFrames;
                    Assert.Throws<InvalidOperationException>(() => allocator.Free(victim));
                    Assert.Equal(free, allocator.FreeFrames);
                }
                Assert.Equal(used.Count(u => !u), allocator.FreeFrames);
                // Live runs never overlap.
                var sorted = live.OrderBy(r => r.First.Frame).ToList();
                for (int i = 1; i < sorted.Count; i++)
                    Assert.True(sorted[i - 1].First.Frame + (ulong)sorted[i - 1].Frames <= sorted[i].First.Frame);
            }
        });
    }

    [Fact]
    public void ExhaustionAndBadArgumentsAreReported()
    {
        var space = new PhysicalAddressSpace();
        using var arena = DramArena.Create(8 * Pfn.PageSize, space);
        FrameAllocator a = arena.Allocator;
        Assert.Throws<ArgumentOutOfRangeException>(() => a.Allocate(0));
        Assert.Throws<ArgumentOutOfRangeException>(() => a.Allocate(1, 0));
        Assert.Throws<ArgumentException>(() => a.Allocate(1, 3));
        FrameRun all = a.Allocate(8);
        Assert.Equal(0, a.FreeFrames);
        var e = Assert.Throws<OutOfMemoryException>(() => a.Allocate(1));
        Assert.Contains("no free run", e.Message);
        Assert.False(a.TryAllocate(1, 1, out _));
        a.Free(all);
        Assert.Equal(8, a.FreeFrames);
        Assert.Contains("double free", Assert.Throws<InvalidOperationException>(() => a.Free(all)).Message);
        // A run of another region is refused.
        using var other = DramArena.Create(Pfn.PageSize, space);
        Assert.Throws<ArgumentException>(() => a.Free(new FrameRun(other.PfnAt(0), 1)));
        Assert.Throws<ArgumentException>(() => a.Free(new FrameRun(arena.PfnAt(6), 3)));
        // Runs of no frames are not runs this allocator handed out, and leave the count alone.
        FrameRun one = a.Allocate(1);
        Assert.ThrowsAny<ArgumentException>(() => a.Free(one with { Frames = 0 }));
        Assert.ThrowsAny<ArgumentException>(() => a.Free(one with { Frames = -3 }));
        Assert.Equal(7, a.FreeFrames);
    }

    [Fact]
    public void ConcurrentAllocationsNeverOverlap()
    {
        var space = new PhysicalAddressSpace();
        using var arena = DramArena.Create(512 * Pfn.PageSize, space);
        var runs = new System.Collections.Concurrent.ConcurrentBag<FrameRun>();
        Parallel.For(0, 4, t =>
        {
            for (int i = 0; i < 200; i++)
            {
                if (arena.Allocator.TryAllocate(1 + (i % 3), 1, out FrameRun r)) runs.Add(r);
                if (i % 4 == 3 && runs.TryTake(out FrameRun back)) arena.Allocator.Free(back);
            }
        });
        var sorted = runs.OrderBy(r => r.First.Frame).ToList();
        for (int i = 1; i < sorted.Count; i++)
            Assert.True(sorted[i - 1].First.Frame + (ulong)sorted[i - 1].Frames <= sorted[i].First.Frame);
        Assert.Equal(512 - sorted.Sum(r => r.Frames), arena.Allocator.FreeFrames);
    }
}
