using System.Diagnostics;
using PfnBlock.Block;
using PfnBlock.Devices.Pmem;
using PfnBlock.Memory;
using PfnBlock.Namespaces;

namespace PfnBlock.Tests.Devices;

/// <summary>
/// Direct-access pins against discard, write-zeroes and teardown, raced: while a range is pinned no
/// byte of it is zeroed (writes may still change it, as DAX allows), every discard completes once
/// the pins are gone, and a device is not unmapped under a pin.
/// </summary>
public sealed class PinRaceTests : IDisposable
{
    private readonly Scratch _scratch = new();

    public void Dispose() => _scratch.Dispose();

    public static TheoryData<DescriptorMapKind> Kinds => [.. DescriptorMaps.All];

    [Theory]
    [MemberData(nameof(Kinds))]
    public unsafe void ZeroingNeverLandsUnderAPin(DescriptorMapKind kind)
    {
        const long bytes = 4 << 20;
        using var dev = new PmemDevice(PmemNamespace.Create(_scratch.NewPath("pins"), new NamespaceCreateOptions { Size = bytes + (1 << 20), MapKind = kind }));
        long pages = dev.CapacityBytes / Pfn.PageSize;
        using var arena = DramArena.Create(1 << 20, dev.AddressSpace);
        // Every byte starts non-zero (stamps never contain a zero byte).
        for (long p = 0; p < pages; p += 64)
        {
            int n = (int)Math.Min(64, pages - p);
            Span<byte> mem = arena.AddressSpace!.KmapSpan(arena.PfnAt(0), 0, n * Pfn.PageSize);
            Stamp.Make(p * Pfn.PageSize, mem.Length, 1).CopyTo(mem);
            Assert.Equal(BlockStatus.Ok, dev.SubmitAndWait(new Bio().Init(BioOp.Write, p * 8).AddVec(arena.PfnAt(0), 0, (uint)mem.Length)));
        }

        long violations = 0, pinsTaken = 0, pinsRefused = 0, zeroings = 0, zeroingErrors = 0, writes = 0;
        var stop = Stopwatch.StartNew();
        // At least 800 ms, and on a loaded machine on until every side did enough to race (at most 20 s).
        bool Enough() => Volatile.Read(ref pinsTaken) > 100 && Volatile.Read(ref zeroings) > 20 && Volatile.Read(ref writes) > 20
            && dev.Stats.Snapshot().Requeues > 0;
        bool Running() => stop.ElapsedMilliseconds < 800 || (stop.ElapsedMilliseconds < 20_000 && !Enough());

        void Pinner(int seed)
        {
            var rng = new Random(seed);
            var nonZero = new bool[16 * Pfn.PageSize];
            while (Running())
            {
                long first = rng.NextInt64(0, pages - 16);
                int n = rng.Next(1, 17);
                if (dev.DirectAccess(first, n, out DaxRange range) != n) { Interlocked.Increment(ref pinsRefused); continue; }
                Interlocked.Increment(ref pinsTaken);
                var span = new ReadOnlySpan<byte>(range.Address, n * Pfn.PageSize);
                for (int i = 0; i < span.Length; i++) nonZero[i] = span[i] != 0;
                Thread.SpinWait(rng.Next(100, 20_000));
                for (int i = 0; i < span.Length; i++)
                    if (nonZero[i] && span[i] == 0) { Interlocked.Increment(ref violations); break; }
                range.Unpin();
            }
        }

        void Zeroer()
        {
            var rng = new Random(99);
            while (Running())
            {
                long first = rng.NextInt64(0, pages - 32);
                var bio = new Bio().Init(rng.Next(2) == 0 ? BioOp.Discard : BioOp.WriteZeroes, first * 8);
                bio.Iter.Size = (uint)(rng.Next(1, 33) * Pfn.PageSize);
                if (dev.SubmitAndWait(bio) != BlockStatus.Ok) Interlocked.Increment(ref zeroingErrors);
                Interlocked.Increment(ref zeroings);
            }
        }

        void Writer()
        {
            var rng = new Random(7);
            using var buf = DramArena.Create(64 * Pfn.PageSize, dev.AddressSpace);
            while (Running())
            {
                long first = rng.NextInt64(0, pages - 16);
                int n = rng.Next(1, 17);
                Span<byte> mem = buf.AddressSpace!.KmapSpan(buf.PfnAt(0), 0, n * Pfn.PageSize);
                Stamp.Make(first * Pfn.PageSize, mem.Length, rng.Next()).CopyTo(mem);
                Assert.Equal(BlockStatus.Ok, dev.SubmitAndWait(new Bio().Init(BioOp.Write, first * 8).AddVec(buf.PfnAt(0), 0, (uint)mem.Length)));
                Interlocked.Increment(ref writes);
            }
        }

        Thread[] all = [new(() => Pinner(1)), new(() => Pinner(2)), new(Zeroer), new(Writer)];
        foreach (Thread t in all) t.Start();
        foreach (Thread t in all) Assert.True(t.Join(TimeSpan.FromSeconds(60)), "a thread hung");
        Assert.Equal(0, violations);
        Assert.Equal(0, zeroingErrors);
        Assert.True(pinsTaken > 100 && zeroings > 20 && writes > 20, $"pins {pinsTaken}, zeroings {zeroings}, writes {writes}");
        Assert.False(dev.Pins.AnyPinned);
        Assert.True(dev.Stats.Snapshot().Requeues > 0, "no zeroing ever met a pin: the race was not exercised");
    }

    [Theory]
    [MemberData(nameof(Kinds))]
    public void TeardownWaitsForThePinsToGo(DescriptorMapKind kind)
    {
        var dev = new PmemDevice(PmemNamespace.Create(_scratch.NewPath("teardown"), new NamespaceCreateOptions { Size = 2 << 20, MapKind = kind }));
        Assert.Equal(4, dev.DirectAccess(0, 4, out DaxRange range));
        var disposer = new Thread(dev.Dispose);
        disposer.Start();
        Assert.False(disposer.Join(200), "the device unmapped under a pin");
        // No new pins while it goes away.
        Assert.Equal(0, dev.DirectAccess(8, 1, out _));
        // Nor can the namespace be destroyed while it is open (its claim is held).
        Assert.Throws<NamespaceInUseException>(() => PmemNamespace.Destroy(dev.Namespace.Path, force: true));
        range.Unpin();
        Assert.True(disposer.Join(TimeSpan.FromSeconds(10)));
    }
}
