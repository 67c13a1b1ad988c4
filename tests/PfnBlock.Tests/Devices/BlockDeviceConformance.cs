using PfnBlock.Block;
using PfnBlock.Devices;
using PfnBlock.Memory;

namespace PfnBlock.Tests.Devices;

/// <summary>
/// The contract every <see cref="IBlockDevice"/> keeps, as one suite run against each device:
/// data written reads back (offset-stamped, random multi-vector layouts), bounds and alignment are
/// refused with the right status, flush/FUA/PREFLUSH, discard and write-zeroes, unsupported ops,
/// completion exactly once, splitting of oversized bios, unreachable frames, statistics.
/// Checks of stored data adapt to <see cref="DeviceFeatures.DiscardsData"/>. It runs on every
/// sample of every registered device kind and target (<see cref="ConformanceSamples"/>): a new
/// device joins by registering itself.
/// </summary>
public sealed class BlockDeviceConformance : IDisposable
{
    private IBlockDevice? _device;
    private IoBuffers? _buffers;
    private string? _sample;
    private readonly DeviceSet _set = new();
    private readonly int _seed = Random.Shared.Next();

    /// <summary>Picks the sample the test runs on.</summary>
    private void Use(string sample) => _sample = sample;

    /// <summary>Scratch files, deleted after the test.</summary>
    private Scratch Scratch { get; } = new();
    /// <summary>The device under test (created on first use).</summary>
    private IBlockDevice Device => _device ??= ConformanceSamples.Open(_sample!, Scratch, _set);
    /// <summary>DRAM buffers in the device's address space.</summary>
    private IoBuffers Buffers => _buffers ??= new IoBuffers(Device.AddressSpace, 48L << 20);

    private bool StoresData => (Device.Features & DeviceFeatures.DiscardsData) == 0;
    private int Lbs => Device.Limits.LogicalBlockSize;
    private int DmaAlign => Device.Limits.DmaAlignment;
    private long Capacity => Device.CapacityBytes;
    private string Ctx => $"{_sample}, seed {_seed}";

    public void Dispose()
    {
        _buffers?.Dispose();
        _set.Dispose();
        Scratch.Dispose();
        GC.SuppressFinalize(this);
    }

    // ---- helpers -------------------------------------------------------------------------

    /// <summary>Submits and waits; asserts the bio completed exactly once.</summary>
    private BlockStatus Run(Bio bio)
    {
        int calls = 0;
        BlockStatus status = default;
        using var done = new ManualResetEventSlim();
        bio.EndIo = b => { status = b.Status; Interlocked.Increment(ref calls); done.Set(); };
        Device.Submit(bio);
        Assert.True(done.Wait(TimeSpan.FromSeconds(30)), $"bio never completed ({Ctx})");
        Assert.Equal(1, Volatile.Read(ref calls));
        return status;
    }

    private BlockStatus Write(long offset, IoBuffers.Layout layout, BioFlags flags = BioFlags.None) =>
        Run(layout.AddTo(new Bio().Init(BioOp.Write, offset >> Bio.SectorShift, flags)));

    private BlockStatus Read(long offset, IoBuffers.Layout layout, BioFlags flags = BioFlags.None) =>
        Run(layout.AddTo(new Bio().Init(BioOp.Read, offset >> Bio.SectorShift, flags)));

    private static Bio NoData(BioOp op, long offset, long bytes, BioFlags flags = BioFlags.None)
    {
        var bio = new Bio().Init(op, offset >> Bio.SectorShift, flags);
        bio.Iter.Size = (uint)bytes;
        return bio;
    }

    /// <summary>Writes stamped data at <paramref name="offset"/> through a random layout and returns it.</summary>
    private byte[] WriteStamped(Random rng, long offset, int length, int generation, BioFlags flags = BioFlags.None)
    {
        using IoBuffers.Layout layout = Buffers.NewLayout(rng, length, align: DmaAlign);
        byte[] data = Stamp.Make(offset, length, generation);
        layout.Write(data);
        Assert.Equal(BlockStatus.Ok, Write(offset, layout, flags));
        return data;
    }

    /// <summary>Reads <paramref name="length"/> bytes at <paramref name="offset"/> through a random layout.</summary>
    private byte[] ReadBack(Random rng, long offset, int length, byte sentinel = 0xA5)
    {
        using IoBuffers.Layout layout = Buffers.NewLayout(rng, length, align: DmaAlign);
        layout.Fill(sentinel);
        Assert.Equal(BlockStatus.Ok, Read(offset, layout));
        return layout.Read();
    }

    /// <summary>Asserts equal bytes, naming the first difference instead of dumping arrays.</summary>
    private void AssertBytes(ReadOnlySpan<byte> expected, ReadOnlySpan<byte> actual, long deviceOffset, string what)
    {
        Assert.Equal(expected.Length, actual.Length);
        int diff = expected.CommonPrefixLength(actual);
        if (diff < expected.Length)
            Assert.Fail($"{what}: first difference at device byte {deviceOffset + diff}: expected 0x{expected[diff]:x2}, got 0x{actual[diff]:x2} ({Ctx})");
    }

    /// <summary>
    /// Checks a read against what the device should hold: the data, or for a data-discarding device
    /// no written data — the buffer untouched (null) or all zeros (zero), never a mix.
    /// </summary>
    private void AssertRead(ReadOnlySpan<byte> expected, byte[] actual, long offset, string what, byte sentinel = 0xA5)
    {
        if (StoresData) AssertBytes(expected, actual, offset, what);
        else Assert.True(actual.AsSpan().IndexOfAnyExcept(sentinel) < 0 || actual.AsSpan().IndexOfAnyExcept((byte)0) < 0,
            $"{what}: a device that stores nothing returned data ({Ctx})");
    }

    private long RandomOffset(Random rng, int length) => rng.NextInt64(0, (Capacity - length) / Lbs + 1) * Lbs;

    // ---- read after write ----------------------------------------------------------------

    [Theory, MemberData(nameof(ConformanceSamples.Names), MemberType = typeof(ConformanceSamples))]
    public void RandomWritesReadBackThroughRandomVectorLayouts(string sample)
    {
        Use(sample);
        var rng = new Random(_seed);
        byte[] shadow = new byte[Capacity]; // a new device reads as zeros
        for (int i = 0; i < 160; i++)
        {
            int blocks = rng.Next(4) == 0 ? rng.Next(1, (256 << 10) / Lbs) : rng.Next(1, 9);
            int length = blocks * Lbs;
            long offset = RandomOffset(rng, length);
            if (rng.Next(2) == 0)
            {
                byte[] data = WriteStamped(rng, offset, length, i);
                data.CopyTo(shadow, offset);
            }
            else
            {
                AssertRead(shadow.AsSpan((int)offset, length), ReadBack(rng, offset, length), offset, $"read {i} of {length} bytes");
            }
        }
        for (long off = 0; off < Capacity; off += 1 << 20)
        {
            int chunk = (int)Math.Min(1 << 20, Capacity - off);
            AssertRead(shadow.AsSpan((int)off, chunk), ReadBack(rng, off, chunk), off, "final sweep");
        }
    }

    [Theory, MemberData(nameof(ConformanceSamples.Names), MemberType = typeof(ConformanceSamples))]
    public void WritesOfVectorsWithOddLengthsAndOffsetsRoundTrip(string sample)
    {
        Use(sample);
        // Vectors of any byte length and offset the device's DMA alignment allows (for memory devices
        // even 1 byte, across frame boundaries), as long as the bio is whole blocks.
        var rng = new Random(_seed);
        for (int i = 0; i < 40; i++)
        {
            int length = rng.Next(1, 5) * Lbs;
            long offset = RandomOffset(rng, length);
            using IoBuffers.Layout layout = Buffers.NewLayout(rng, length, maxVecs: 32, align: DmaAlign);
            byte[] data = Stamp.Make(offset, length, 1000 + i);
            layout.Write(data);
            Assert.Equal(BlockStatus.Ok, Write(offset, layout));
            AssertRead(data, ReadBack(rng, offset, length), offset, $"odd layout {i}");
        }
    }

    [Theory, MemberData(nameof(ConformanceSamples.Names), MemberType = typeof(ConformanceSamples))]
    public void NeighboursOfAWriteAreUntouched(string sample)
    {
        Use(sample);
        var rng = new Random(_seed);
        long offset = 8 * (long)Lbs;
        byte[] before = WriteStamped(rng, offset - Lbs, 3 * Lbs, 1);
        byte[] middle = WriteStamped(rng, offset, Lbs, 2);
        byte[] all = ReadBack(rng, offset - Lbs, 3 * Lbs);
        AssertRead(before.AsSpan(0, Lbs), all[..Lbs], offset - Lbs, "block before");
        AssertRead(middle, all[Lbs..(2 * Lbs)], offset, "written block");
        AssertRead(before.AsSpan(2 * Lbs), all[(2 * Lbs)..], offset + Lbs, "block after");
    }

    [Theory, MemberData(nameof(ConformanceSamples.Names), MemberType = typeof(ConformanceSamples))]
    public void ConcurrentWritersOnDisjointRangesDoNotInterfere(string sample)
    {
        Use(sample);
        long half = Capacity / 2;
        Parallel.For(0, 2, t =>
        {
            var rng = new Random(_seed + t);
            byte[] shadow = new byte[half];
            for (int i = 0; i < 60; i++)
            {
                int length = rng.Next(1, 17) * Lbs;
                long local = rng.NextInt64(0, (half - length) / Lbs + 1) * Lbs;
                long offset = t * half + local;
                WriteStamped(rng, offset, length, i * 2 + t).CopyTo(shadow, local);
                AssertRead(shadow.AsSpan((int)local, length), ReadBack(rng, offset, length), offset, $"thread {t} op {i}");
            }
        });
    }

    [Theory, MemberData(nameof(ConformanceSamples.Names), MemberType = typeof(ConformanceSamples))]
    public void PluggedBatchesCompleteOnceAndMatchAModel(string sample)
    {
        Use(sample);
        // Batches of reads and writes on disjoint ranges submitted under one plug (more bios than a
        // plug holds, so it also flushes itself), some FUA, some longer than a batched copy takes,
        // layouts of any shape: each completes once, and reads see the model as it was before the batch.
        var rng = new Random(_seed);
        byte[] shadow = new byte[Capacity];
        for (int round = 0; round < 8; round++)
        {
            int count = rng.Next(2, BlockPlug.MaxBios + 9);
            long region = Capacity / count / Lbs * Lbs;
            if (region < Lbs) { count = (int)(Capacity / Lbs); region = Lbs; }
            var bios = new List<(Bio Bio, IoBuffers.Layout Layout, long Offset, byte[]? Written)>();
            var log = new CompletionLog();
            using var all = new CountdownEvent(count);
            BlockPlug.Start();
            try
            {
                for (int i = 0; i < count; i++)
                {
                    long maxBlocks = Math.Min(region / Lbs, rng.Next(4) == 0 ? (96 << 10) / Lbs : 8);
                    int length = (int)rng.NextInt64(1, maxBlocks + 1) * Lbs;
                    long offset = i * region + rng.NextInt64(0, (region - length) / Lbs + 1) * Lbs;
                    IoBuffers.Layout layout = Buffers.NewLayout(rng, length, maxVecs: rng.Next(1, 9), align: DmaAlign);
                    bool write = rng.Next(2) == 0;
                    byte[]? data = null;
                    if (write) layout.Write(data = Stamp.Make(offset, length, round * 100 + i));
                    else layout.Fill(0xA5);
                    BioFlags flags = write && rng.Next(5) == 0 ? BioFlags.Fua : BioFlags.None;
                    Bio bio = layout.AddTo(new Bio().Init(write ? BioOp.Write : BioOp.Read, offset >> Bio.SectorShift, flags));
                    bio.EndIo = b => { log.EndIo(b); all.Signal(); };
                    bios.Add((bio, layout, offset, data));
                    Device.Submit(bio);
                }
            }
            finally
            {
                BlockPlug.Finish();
            }
            Assert.True(all.Wait(TimeSpan.FromSeconds(30)), $"a plugged bio never completed ({Ctx})");
            foreach ((Bio bio, IoBuffers.Layout layout, long offset, byte[]? written) in bios)
            {
                Assert.Equal([BlockStatus.Ok], log.Of(bio));
                if (written is null) AssertRead(shadow.AsSpan((int)offset, layout.Length), layout.Read(), offset, $"plugged read, round {round}");
                layout.Dispose();
            }
            foreach ((_, _, long offset, byte[]? written) in bios)
                written?.CopyTo(shadow, offset);
        }
        for (long off = 0; off < Capacity; off += 1 << 20)
        {
            int chunk = (int)Math.Min(1 << 20, Capacity - off);
            AssertRead(shadow.AsSpan((int)off, chunk), ReadBack(rng, off, chunk), off, "sweep after the plugged batches");
        }
    }

    // ---- bounds and alignment ------------------------------------------------------------

    [Theory, MemberData(nameof(ConformanceSamples.Names), MemberType = typeof(ConformanceSamples))]
    public void TheLastBlockIsWritableAndOneMoreIsOutOfRange(string sample)
    {
        Use(sample);
        var rng = new Random(_seed);
        long last = Capacity - Lbs;
        byte[] data = WriteStamped(rng, last, Lbs, 7);
        AssertRead(data, ReadBack(rng, last, Lbs), last, "last block");

        using IoBuffers.Layout two = Buffers.Single(2 * Lbs);
        Assert.Equal(BlockStatus.OutOfRange, Write(last, two));
        Assert.Equal(BlockStatus.OutOfRange, Read(last, two));
        using IoBuffers.Layout one = Buffers.Single(Lbs);
        Assert.Equal(BlockStatus.OutOfRange, Write(Capacity, one));
        Assert.Equal(BlockStatus.OutOfRange, Read(Capacity, one));
        Assert.Equal(BlockStatus.OutOfRange, Run(one.AddTo(new Bio().Init(BioOp.Read, long.MaxValue / 1024))));
        Assert.Equal(BlockStatus.OutOfRange, Run(one.AddTo(new Bio().Init(BioOp.Read, -8))));
        if ((Device.Features & DeviceFeatures.Discard) != 0)
            Assert.Equal(BlockStatus.OutOfRange, Run(NoData(BioOp.Discard, last, 2 * Lbs)));
        if ((Device.Features & DeviceFeatures.WriteZeroes) != 0)
            Assert.Equal(BlockStatus.OutOfRange, Run(NoData(BioOp.WriteZeroes, Capacity, Lbs)));
        // The refused requests changed nothing.
        AssertRead(data, ReadBack(rng, last, Lbs), last, "last block after refusals");
    }

    [Theory, MemberData(nameof(ConformanceSamples.Names), MemberType = typeof(ConformanceSamples))]
    public void MisalignedRequestsAreInvalid(string sample)
    {
        Use(sample);
        using IoBuffers.Layout odd = Buffers.Single(Lbs + 100);
        Assert.Equal(BlockStatus.Invalid, Write(0, odd));
        using IoBuffers.Layout tiny = Buffers.Single(100);
        Assert.Equal(BlockStatus.Invalid, Read(0, tiny));
        if (Lbs > Bio.SectorSize)
        {
            // A 4096-byte-sector device refuses 512-byte granularity: sector not on a block, size not whole blocks.
            using IoBuffers.Layout block = Buffers.Single(Lbs);
            Assert.Equal(BlockStatus.Invalid, Write(Bio.SectorSize, block));
            Assert.Equal(BlockStatus.Invalid, Read(Lbs - Bio.SectorSize, block));
            using IoBuffers.Layout sector = Buffers.Single(Bio.SectorSize);
            Assert.Equal(BlockStatus.Invalid, Write(0, sector));
            using IoBuffers.Layout blockAndSector = Buffers.Single(Lbs + Bio.SectorSize);
            Assert.Equal(BlockStatus.Invalid, Read(Lbs, blockAndSector));
            if ((Device.Features & DeviceFeatures.Discard) != 0)
                Assert.Equal(BlockStatus.Invalid, Run(NoData(BioOp.Discard, Bio.SectorSize, Lbs)));
            if ((Device.Features & DeviceFeatures.WriteZeroes) != 0)
                Assert.Equal(BlockStatus.Invalid, Run(NoData(BioOp.WriteZeroes, 0, Bio.SectorSize)));
        }
        using IoBuffers.Layout aligned = Buffers.Single(Lbs);
        Assert.Equal(BlockStatus.Ok, Write(Lbs, aligned));
    }

    [Theory, MemberData(nameof(ConformanceSamples.Names), MemberType = typeof(ConformanceSamples))]
    public void EmptyRequestsAreInvalid(string sample)
    {
        Use(sample);
        Assert.Equal(BlockStatus.Invalid, Run(new Bio().Init(BioOp.Read, 0)));
        Assert.Equal(BlockStatus.Invalid, Run(new Bio().Init(BioOp.Write, 8)));
        BlockStatus expectDiscard = (Device.Features & DeviceFeatures.Discard) != 0 ? BlockStatus.Invalid : BlockStatus.NotSupported;
        Assert.Equal(expectDiscard, Run(NoData(BioOp.Discard, 0, 0)));
        BlockStatus expectZeroes = (Device.Features & DeviceFeatures.WriteZeroes) != 0 ? BlockStatus.Invalid : BlockStatus.NotSupported;
        Assert.Equal(expectZeroes, Run(NoData(BioOp.WriteZeroes, 0, 0)));
    }

    // ---- flush, FUA, PREFLUSH ------------------------------------------------------------

    [Theory, MemberData(nameof(ConformanceSamples.Names), MemberType = typeof(ConformanceSamples))]
    public void FlushFuaAndPreflushComplete(string sample)
    {
        Use(sample);
        var rng = new Random(_seed);
        Assert.Equal(BlockStatus.Ok, Run(new Bio().Init(BioOp.Flush, 0)));
        Assert.Equal(BlockStatus.Ok, Run(new Bio().Init(BioOp.Flush, 0, BioFlags.Preflush)));
        Assert.Equal(BlockStatus.Ok, Run(new Bio().Init(BioOp.Flush, 0, BioFlags.Fua)));
        byte[] fua = WriteStamped(rng, 0, 4 * Lbs, 1, BioFlags.Fua);
        byte[] pre = WriteStamped(rng, 4L * Lbs, 4 * Lbs, 2, BioFlags.Preflush);
        byte[] both = WriteStamped(rng, 8L * Lbs, 4 * Lbs, 3, BioFlags.Preflush | BioFlags.Fua);
        using IoBuffers.Layout layout = Buffers.NewLayout(rng, 12 * Lbs, align: DmaAlign);
        layout.Fill(0xA5);
        Assert.Equal(BlockStatus.Ok, Read(0, layout, BioFlags.Preflush));
        AssertRead([.. fua, .. pre, .. both], layout.Read(), 0, "FUA/PREFLUSH writes");
    }

    [Theory, MemberData(nameof(ConformanceSamples.Names), MemberType = typeof(ConformanceSamples))]
    public void AFlushCarryingDataIsInvalid(string sample)
    {
        Use(sample);
        using IoBuffers.Layout layout = Buffers.Single(Lbs);
        Assert.Equal(BlockStatus.Invalid, Run(layout.AddTo(new Bio().Init(BioOp.Flush, 0))));
    }

    // ---- discard and write-zeroes --------------------------------------------------------

    public static TheoryData<string, BioOp> SamplesAndZeroingOps => ConformanceSamples.Cross(BioOp.Discard, BioOp.WriteZeroes);

    [Theory, MemberData(nameof(SamplesAndZeroingOps))]
    public void DiscardAndWriteZeroesClearOnlyTheirRange(string sample, BioOp op)
    {
        Use(sample);
        DeviceFeatures needed = op == BioOp.Discard ? DeviceFeatures.Discard : DeviceFeatures.WriteZeroes;
        if ((Device.Features & needed) == 0)
        {
            Assert.Equal(BlockStatus.NotSupported, Run(NoData(op, 0, Lbs)));
            return;
        }
        var rng = new Random(_seed);
        long start = 16L * Lbs;
        int length = 64 * Lbs;
        byte[] data = WriteStamped(rng, start, length, 5);
        long cut = start + 8 * Lbs;
        int cutLength = 40 * Lbs;
        Assert.Equal(BlockStatus.Ok, Run(NoData(op, cut, cutLength)));
        byte[] after = ReadBack(rng, start, length);
        AssertRead(data.AsSpan(0, 8 * Lbs), after[..(8 * Lbs)], start, $"{op}: data before the range");
        AssertRead(data.AsSpan(48 * Lbs), after[(48 * Lbs)..], start + 48 * Lbs, $"{op}: data after the range");
        bool zeroes = op == BioOp.WriteZeroes || (Device.Features & DeviceFeatures.DiscardZeroesData) != 0;
        if (zeroes && StoresData)
            AssertBytes(new byte[cutLength], after.AsSpan(8 * Lbs, cutLength), cut, $"{op}: the range reads as zeros");
    }

    /// <summary>
    /// What the allocation map may answer (<see cref="IAllocationMap"/>): runs of 1 to the asked
    /// sectors that tile the device, and "zero" or "hole" only where reads return zeros. Written,
    /// discarded and zeroed ranges at random, then the whole device walked in uneven windows.
    /// </summary>
    [Theory, MemberData(nameof(ConformanceSamples.Names), MemberType = typeof(ConformanceSamples))]
    public void TheAllocationMapNeverCallsDataZeros(string sample)
    {
        Use(sample);
        if ((Device.Features & DeviceFeatures.AllocationMap) == 0) return;
        var map = Assert.IsAssignableFrom<IAllocationMap>(Device);
        var rng = new Random(_seed);
        long span = Math.Min(Capacity, 8L << 20);
        for (int i = 0; i < 24; i++)
        {
            int length = rng.Next(1, 65) * Lbs;
            long offset = rng.NextInt64(0, (span - length) / Lbs + 1) * Lbs;
            switch (rng.Next(4))
            {
                case 0: WriteStamped(rng, offset, length, i + 1); break;
                case 1:
                    // Zeros written as data: the map may call them zero, or data.
                    using (IoBuffers.Layout zeros = Buffers.NewLayout(rng, length, align: DmaAlign)) { zeros.Fill(0); Assert.Equal(BlockStatus.Ok, Write(offset, zeros)); }
                    break;
                case 2 when (Device.Features & DeviceFeatures.Discard) != 0: Assert.Equal(BlockStatus.Ok, Run(NoData(BioOp.Discard, offset, length))); break;
                case 3 when (Device.Features & DeviceFeatures.WriteZeroes) != 0: Assert.Equal(BlockStatus.Ok, Run(NoData(BioOp.WriteZeroes, offset, length))); break;
            }
        }
        long sectors = span >> Bio.SectorShift, sector = 0;
        while (sector < sectors)
        {
            long asked = Math.Min(sectors - sector, rng.Next(1, 4096));
            AllocationState state = map.QueryAllocation(sector, asked, out long run);
            Assert.True(run >= 1 && run <= asked, $"run {run} of {asked} asked at sector {sector} ({Ctx})");
            if (state != AllocationState.Data && StoresData)
                for (long s = sector; s < sector + run; s += 2048)
                {
                    int n = (int)Math.Min(2048, sector + run - s) << Bio.SectorShift;
                    // A read starting inside a logical block is not possible: widen to whole blocks (the map answers in them).
                    long from = (s << Bio.SectorShift) / Lbs * Lbs, to = ((s << Bio.SectorShift) + n + Lbs - 1) / Lbs * Lbs;
                    byte[] back = ReadBack(rng, from, (int)(to - from));
                    AssertBytes(new byte[n], back.AsSpan((int)((s << Bio.SectorShift) - from), n), s << Bio.SectorShift, $"{state} run at sector {sector}+{run}");
                }
            sector += run;
        }
    }

    // ---- unsupported ops and completion --------------------------------------------------

    [Theory, MemberData(nameof(ConformanceSamples.Names), MemberType = typeof(ConformanceSamples))]
    public void UnknownOpsAreNotSupported(string sample)
    {
        Use(sample);
        using IoBuffers.Layout layout = Buffers.Single(Lbs);
        Assert.Equal(BlockStatus.NotSupported, Run(layout.AddTo(new Bio().Init((BioOp)200, 0))));
        Assert.Equal(BlockStatus.NotSupported, Run(NoData((BioOp)77, 0, Lbs)));
    }

    [Theory, MemberData(nameof(ConformanceSamples.Names), MemberType = typeof(ConformanceSamples))]
    public void EveryKindOfRequestCompletesExactlyOnceAlsoWhenAwaited(string sample)
    {
        Use(sample);
        var rng = new Random(_seed);
        using IoBuffers.Layout good = Buffers.NewLayout(rng, 8 * Lbs, align: DmaAlign);
        Func<Bio>[] requests =
        [
            () => good.AddTo(new Bio().Init(BioOp.Write, 0)),
            () => good.AddTo(new Bio().Init(BioOp.Read, 0)),
            () => good.AddTo(new Bio().Init(BioOp.Read, Capacity >> Bio.SectorShift)),
            () => new Bio().Init(BioOp.Write, 0),
            () => new Bio().Init(BioOp.Flush, 0),
            () => NoData(BioOp.Discard, 0, Lbs),
            () => NoData(BioOp.WriteZeroes, 0, Lbs),
            () => NoData((BioOp)99, 0, Lbs),
            () => new Bio().Init(BioOp.Read, 0).AddVec(new Pfn(1UL << 45, PfnFlags.Dev), 0, (uint)Lbs),
        ];
        foreach (Func<Bio> make in requests)
        {
            BlockStatus viaCallback = Run(make());
            Bio awaited = make();
            Assert.Equal(viaCallback, Device.SubmitAndWait(awaited));
            Assert.Equal(viaCallback, awaited.Status);
        }
    }

    [Theory, MemberData(nameof(ConformanceSamples.Names), MemberType = typeof(ConformanceSamples))]
    public async Task AwaitedRequestsComplete(string sample)
    {
        Use(sample);
        var rng = new Random(_seed);
        using IoBuffers.Layout layout = Buffers.NewLayout(rng, 4 * Lbs, align: DmaAlign);
        byte[] data = Stamp.Make(Lbs, 4 * Lbs, 9);
        layout.Write(data);
        Assert.Equal(BlockStatus.Ok, await Device.SubmitAsync(layout.AddTo(new Bio().Init(BioOp.Write, Lbs >> Bio.SectorShift))));
        layout.Fill(0xA5);
        Assert.Equal(BlockStatus.Ok, await Device.SubmitAsync(layout.AddTo(new Bio().Init(BioOp.Read, Lbs >> Bio.SectorShift))));
        AssertRead(data, layout.Read(), Lbs, "awaited read");
    }

    // ---- oversized bios ------------------------------------------------------------------

    [Theory, MemberData(nameof(ConformanceSamples.Names), MemberType = typeof(ConformanceSamples))]
    public void BiosLargerThanTheLimitAreSplitAndStillCorrect(string sample)
    {
        Use(sample);
        var rng = new Random(_seed);
        int max = Device.Limits.MaxBytesPerBio;
        // Three parts and a bit where the limit allows it on this device, else the whole device.
        long wanted = Math.Min(3L * max + 3 * Lbs, Capacity);
        int length = (int)(wanted / Lbs * Lbs);
        for (int round = 0; round < 3; round++) // the split bios come back from the pool in later rounds
        {
            long offset = round == 0 ? 0 : RandomOffset(rng, length / 2);
            int len = round == 0 ? length : length / 2 / Lbs * Lbs;
            DiskStatsSnapshot before = Device.Stats.Snapshot();
            byte[] data = WriteStamped(rng, offset, len, 50 + round, round == 1 ? BioFlags.Preflush | BioFlags.Fua : BioFlags.None);
            DiskStatsSnapshot after = Device.Stats.Snapshot();
            // The device counts the bio once, as its submitter sent it, however it was split.
            Assert.Equal(0, after.Write.Merges - before.Write.Merges);
            Assert.Equal(1, after.Write.Ios - before.Write.Ios);
            Assert.Equal(len >> Bio.SectorShift, after.Write.Sectors - before.Write.Sectors); // every sector counted once
            Assert.Equal(0, after.InFlight);
            AssertRead(data, ReadBack(rng, offset, len), offset, $"oversized bio round {round}");
        }
    }

    [Theory, MemberData(nameof(ConformanceSamples.Names), MemberType = typeof(ConformanceSamples))]
    public void AnUnreachableVectorInsideAnOversizedBioFailsItOnce(string sample)
    {
        Use(sample);
        int max = Device.Limits.MaxBytesPerBio;
        int length = (int)Math.Min(2L * max + 4 * Lbs, Capacity / 2) / Lbs * Lbs;
        using IoBuffers.Layout head = Buffers.Single(length / 2);
        using IoBuffers.Layout tail = Buffers.Single(length - length / 2 - Lbs);
        var bio = new Bio().Init(BioOp.Write, 0);
        head.AddTo(bio).AddVec(new Pfn(1UL << 45, PfnFlags.Dev), 0, (uint)Lbs);
        tail.AddTo(bio);
        BlockStatus status = Run(bio);
        if (StoresData) Assert.Equal(BlockStatus.Invalid, status);
        else Assert.True(status is BlockStatus.Invalid or BlockStatus.Ok, $"got {status} ({Ctx})");
        Assert.Equal(0, Device.Stats.Snapshot().InFlight);
    }

    // ---- frames the device cannot reach --------------------------------------------------

    [Theory, MemberData(nameof(ConformanceSamples.Names), MemberType = typeof(ConformanceSamples))]
    public void VectorsWithUnreachableFramesFailTheBioInsteadOfTheProcess(string sample)
    {
        Use(sample);
        var rng = new Random(_seed);
        byte[] data = WriteStamped(rng, 0, 4 * Lbs, 3);
        using var removed = DramArena.Create(1 << 20, Device.AddressSpace, "removed");
        Pfn gone = removed.PfnAt(0);
        removed.Dispose();
        using var deviceOnly = new DeviceOnlyRegion(16);
        Device.AddressSpace.Add(deviceOnly);
        using IoBuffers.Layout edge = Buffers.Single(Lbs);
        Pfn lastFrame = Buffers.Arena.PfnAt(Buffers.Arena.FrameCount - 1);

        (string What, Func<Bio> Make)[] cases =
        [
            ("never registered", () => new Bio().Init(BioOp.Write, 0).AddVec(new Pfn(1UL << 45, PfnFlags.Dev), 0, (uint)Lbs)),
            ("removed region", () => new Bio().Init(BioOp.Write, 0).AddVec(gone, 0, (uint)Lbs)),
            ("device-only region", () => new Bio().Init(BioOp.Write, 0).AddVec(deviceOnly.PfnAt(0), 0, (uint)Lbs)),
            // Partly reachable: a stacked target may write the reachable part before the rest fails
            // (a failed write leaves its range undefined), so it goes beyond the data checked below.
            ("runs past its region", () => new Bio().Init(BioOp.Write, 64).AddVec(lastFrame, 0, 2u * Pfn.PageSize)),
            ("pfn 0", () => new Bio().Init(BioOp.Write, 0).AddVec(default, 0, (uint)Lbs)),
            ("read into a removed region", () => new Bio().Init(BioOp.Read, 0).AddVec(gone, 0, (uint)Lbs)),
        ];
        foreach ((string what, Func<Bio> make) in cases)
        {
            BlockStatus status = Run(make());
            if (StoresData) Assert.True(status == BlockStatus.Invalid, $"{what}: expected Invalid, got {status} ({Ctx})");
            else Assert.True(status is BlockStatus.Invalid or BlockStatus.Ok, $"{what}: got {status} ({Ctx})");
        }
        AssertRead(data, ReadBack(rng, 0, 4 * Lbs), 0, "data after refused writes");
    }

    // ---- statistics ----------------------------------------------------------------------

    [Theory, MemberData(nameof(ConformanceSamples.Names), MemberType = typeof(ConformanceSamples))]
    public void DiskStatsCountIosAndSectors(string sample)
    {
        Use(sample);
        var rng = new Random(_seed);
        Assert.Equal(default, Device.Stats.Snapshot());
        long readSectors = 0, writeSectors = 0;
        int reads = 0, writes = 0, flushes = 0;
        for (int i = 0; i < 30; i++)
        {
            int length = Lbs * rng.Next(1, Math.Max(2, Math.Min(16, Device.Limits.MaxBytesPerBio / Lbs) + 1));
            long offset = RandomOffset(rng, length);
            using IoBuffers.Layout layout = Buffers.NewLayout(rng, length, align: DmaAlign);
            switch (rng.Next(3))
            {
                case 0: Assert.Equal(BlockStatus.Ok, Read(offset, layout)); reads++; readSectors += length >> Bio.SectorShift; break;
                case 1: Assert.Equal(BlockStatus.Ok, Write(offset, layout)); writes++; writeSectors += length >> Bio.SectorShift; break;
                default: Assert.Equal(BlockStatus.Ok, Run(new Bio().Init(BioOp.Flush, 0))); flushes++; break;
            }
            // Refused requests are not counted.
            Assert.Equal(BlockStatus.OutOfRange, Read(Capacity, layout));
        }
        DiskStatsSnapshot s = Device.Stats.Snapshot();
        Assert.Equal(reads, s.Read.Ios);
        Assert.Equal(readSectors, s.Read.Sectors);
        Assert.Equal(writes, s.Write.Ios);
        Assert.Equal(writeSectors, s.Write.Sectors);
        // A device without a volatile cache completes flushes at the edge, without accounting.
        Assert.Equal((Device.Features & DeviceFeatures.WriteCache) != 0 ? flushes : 0, s.Flush.Ios);
        Assert.Equal(0, s.InFlight);
        Assert.Equal(0, s.Read.Merges + s.Write.Merges);
        Assert.Equal(17, s.ToString().Split(' ').Length); // the /sys/block/*/stat field count
    }

    // ---- lifetime and DAX ----------------------------------------------------------------

    [Theory, MemberData(nameof(ConformanceSamples.Names), MemberType = typeof(ConformanceSamples))]
    public void ADisposedDeviceFailsRequestsOnce(string sample)
    {
        Use(sample);
        using IoBuffers.Layout layout = Buffers.Single(Lbs);
        Device.Dispose();
        Assert.Equal(BlockStatus.IoError, Read(0, layout));
        Assert.Equal(BlockStatus.IoError, Run(new Bio().Init(BioOp.Flush, 0)));
    }

    [Theory, MemberData(nameof(ConformanceSamples.Names), MemberType = typeof(ConformanceSamples))]
    public unsafe void DirectAccessIsOfferedExactlyWhenAdvertisedAndSeesWrittenData(string sample)
    {
        Use(sample);
        bool advertised = (Device.Features & DeviceFeatures.Dax) != 0;
        if (!advertised)
        {
            // A stacked device may implement the interface yet offer nothing when its targets cannot.
            if (Device is IDaxDevice none) Assert.Equal(0, none.DirectAccess(0, 1, out _));
            return;
        }
        var dax = Assert.IsAssignableFrom<IDaxDevice>(Device);
        var rng = new Random(_seed);
        long page = 3;
        byte[] data = WriteStamped(rng, page * Pfn.PageSize, 2 * Pfn.PageSize, 11);
        long pages = dax.DirectAccess(page, 2, out DaxRange range);
        Assert.Equal(2, pages);
        Assert.True(new ReadOnlySpan<byte>(range.Address, 2 * Pfn.PageSize).SequenceEqual(data));
        Assert.True(Device.AddressSpace.KmapSpan(range.Pfn, 0, 2 * Pfn.PageSize).SequenceEqual(data));
        range.Unpin();
        long total = Capacity / Pfn.PageSize;
        Assert.Equal(1, dax.DirectAccess(total - 1, 5, out DaxRange last));
        last.Unpin();
        Assert.Equal(0, dax.DirectAccess(total, 1, out _));
        Assert.Equal(0, dax.DirectAccess(-1, 1, out _));
    }

    [Theory, MemberData(nameof(ConformanceSamples.Names), MemberType = typeof(ConformanceSamples))]
    public unsafe void ADiscardOfAPinnedRangeWaitsForTheUnpin(string sample)
    {
        Use(sample);
        if ((Device.Features & (DeviceFeatures.Dax | DeviceFeatures.Discard)) != (DeviceFeatures.Dax | DeviceFeatures.Discard)) return;
        var dax = (IDaxDevice)Device;
        var rng = new Random(_seed);
        byte[] data = WriteStamped(rng, 0, 4 * Pfn.PageSize, 12);
        Assert.Equal(2, dax.DirectAccess(1, 2, out DaxRange range));
        var done = new ManualResetEventSlim();
        BlockStatus status = BlockStatus.IoError;
        Bio discard = NoData(BioOp.Discard, 0, 4 * Pfn.PageSize);
        discard.EndIo = b => { status = b.Status; done.Set(); };
        Device.Submit(discard);
        // While pinned, the data stays put and new pins of the range are refused.
        Assert.False(done.Wait(50), $"the discard completed under a pin ({Ctx})");
        Assert.True(new ReadOnlySpan<byte>(range.Address, 2 * Pfn.PageSize).SequenceEqual(data.AsSpan(Pfn.PageSize, 2 * Pfn.PageSize)));
        Assert.Equal(0, dax.DirectAccess(2, 1, out _));
        range.Unpin();
        Assert.True(done.Wait(TimeSpan.FromSeconds(10)), $"the discard never completed after the unpin ({Ctx})");
        Assert.Equal(BlockStatus.Ok, status);
        Assert.True(Device.Stats.Snapshot().Requeues > 0 || Device is MappedDevice);
        if ((Device.Features & DeviceFeatures.DiscardZeroesData) != 0)
            AssertBytes(new byte[4 * Pfn.PageSize], ReadBack(rng, 0, 4 * Pfn.PageSize), 0, "discarded range");
    }
}

/// <summary>Device memory the CPU cannot map (a peer device's BAR): registered, but never kmappable.</summary>
internal sealed unsafe class DeviceOnlyRegion(long frames) : MemoryRegion("device-only", RegionKind.DeviceOnly, frames, null, PfnFlags.None, null);
