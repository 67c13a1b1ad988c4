using PfnBlock.Block;
using PfnBlock.Common;
using PfnBlock.Devices;
using PfnBlock.Memory;

namespace PfnBlock.Tests.Targets;

/// <summary>What a <see cref="RecordingDevice"/> received: the bio object itself and what it asked for when it arrived.</summary>
internal readonly record struct Received(Bio Bio, BioOp Op, long Sector, uint Size, BioFlags Flags, int TargetBioNumber);

/// <summary>
/// A RAM disk that records every bio its driver receives (SPDK bdev_ut's stub bdev): tests of a
/// stacked target check each child I/O's sector, size and flags, and whether it is the submitted bio
/// itself (remapped in place) or a clone. Spec <c>recording:SIZE,name=NAME[,nodiscard][,cache]</c>;
/// <c>cache</c> advertises a write cache so that flushes reach it. No conformance samples.
/// </summary>
internal sealed unsafe class RecordingDevice : MemoryDevice, IRegisteredDevice
{
    private readonly DramArena _arena;
    private readonly List<Received> _received = [];

    private RecordingDevice(string name, DramArena arena, DeviceFeatures features) : base(name, arena.BaseAddress, arena.Size, arena.AddressSpace)
    {
        _arena = arena;
        Features = features;
    }

    public static DeviceType Type { get; } = new()
    {
        Name = "recording",
        Summary = "test double: a RAM disk that records the bios it receives",
        Arguments = [new("SIZE", ArgumentKind.Size, "capacity")],
        Options =
        [
            new("name", ArgumentKind.Text, "the disk's name", "NAME"),
            new("nodiscard", null, "advertise neither discard nor write-zeroes"),
            new("cache", null, "advertise a volatile write cache (flushes reach the device)"),
        ],
        Open = (spec, ctx) =>
        {
            DeviceFeatures f = DeviceFeatures.Synchronous;
            if (!spec.Has("nodiscard")) f |= DeviceFeatures.Discard | DeviceFeatures.DiscardZeroesData | DeviceFeatures.WriteZeroes;
            if (spec.Has("cache")) f |= DeviceFeatures.WriteCache | DeviceFeatures.Fua;
            string name = spec.Option("name") ?? "recording";
            return new RecordingDevice(name, DramArena.Create(SizeParser.Parse(spec.Arguments[0]), ctx.AddressSpace, name), f);
        },
    };

    public override DeviceLimits Limits { get; } = DeviceLimits.Memory();
    public override DeviceFeatures Features { get; }

    /// <summary>Everything received so far, in order.</summary>
    public Received[] Log
    {
        get { lock (_received) return [.. _received]; }
    }

    /// <summary>Forgets what was received.</summary>
    public void Clear()
    {
        lock (_received) _received.Clear();
    }

    protected override void SubmitCore(Bio bio)
    {
        lock (_received) _received.Add(new Received(bio, bio.Op, bio.Sector, bio.Size, bio.Flags, bio.TargetBioNumber));
        base.SubmitCore(bio);
    }

    protected override void WriteData(byte* dst, byte* src, nuint length) => Buffer.MemoryCopy(src, dst, length, length);
    protected override void ZeroData(byte* dst, nuint length) => new Span<byte>(dst, checked((int)length)).Clear();
    protected override void Dispose(bool disposing) => _arena.Dispose();
}
