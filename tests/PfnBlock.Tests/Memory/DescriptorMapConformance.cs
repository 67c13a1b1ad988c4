using CsCheck;
using PfnBlock.Block;
using PfnBlock.Devices;
using PfnBlock.Devices.Pmem;
using PfnBlock.Memory;
using PfnBlock.Namespaces;

namespace PfnBlock.Tests.Memory;

/// <summary>
/// Every descriptor map of the thread against one model, on a real namespace of that map kind:
/// the descriptor of frame i (its own state, its reference-count head), reference counts as pins
/// move them, alias sharing (two users of one frame — a DAX range and a pin by pfn — count in the
/// same place), fences, the cost each kind reports, and the split of a huge descriptor. The
/// temporary map is held to the same model and shown to break alias sharing, as Ingo and Al said
/// it would.
/// </summary>
public sealed unsafe class DescriptorMapConformance : IDisposable
{
    private readonly Scratch _scratch = new();
    public void Dispose() => _scratch.Dispose();

    public static TheoryData<DescriptorMapKind> Kinds => [.. DescriptorMaps.All];

    private PmemNamespace Create(DescriptorMapKind kind, PhysicalAddressSpace space, long size = 6 << 20) =>
        PmemNamespace.Create(_scratch.NewPath(DescriptorMaps.Name(kind)), new NamespaceCreateOptions { Size = size, Align = 4096, MapKind = kind }, space);

    /// <summary>The model: which frames share a reference count.</summary>
    private static long Unit(IPageDescriptorMap map, long frame) => frame / map.FramesPerDescriptor;

    [Theory]
    [MemberData(nameof(Kinds))]
    public void EachFrameHasTheDescriptorTheModelSays(DescriptorMapKind kind)
    {
        var space = new PhysicalAddressSpace();
        using PmemNamespace ns = Create(kind, space);
        IPageDescriptorMap map = ns.Region.Descriptors;
        long frames = ns.Region.FrameCount;
        Assert.Equal(kind, map.Kind);
        Assert.Equal(kind, ns.Region.Pins.Kind);
        Assert.Equal(kind != DescriptorMapKind.None, ns.Region.PfnAt(0).IsDevMap);
        foreach (long i in (long[])[0, 1, 63, 64, 511, 512, frames - 1])
        {
            PageDescriptor* d = map.Get(i);
            if (kind == DescriptorMapKind.None) { Assert.True(d == null); continue; }
            Assert.True(d != null);
            // Its own state names the frame (a 2 MiB descriptor names the first frame of its 2 MiB).
            Assert.Equal((ulong)(Unit(map, i) * map.FramesPerDescriptor), d->Index);
            if (map.IsStable)
            {
                Assert.True(map.Get(i) == d, "a stable map gave two descriptors for one frame");
                Assert.True(map.Head(i) == map.Head(Unit(map, i) * map.FramesPerDescriptor));
            }
            else
            {
                Assert.Equal((ulong)PageFlags.Transient, d->Flags & (ulong)PageFlags.Transient);
                PageDescriptor* again = map.Get(i);
                Assert.True(again != d, "two temporary lookups of one frame shared a descriptor");
                map.Put(again);
            }
            map.Put(d);
        }
        if (kind == DescriptorMapKind.None) return;
        Assert.Throws<ArgumentOutOfRangeException>(() => (nint)map.Head(frames));
        Assert.Throws<ArgumentOutOfRangeException>(() => (nint)map.Get(-1));
    }

    [Theory]
    [MemberData(nameof(Kinds))]
    public void PinsCountPerDescriptorUnitAndAliasesShareTheCount(DescriptorMapKind kind)
    {
        var space = new PhysicalAddressSpace();
        using var dev = new PmemDevice(Create(kind, space));
        IPageDescriptorMap map = dev.Namespace.Region.Descriptors;
        IFramePins pins = dev.Namespace.Region.Pins;

        // Two users of frame 5: an NBD-style DAX range and a pin by pfn (an O_DIRECT transfer into it).
        Assert.Equal(2, dev.DirectAccess(4, 2, out DaxRange range));
        FramePin byPfn = space.Pin(dev.Namespace.Region.PfnAt(5), 1);
        Assert.True(byPfn.IsPinned);
        Assert.Equal(2, pins.PinCount(5));
        Assert.Equal(kind == DescriptorMapKind.Huge ? 2 : 1, pins.PinCount(4));
        Assert.Equal(kind == DescriptorMapKind.Huge ? 2 : 0, pins.PinCount(6)); // a 2 MiB descriptor pins its neighbours
        if (map.IsStable && kind != DescriptorMapKind.None)
            Assert.Equal(2, map.Head(5)->RefCount); // the one descriptor both users see
        Assert.True(pins.IsPinned(5, 1));
        range.Unpin();
        Assert.Equal(1, pins.PinCount(5));
        byPfn.Unpin();
        Assert.Equal(0, pins.PinCount(5));
        Assert.False(pins.AnyPinned);
    }

    [Theory]
    [MemberData(nameof(Kinds))]
    public void TwoMappingsOfTheSameFramesSeeOneCount(DescriptorMapKind kind)
    {
        // Two dm-linear tables alias one namespace: a maps it whole, b from its page 128 on.
        string path = _scratch.NewPath(DescriptorMaps.Name(kind));
        PmemNamespace.Create(path, new NamespaceCreateOptions { Size = 6 << 20, Align = 4096, MapKind = kind }, new PhysicalAddressSpace()).Dispose();
        var space = new PhysicalAddressSpace();
        using var set = new DeviceSet(space);
        var pmem = (PmemDevice)set.Open($"pmem:{path}");
        long sectors = pmem.CapacitySectors;
        var a = (IDaxDevice)set.Open(Table($"0 {sectors} linear pmem:{path} 0\n"));
        var b = (IDaxDevice)set.Open(Table($"0 {sectors - 1024} linear pmem:{path} 1024\n"));
        Assert.Equal(1, a.DirectAccess(130, 1, out DaxRange viaA));
        Assert.Equal(1, b.DirectAccess(2, 1, out DaxRange viaB));
        Assert.True(viaA.Address == viaB.Address && viaA.Pfn == viaB.Pfn);
        IFramePins pins = pmem.Namespace.Region.Pins;
        // Both mappings' pins are on frame 130, whichever alias took them (Ingo and Al: one descriptor per pfn).
        Assert.Equal(2, pins.PinCount(130));
        IPageDescriptorMap map = pmem.Namespace.Region.Descriptors;
        if (map.IsStable && kind != DescriptorMapKind.None) Assert.Equal(2, map.Head(130)->RefCount);
        // A discard through either alias waits for both: its range counts as pinned until the last goes.
        viaA.Unpin();
        Assert.True(pins.IsPinned(130, 1));
        // The huge map's 2 MiB descriptor also holds frame 200 (false sharing of a coarse descriptor).
        Assert.Equal(kind == DescriptorMapKind.Huge, pins.IsPinned(200, 1));
        viaB.Unpin();
        Assert.False(pins.AnyPinned);
    }

    private string Table(string text)
    {
        string path = _scratch.NewPath("t.table");
        File.WriteAllText(path, text);
        return "table:" + path;
    }

    [Fact]
    public void TemporaryDescriptorsOfOneFrameDisagreeAboutItsReferences()
    {
        // Linus's per-I/O "fake struct page": two pins of frame 5 each get their own descriptor,
        // and each says one reference; only the range table beside them knows there are two.
        var space = new PhysicalAddressSpace();
        using PmemNamespace ns = Create(DescriptorMapKind.Temporary, space);
        var pins = (TemporaryPins)ns.Region.Pins;
        Assert.True(pins.TryPin(5, 1, out long a));
        Assert.True(pins.TryPin(5, 1, out long b));
        PageDescriptor* da = TemporaryPins.DescriptorOf(a), db = TemporaryPins.DescriptorOf(b);
        Assert.True(da != db);
        Assert.Equal(5UL, da->Index);
        Assert.Equal(5UL, db->Index);
        Assert.Equal(1, da->RefCount);
        Assert.Equal(1, db->RefCount);
        Assert.Equal(2, pins.PinCount(5));
        var map = (TemporaryDescriptorMap)ns.Region.Descriptors;
        Assert.Equal(2, map.InUse);
        pins.Unpin(5, 1, a);
        Assert.True(pins.IsPinned(5, 1));
        pins.Unpin(5, 1, b);
        Assert.Equal(0, map.InUse);
        Assert.False(pins.AnyPinned);
    }

    [Theory]
    [MemberData(nameof(Kinds))]
    public void AFenceRefusesNewPinsAndSeesOldOnes(DescriptorMapKind kind)
    {
        var space = new PhysicalAddressSpace();
        using PmemNamespace ns = Create(kind, space);
        IFramePins pins = ns.Region.Pins;
        Assert.True(pins.TryPin(10, 1, out long token));
        int fence = pins.Fence(8, 4);
        Assert.True(fence >= 0);
        Assert.True(pins.IsPinned(8, 4));
        Assert.False(pins.TryPin(9, 1, out _));
        // Far from the fence (another 2 MiB for the huge map) pins still work.
        Assert.True(pins.TryPin(1024, 1, out long far));
        pins.Unpin(1024, 1, far);
        pins.Unpin(10, 1, token);
        Assert.False(pins.IsPinned(8, 4));
        Assert.False(pins.AnyPinned); // the refused pin left nothing behind
        pins.Unfence(fence);
        Assert.True(pins.TryPin(9, 1, out token));
        pins.Unpin(9, 1, token);
    }

    [Theory]
    [MemberData(nameof(Kinds))]
    public void RandomPinsMatchTheModel(DescriptorMapKind kind)
    {
        var space = new PhysicalAddressSpace();
        using PmemNamespace ns = Create(kind, space);
        IPageDescriptorMap map = ns.Region.Descriptors;
        IFramePins pins = ns.Region.Pins;
        long frames = ns.Region.FrameCount;
        Gen.Select(Gen.Long[0, frames - 1], Gen.Long[1, 40], Gen.Bool).Array[1, 60].Sample(ops =>
        {
            var held = new List<(long First, long Frames, long Token)>();
            var model = new Dictionary<long, int>();
            foreach ((long first, long n0, bool release) in ops)
            {
                if (release && held.Count > 0)
                {
                    (long f, long n, long t) = held[^1];
                    held.RemoveAt(held.Count - 1);
                    pins.Unpin(f, n, t);
                    foreach (long u in Units(map, f, n)) model[u]--;
                    continue;
                }
                long count = Math.Min(n0, frames - first);
                Assert.True(pins.TryPin(first, count, out long token));
                held.Add((first, count, token));
                foreach (long u in Units(map, first, count)) model[u] = model.GetValueOrDefault(u) + 1;
            }
            foreach ((long f, long n, _) in held)
                for (long i = f; i < f + n; i++)
                    Assert.Equal(kind == DescriptorMapKind.None || kind == DescriptorMapKind.Temporary ? PinsCovering(held, i) : model[Unit(map, i)], pins.PinCount(i));
            foreach ((long f, long n, long t) in held) pins.Unpin(f, n, t);
            Assert.False(pins.AnyPinned);
        }, iter: 40, threads: 1); // one region's pins: samples must not interleave
    }

    private static IEnumerable<long> Units(IPageDescriptorMap map, long first, long frames)
    {
        for (long u = Unit(map, first); u <= Unit(map, first + frames - 1); u++) yield return u;
    }

    private static int PinsCovering(List<(long First, long Frames, long Token)> held, long frame) =>
        held.Count(h => h.First <= frame && frame < h.First + h.Frames);

    [Fact]
    public void SplittingAHugeDescriptorGivesEachFrameItsOwnStateAndKeepsThePins()
    {
        var space = new PhysicalAddressSpace();
        using PmemNamespace ns = Create(DescriptorMapKind.Huge, space, 8 << 20);
        var map = (HugeDescriptorMap)ns.Region.Descriptors;
        long before = map.DramBytes;
        Assert.Equal((ns.Region.FrameCount + 511) / 512 * 64, before);
        Assert.True(ns.Region.Pins.TryPin(600, 1, out long token));
        map.Get(600)->Flags |= (ulong)PageFlags.Dirty;
        Assert.True(map.Get(513) == map.Get(1000)); // one 2 MiB descriptor before the split

        Assert.True(map.Split(700));
        Assert.False(map.Split(600)); // once per 2 MiB
        Assert.Equal(before + 512 * 64, map.DramBytes);
        Assert.True(map.IsSplit(512) && !map.IsSplit(0));
        Assert.True(map.Get(513) != map.Get(1000));
        Assert.Equal(600UL, map.Get(600)->Index);
        Assert.Equal((ulong)PageFlags.Dirty, map.Get(1000)->Flags & (ulong)PageFlags.Dirty); // state inherited
        map.Get(513)->Flags = 0;
        Assert.Equal((ulong)PageFlags.Dirty, map.Get(1000)->Flags & (ulong)PageFlags.Dirty); // and now per 4 KiB
        // The reference count stays in the 2 MiB head: the pin taken before the split still holds all 512 frames.
        Assert.True(map.Head(513) == map.Head(1000));
        Assert.Equal(1, ns.Region.Pins.PinCount(1000));
        ns.Region.Pins.Unpin(600, 1, token);
        Assert.False(ns.Region.Pins.AnyPinned);
    }

    [Theory]
    [MemberData(nameof(Kinds))]
    public void EachKindReportsWhatItCosts(DescriptorMapKind kind)
    {
        var space = new PhysicalAddressSpace();
        using PmemNamespace ns = Create(kind, space, 10 << 20);
        IPageDescriptorMap map = ns.Region.Descriptors;
        long frames = ns.Region.FrameCount;
        switch (kind)
        {
            case DescriptorMapKind.None: Assert.Equal(0, map.DramBytes + map.DeviceBytes); break;
            case DescriptorMapKind.Dense: Assert.Equal(frames * 64, map.DramBytes); break;
            case DescriptorMapKind.Huge: Assert.Equal((frames + 511) / 512 * 64, map.DramBytes); break;
            case DescriptorMapKind.Temporary: Assert.InRange(map.DramBytes, 1, 1 << 20); break;
            case DescriptorMapKind.Device:
                Assert.Equal(0, map.DramBytes);
                Assert.Equal(ns.Info.MapSize, map.DeviceBytes);
                Assert.InRange(map.DeviceBytes, frames * 64, frames * 64 + (64 << 10));
                Assert.Equal(ns.Info.DataOffset, ns.Info.MapOffset + ns.Info.MapSize);
                break;
            case DescriptorMapKind.OnDemand:
                // Nothing is resident until a descriptor is written, and asking whether anything is
                // pinned reads no descriptor (a read costs a page where the kernel has no zero page).
                long idle = map.DramBytes;
                Assert.Equal(0, idle);
                Assert.False(ns.Region.Pins.AnyPinned);
                Assert.False(ns.Region.Pins.IsPinned(0, frames));
                Assert.Equal(0, map.DramBytes);
                for (long i = 0; i < 10; i++) Assert.True(ns.Region.Pins.TryPin(i * 64, 1, out _)); // one descriptor page each
                Assert.Equal(10 * 4096, map.DramBytes);
                break;
        }
        if (kind != DescriptorMapKind.Device) Assert.Equal(0, map.DeviceBytes);
    }

    [Fact]
    public void ADramArenaTakesEveryKindThatNeedsNoDevice()
    {
        var space = new PhysicalAddressSpace();
        foreach (DescriptorMapKind kind in DescriptorMaps.All.Where(k => k != DescriptorMapKind.Device))
        {
            using var arena = DramArena.Create(4 << 20, space, descriptors: kind);
            Assert.Equal(kind, arena.Descriptors.Kind);
            FramePin pin = space.Pin(arena.PfnAt(3), 2);
            Assert.Equal(1, arena.Pins.PinCount(4));
            pin.Unpin();
        }
        Assert.Contains("no device to hold them", Assert.Throws<NotSupportedException>(() => DramArena.Create(4 << 20, space, descriptors: DescriptorMapKind.Device)).Message);
    }

    [Fact]
    public void PinsOnFramesNoRegionOwnsAreRefusedClearly()
    {
        var space = new PhysicalAddressSpace();
        using PmemNamespace ns = Create(DescriptorMapKind.Dense, space);
        Pfn last = ns.Region.PfnAt(ns.Region.FrameCount - 1);
        Assert.Contains("region", Assert.Throws<FrameNotAddressableException>(() => space.Pin(last, 2)).Message);
        Assert.Contains("not a frame of any registered region", Assert.Throws<FrameNotAddressableException>(() => space.Pin(new Pfn(7), 1)).Message);
        Assert.Throws<ArgumentOutOfRangeException>(() => ns.Region.Pins.TryPin(ns.Region.FrameCount, 1, out _));
    }
}
