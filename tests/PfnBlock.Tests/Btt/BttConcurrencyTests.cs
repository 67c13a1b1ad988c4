using PfnBlock.Block;
using PfnBlock.CrashTest;
using PfnBlock.Devices.Btt;
using PfnBlock.Memory;
using PfnBlock.Namespaces;
using PfnBlock.Namespaces.Btt;

namespace PfnBlock.Tests.Btt;

/// <summary>Writers and readers on the same few sectors at once: no read ever sees a torn sector.</summary>
public sealed class BttConcurrencyTests : IDisposable
{
    private readonly BttScratch _s = new(frames: 64);

    public void Dispose() => _s.Dispose();

    [Theory]
    [InlineData(4096u, 0)]
    [InlineData(512u, 0)]
    [InlineData(4096u, 1)]
    public void OverlappingWritersAndReadersNeverSeeTornSectors(uint sectorSize, int lanes)
    {
        string path = _s.SectorNamespace("conc", sectorSize: sectorSize);
        using PmemNamespace ns = PmemNamespace.Open(path);
        using BttDevice dev = BttDevice.OpenNamespace(ns, lanes);
        const int Sectors = 8, Writers = 3, Readers = 3;
        int lbs = (int)sectorSize;
        long version = 0, reads = 0, writes = 0;
        var failures = new System.Collections.Concurrent.ConcurrentQueue<string>();
        var frames = Enumerable.Range(0, Writers + Readers).Select(_ => _s.Frames(1)).ToArray();
        long until = Environment.TickCount64 + 1500;
        var threads = new List<Thread>();
        for (int t = 0; t < Writers + Readers; t++)
        {
            int me = t;
            bool writer = t < Writers;
            threads.Add(new Thread(() =>
            {
                var rng = new Random(me);
                var bio = new Bio();
                FrameRun f = frames[me];
                while (Environment.TickCount64 < until && failures.IsEmpty)
                {
                    long lba = rng.Next(Sectors);
                    // Two-sector bios too: each sector must still be whole, not the pair.
                    int count = lba < Sectors - 1 && rng.Next(4) == 0 && lbs * 2 <= Pfn.PageSize ? 2 : 1;
                    Span<byte> buf = _s.Span(f, count * lbs);
                    if (writer)
                    {
                        for (int i = 0; i < count; i++) SectorPattern.Fill(buf.Slice(i * lbs, lbs), lba + i, Interlocked.Increment(ref version));
                        bio.Init(BioOp.Write, lba * lbs >> Bio.SectorShift).AddVec(f.First, 0, (uint)(count * lbs));
                        if (dev.SubmitAndWait(bio) != BlockStatus.Ok) failures.Enqueue("write failed");
                        Interlocked.Increment(ref writes);
                    }
                    else
                    {
                        bio.Init(BioOp.Read, lba * lbs >> Bio.SectorShift).AddVec(f.First, 0, (uint)(count * lbs));
                        if (dev.SubmitAndWait(bio) != BlockStatus.Ok) failures.Enqueue("read failed");
                        for (int i = 0; i < count; i++)
                            if (SectorPattern.Decode(buf.Slice(i * lbs, lbs), lba + i) < 0) failures.Enqueue($"torn or foreign read of sector {lba + i}");
                        Interlocked.Increment(ref reads);
                    }
                }
            }));
        }
        threads.ForEach(t => t.Start());
        threads.ForEach(t => t.Join());
        Assert.True(failures.IsEmpty, string.Join("\n", failures.Take(5)));
        Assert.True(reads > 1000 && writes > 1000, $"too little overlap: {reads} reads, {writes} writes");
        dev.Dispose();
        Assert.True(BttCheck.Run(path, false).Consistent);
    }
}
