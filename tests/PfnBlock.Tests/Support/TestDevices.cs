using PfnBlock.Block;
using PfnBlock.Common;
using PfnBlock.Devices;
using PfnBlock.Memory;

namespace PfnBlock.Tests.Support;

// Test doubles that register themselves from the test assembly, exactly as a product device or
// target does: each joins the conformance suite by registering (see ConformanceSamples).

/// <summary>A RAM disk with a small bio limit and a (no-op) write cache, so splitting and flush flags are exercised. Spec <c>smallbio:SIZE,max=BYTES</c>.</summary>
internal sealed unsafe class SmallBioRamDevice : MemoryDevice, IRegisteredDevice
{
    private readonly DramArena _arena;

    public SmallBioRamDevice(long bytes, int maxBytesPerBio, PhysicalAddressSpace? space = null)
        : this(DramArena.Create(bytes, space, "ram-small"), maxBytesPerBio) { }

    private SmallBioRamDevice(DramArena arena, int maxBytesPerBio) : base("ram-small", arena.BaseAddress, arena.Size, arena.AddressSpace)
    {
        _arena = arena;
        Limits = new DeviceLimits(Bio.SectorSize, Pfn.PageSize, maxBytesPerBio, 1);
    }

    public static DeviceType Type { get; } = new()
    {
        Name = "smallbio",
        Summary = "test double: a RAM disk whose small bio limit makes the block layer split most bios",
        Arguments = [new("SIZE", ArgumentKind.Size, "capacity")],
        Options = [new("max", ArgumentKind.Size, "largest bio the driver takes (default 16k)", "BYTES")],
        Open = (spec, ctx) => new SmallBioRamDevice(SizeParser.Parse(spec.Arguments[0]), (int)SizeParser.Parse(spec.Option("max", "16k")!), ctx.AddressSpace),
        Samples = [new("16 KiB bios", _ => "smallbio:16M")],
    };

    public override DeviceLimits Limits { get; }
    public override DeviceFeatures Features =>
        DeviceFeatures.WriteCache | DeviceFeatures.Fua | DeviceFeatures.Discard | DeviceFeatures.DiscardZeroesData
        | DeviceFeatures.WriteZeroes | DeviceFeatures.Synchronous;

    protected override void WriteData(byte* dst, byte* src, nuint length) => Buffer.MemoryCopy(src, dst, length, length);
    protected override void ZeroData(byte* dst, nuint length) => new Span<byte>(dst, checked((int)length)).Clear();
    protected override void Dispose(bool disposing) => _arena.Dispose();
}

/// <summary>
/// A RAM disk whose driver answers Busy to a random share of bios (seeded), as a driver out of
/// queue slots does: the block layer must requeue every one, so submitters never see Busy.
/// Spec <c>busyram:SIZE,percent=N,seed=S</c>.
/// </summary>
internal sealed unsafe class BusyRamDevice : MemoryDevice, IRegisteredDevice
{
    private readonly DramArena _arena;
    private readonly int _percent;
    private ulong _rng;
    private long _busy;

    public BusyRamDevice(long bytes, int percent, ulong seed, PhysicalAddressSpace? space = null)
        : this(DramArena.Create(bytes, space, "ram-busy"), percent, seed) { }

    private BusyRamDevice(DramArena arena, int percent, ulong seed) : base("ram-busy", arena.BaseAddress, arena.Size, arena.AddressSpace)
    {
        _arena = arena;
        _percent = percent;
        _rng = seed | 1;
    }

    public static DeviceType Type { get; } = new()
    {
        Name = "busyram",
        Summary = "test double: a RAM disk that answers Busy to a random share of bios",
        Arguments = [new("SIZE", ArgumentKind.Size, "capacity")],
        Options =
        [
            new("percent", ArgumentKind.Number, "share of bios answered Busy (default 30)", "N"),
            new("seed", ArgumentKind.Number, "random seed (default 1)", "S"),
        ],
        Open = (spec, ctx) => new BusyRamDevice(SizeParser.Parse(spec.Arguments[0]), int.Parse(spec.Option("percent", "30")!),
            ulong.Parse(spec.Option("seed", "1")!), ctx.AddressSpace),
        Samples = [new("30% Busy", _ => "busyram:16M")],
    };

    /// <summary>Bios answered Busy so far.</summary>
    public long BusyAnswers => Interlocked.Read(ref _busy);

    public override DeviceLimits Limits { get; } = DeviceLimits.Memory();
    public override DeviceFeatures Features =>
        DeviceFeatures.WriteCache | DeviceFeatures.Fua | DeviceFeatures.Discard | DeviceFeatures.DiscardZeroesData
        | DeviceFeatures.WriteZeroes | DeviceFeatures.Synchronous;

    protected override void SubmitCore(Bio bio)
    {
        if (NextPercent() < _percent)
        {
            Interlocked.Increment(ref _busy);
            bio.Complete(BlockStatus.Busy);
            return;
        }
        base.SubmitCore(bio);
    }

    private int NextPercent()
    {
        // Racy between threads on purpose: any value is random enough for a test double.
        ulong x = _rng;
        x ^= x << 13; x ^= x >> 7; x ^= x << 17;
        _rng = x;
        return (int)(x % 100);
    }

    protected override void WriteData(byte* dst, byte* src, nuint length) => Buffer.MemoryCopy(src, dst, length, length);
    protected override void ZeroData(byte* dst, nuint length) => new Span<byte>(dst, checked((int)length)).Clear();
    protected override void Dispose(bool disposing) => _arena.Dispose();
}

/// <summary>
/// A target that never remaps in place: it clones every bio into pieces of CHUNK sectors, chains
/// them to the original, pushes its end_io hook on each, and submits them (the split/clone path
/// of the target seam). Table: <c>clone DEVICE CHUNK [now]</c>; with <c>now</c> the pieces go
/// through <see cref="BlockDevice.SubmitNow"/> (dispatched before Map returns, as a mirror's legs).
/// </summary>
internal sealed class CloneTarget : Target, IRegisteredTarget, IBioEndIo
{
    private readonly LowerDevice _dev;
    private readonly int _chunk;
    private readonly bool _now;
    private readonly BioPool _pool = new(new BioPoolOptions { Name = "clone-target" });
    private long _hooks;

    private CloneTarget(LowerDevice dev, int chunk, bool now) : base(dev.Device) => (_dev, _chunk, _now) = (dev, chunk, now);

    public static TargetType TargetType { get; } = new()
    {
        Name = "clone",
        Arguments = "DEVICE CHUNK [now]",
        Summary = "test double: clones every bio into CHUNK-sector pieces chained to it",
        Create = ctx =>
        {
            if (ctx.Args.Count is not (2 or 3) || ctx.Args.Count == 3 && ctx.Args[2] != "now") throw TargetContext.Fail("Usage: clone DEVICE CHUNK [now]");
            long chunk = ctx.Sector(1, "Invalid chunk");
            if (chunk <= 0 || chunk > 1 << 20) throw TargetContext.Fail("Invalid chunk");
            LowerDevice dev = ctx.Device(0);
            TargetContext.RequireArea(dev.Device, 0, ctx.Length);
            return new CloneTarget(dev, (int)chunk, ctx.Args.Count == 3);
        },
        Samples = [new("8-sector pieces", s => new($"{s.Lower[0]} 8", s.LowerSectors))],
    };

    /// <summary>The pool the clones come from (its Outstanding count shows leaks).</summary>
    public BioPool Pool => _pool;
    /// <summary>Clone completions the hook saw.</summary>
    public long HookCalls => Interlocked.Read(ref _hooks);

    public override string Arguments => _now ? $"{_dev.Spec} {_chunk} now" : $"{_dev.Spec} {_chunk}";

    public override MapResult Map(Bio bio, out IBlockDevice? lower)
    {
        lower = null;
        if (bio.Op == BioOp.Flush)
        {
            Submit(bio.Clone(_pool), bio);
        }
        else
        {
            while (bio.Size >> Bio.SectorShift > _chunk) Submit(bio.Split(_chunk, _pool), bio);
            Submit(bio.Clone(_pool), bio);
        }
        bio.Complete(BlockStatus.Ok); // our own reference: the bio completes after its last piece
        return MapResult.Submitted;
    }

    private void Submit(Bio piece, Bio parent)
    {
        piece.Chain(parent);
        piece.PushEndIo(this);
        if (_now) BlockDevice.SubmitNow(_dev.Device, piece);
        else _dev.Device.Submit(piece);
    }

    public EndIoResult EndIo(Bio bio, ref BlockStatus status)
    {
        Interlocked.Increment(ref _hooks);
        return EndIoResult.Done;
    }
}

/// <summary>
/// A target that remaps like linear but answers Requeue to a random share of bios (a target
/// whose resources ran out), and counts the end_io calls of what it remapped. Table: <c>requeue DEVICE PERCENT</c>.
/// </summary>
internal sealed class RequeueTarget : Target, IRegisteredTarget, IBioEndIo
{
    private readonly LowerDevice _dev;
    private readonly int _percent;
    private long _calls;

    private RequeueTarget(LowerDevice dev, int percent) : base(dev.Device) => (_dev, _percent) = (dev, percent);

    public static TargetType TargetType { get; } = new()
    {
        Name = "requeue",
        Arguments = "DEVICE PERCENT",
        Summary = "test double: linear onto DEVICE, answering Requeue to PERCENT% of bios",
        Create = ctx =>
        {
            ctx.RequireArgs(2);
            long percent = ctx.Sector(1, "Invalid percent");
            LowerDevice dev = ctx.Device(0);
            TargetContext.RequireArea(dev.Device, 0, ctx.Length);
            return new RequeueTarget(dev, (int)Math.Min(percent, 90));
        },
        Samples = [new("40% requeued", s => new($"{s.Lower[0]} 40", s.LowerSectors))],
    };

    public override string Arguments => $"{_dev.Spec} {_percent}";

    public override MapResult Map(Bio bio, out IBlockDevice? lower)
    {
        lower = _dev.Device;
        if (Interlocked.Increment(ref _calls) * 7919 % 100 < _percent) return MapResult.Requeue;
        return MapResult.Remapped;
    }

    public EndIoResult EndIo(Bio bio, ref BlockStatus status) => EndIoResult.Done;
}

/// <summary>
/// A RAM disk that records the deepest call stack its driver and its completions ran on, so tests
/// can show that a deep stack or a wide split neither submits nor completes recursively. Spec <c>probe:SIZE</c>.
/// </summary>
internal sealed unsafe class StackProbeDevice : MemoryDevice, IRegisteredDevice
{
    private readonly DramArena _arena;
    private int _deepestSubmit;

    public StackProbeDevice(long bytes, PhysicalAddressSpace? space) : this(DramArena.Create(bytes, space, "ram-probe")) { }

    private StackProbeDevice(DramArena arena) : base("ram-probe", arena.BaseAddress, arena.Size, arena.AddressSpace) => _arena = arena;

    public static DeviceType Type { get; } = new()
    {
        Name = "probe",
        Summary = "test double: a RAM disk that records how deep the call stack was when it ran a bio",
        Arguments = [new("SIZE", ArgumentKind.Size, "capacity")],
        Open = (spec, ctx) => new StackProbeDevice(SizeParser.Parse(spec.Arguments[0]), ctx.AddressSpace),
    };

    /// <summary>The most stack frames seen inside <see cref="SubmitCore"/>.</summary>
    public int DeepestSubmit => Volatile.Read(ref _deepestSubmit);

    public override DeviceLimits Limits { get; } = DeviceLimits.Memory();
    public override DeviceFeatures Features => DeviceFeatures.Discard | DeviceFeatures.DiscardZeroesData | DeviceFeatures.WriteZeroes | DeviceFeatures.Synchronous;

    protected override void SubmitCore(Bio bio)
    {
        int depth = new System.Diagnostics.StackTrace().FrameCount;
        if (depth > _deepestSubmit) _deepestSubmit = depth;
        base.SubmitCore(bio);
    }

    protected override void WriteData(byte* dst, byte* src, nuint length) => Buffer.MemoryCopy(src, dst, length, length);
    protected override void ZeroData(byte* dst, nuint length) => new Span<byte>(dst, checked((int)length)).Clear();
    protected override void Dispose(bool disposing) => _arena.Dispose();
}

/// <summary>
/// A device that passes every bio to a lower device until told to fail (a leg or member that dies
/// mid-workload): then reads, writes or both complete with <see cref="BlockStatus.IoError"/> without
/// reaching the lower device. Spec <c>faulty:SPEC,name=NAME</c>; tests find it by name with
/// <see cref="Get"/>. Its data is the lower device's, so an array created on the lower specs
/// assembles through the faulty wrappers.
/// </summary>
internal sealed class FaultyDevice : BlockDevice, IRegisteredDevice
{
    private static readonly Dictionary<string, FaultyDevice> s_byName = [];
    private readonly IBlockDevice _lower;
    private readonly IDisposable _owned;
    private long _failedBios;

    private FaultyDevice(string name, IBlockDevice lower, IDisposable owned) : base(name, lower.AddressSpace)
    {
        _lower = lower;
        _owned = owned;
        lock (s_byName) s_byName[name] = this;
    }

    public static DeviceType Type { get; } = new()
    {
        Name = "faulty",
        Summary = "test double: passes bios to SPEC until told to fail reads and/or writes",
        Arguments = [new("SPEC", ArgumentKind.Text, "the lower device")],
        Options = [new("name", ArgumentKind.Text, "the name tests look it up by", "NAME")],
        Open = (spec, ctx) =>
        {
            IBlockDevice lower = ctx.Acquire(spec.Arguments[0]).Device;
            return new FaultyDevice(spec.Option("name") ?? "faulty", lower, ctx.TakeAcquired());
        },
        Samples = [new("passing bios to a RAM disk", s => $"faulty:[ram:16M,name={Path.GetFileName(s.Directory)}],name={Path.GetFileName(s.Directory)}")],
    };

    /// <summary>The open faulty device called <paramref name="name"/>.</summary>
    public static FaultyDevice Get(string name)
    {
        lock (s_byName) return s_byName[name];
    }

    /// <summary>Reads fail from now on.</summary>
    public volatile bool FailReads;
    /// <summary>Writes, flushes, discards and write-zeroes fail from now on.</summary>
    public volatile bool FailWrites;
    /// <summary>Bios failed so far.</summary>
    public long FailedBios => Interlocked.Read(ref _failedBios);

    /// <summary>Fails everything from now on (the device died).</summary>
    public void Die() => FailReads = FailWrites = true;

    public override long CapacitySectors => _lower.CapacitySectors;
    public override DeviceLimits Limits => _lower.Limits;
    public override DeviceFeatures Features => _lower.Features & ~(DeviceFeatures.Dax | DeviceFeatures.AllocationMap); // it answers no allocation queries

    /// <summary>
    /// Makes sectors [<paramref name="sector"/>, +<paramref name="sectors"/>) bad: a read touching
    /// them fails until a write covers them (as a disk remaps a sector on write), like a media error.
    /// </summary>
    public void MarkBad(long sector, int sectors)
    {
        lock (_bad) for (long s = sector; s < sector + sectors; s++) _bad.Add(s);
    }

    private readonly HashSet<long> _bad = [];

    /// <summary>Bad sectors not yet cured by a write.</summary>
    public int BadSectors
    {
        get { lock (_bad) return _bad.Count; }
    }

    /// <summary>True when the bio reads a bad sector; a write clears the bad sectors it covers.</summary>
    private bool HitsBadSector(Bio bio)
    {
        lock (_bad)
        {
            if (_bad.Count == 0) return false;
            long first = bio.Sector, end = first + (bio.Size >> Bio.SectorShift);
            if (bio.Op == BioOp.Read)
            {
                for (long s = first; s < end; s++) if (_bad.Contains(s)) return true;
                return false;
            }
            if (bio.Op == BioOp.Write) for (long s = first; s < end; s++) _bad.Remove(s);
            return false;
        }
    }

    protected override void SubmitCore(Bio bio)
    {
        if ((bio.Op == BioOp.Read ? FailReads : FailWrites) || HitsBadSector(bio))
        {
            Interlocked.Increment(ref _failedBios);
            bio.Complete(BlockStatus.IoError);
            return;
        }
        _lower.Submit(bio);
    }

    protected override void Dispose(bool disposing)
    {
        lock (s_byName) if (s_byName.TryGetValue(Name, out FaultyDevice? d) && d == this) s_byName.Remove(Name);
        _owned.Dispose();
    }
}
