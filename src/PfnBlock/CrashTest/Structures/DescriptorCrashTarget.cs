using PfnBlock.Memory;
using PfnBlock.Namespaces;

namespace PfnBlock.CrashTest.Structures;

/// <summary>
/// Crash target for the <c>device</c> descriptor map's reserve (<see cref="DescriptorReserve"/>):
/// a raw namespace with <c>--map device</c> on tmpfs, mapped shared so crash states written into
/// the image are what <see cref="PmemNamespace.Open(string, PhysicalAddressSpace?, bool)"/> reads.
/// </summary>
/// <remarks>
/// <para>Workload: create the namespace (the reserve is formatted), store a self-checking pattern
/// into its first and last data frames, then a seeded mix of: a word of a descriptor block damaged
/// and persisted, the reserve header damaged, reference counts left behind as a process that died
/// holding pins would leave them (persisted or not), each followed by an open that must repair it;
/// and pin/unpin rounds through the namespace's pin seam.</para>
/// <para>Recovery: open. Invariants: once the create was acknowledged, open succeeds with the
/// created info block; afterwards the reserve verifies (header, every block's checksum, every
/// descriptor naming its frame), no frame is pinned, and an acknowledged data pattern is intact:
/// rebuilding descriptors never touches data.</para>
/// </remarks>
internal sealed unsafe class DescriptorCrashTarget : ICrashTarget
{
    private const long FileSize = (16L << 20) + (64 << 10);

    private readonly CrashTestOptions _options;
    private readonly SharedImageFile _file;
    private readonly PhysicalAddressSpace _space = new();
    private int _created = -1, _patterned = -1;
    private NamespaceInfoBlock? _info;

    public DescriptorCrashTarget(CrashTestOptions options)
    {
        _options = options;
        _file = new SharedImageFile(options.Directory, "pfnblock-crashtest-memmap", FileSize);
    }

    public string Name => "descriptors";
    public byte* Image => _file.Address;
    public long ImageLength => FileSize;

    public void Run(CrashRecording recording)
    {
        var random = new Random(_options.Seed);
        using PmemTraceScope scope = recording.Start();
        recording.Mark("start create");
        var create = new NamespaceCreateOptions
        {
            Size = FileSize,
            Align = random.Next(2) == 0 ? 4096u : 65536u,
            MapKind = DescriptorMapKind.Device,
            Name = "memmap",
            Force = true,
        };
        using (PmemNamespace ns = PmemNamespace.Create(_file.Path, create, _space))
        {
            recording.Capture(ns.BaseAddress);
            _info = ns.Info;
        }
        _created = recording.Mark("ack create");
        using (PmemNamespace ns = PmemNamespace.Open(_file.Path, _space))
        {
            foreach (long frame in (long[])[0, ns.Region.FrameCount - 1])
            {
                byte[] pattern = new byte[Pfn.PageSize];
                SectorPattern.Fill(pattern, frame, 1);
                PmemStore.Copy(ns.DataAddress + frame * Pfn.PageSize, pattern);
                PmemNamespace.PersistMapped(ns.DataAddress + frame * Pfn.PageSize, Pfn.PageSize, ns.Persistence);
            }
            recording.Capture(ns.BaseAddress);
        }
        _patterned = recording.Mark("ack pattern");

        for (int i = 0; i < _options.Ops; i++)
        {
            recording.Mark($"start op {i}");
            using (PmemNamespace ns = PmemNamespace.Open(_file.Path, _space))
            {
                byte* reserve = ns.BaseAddress + ns.Info.MapOffset;
                PageDescriptor* descriptors = ns.Region.Descriptors.Get(0);
                long frames = ns.Region.FrameCount;
                switch (random.Next(4))
                {
                    case 0: // a damaged descriptor (its Index word), as a torn or stray write would leave it
                        PmemStore.Write64(&descriptors[random.NextInt64(frames)].Index, (ulong)random.NextInt64());
                        PmemNamespace.PersistMapped(reserve, ns.Info.MapSize, ns.Persistence);
                        break;
                    case 1: // a damaged reserve header
                        PmemStore.Write64((ulong*)(reserve + 8 * random.Next(10)), (ulong)random.NextInt64());
                        PmemNamespace.PersistMapped(reserve, DescriptorReserve.HeaderSize, ns.Persistence);
                        break;
                    case 2: // reference counts a process that died holding pins leaves behind
                        for (int k = 0; k < 3; k++) PmemStore.Write32((uint*)&descriptors[random.NextInt64(frames)].RefCount, (uint)random.Next(1, 9));
                        if (random.Next(2) == 0) PmemNamespace.PersistMapped(reserve, ns.Info.MapSize, ns.Persistence);
                        break;
                    default: // pins taken and released through the seam: counts back to zero
                        IFramePins pins = ns.Region.Pins;
                        long first = random.NextInt64(frames - 8);
                        if (!pins.TryPin(first, 8, out long token)) throw new InvalidOperationException("workload: a pin was refused with no fence up");
                        pins.Unpin(first, 8, token);
                        break;
                }
                recording.Capture(ns.BaseAddress);
            }
            // The repair: a writer's open validates the reserve and rebuilds or resets what it must.
            using (PmemNamespace ns = PmemNamespace.OpenMutated(_file.Path, _space, readOnly: false, _options.Mutation))
                recording.Capture(ns.BaseAddress);
            recording.Mark($"ack op {i}");
        }
    }

    public string? Verify(CrashRecoveryContext context)
    {
        PmemNamespace ns;
        try { ns = PmemNamespace.OpenMutated(_file.Path, _space, readOnly: false, _options.Mutation); }
        catch (InvalidNamespaceException e)
        {
            return context.Happened(_created) ? $"open refused after the create was acknowledged: {e.Message}" : null;
        }
        using (ns)
        {
            context.RecoveryMappedAt(ns.BaseAddress);
            if (context.Happened(_created) && ns.Info != _info) return $"opened with info block {ns.Info.Uuid}, created {_info!.Uuid}";
            if (ns.Info.MapKind != DescriptorMapKind.Device) return null; // an older namespace in the file, before the create landed
            if (DescriptorReserve.Verify(ns.BaseAddress + ns.Info.MapOffset, ns.Info) is string bad) return $"after open: {bad}";
            // The descriptors themselves, not AnyPinned: that answers from this process's count of
            // live pins, which a dead process's counts in the reserve never reach.
            for (long frame = 0; frame < ns.Region.FrameCount; frame++)
                if (ns.Region.Pins.PinCount(frame) != 0)
                    return $"after open: frame {frame} is still pinned (stale reference counts survived)";
            if (context.Happened(_patterned))
            {
                foreach (long frame in (long[])[0, ns.Region.FrameCount - 1])
                    if (SectorPattern.Decode(new ReadOnlySpan<byte>(ns.DataAddress + frame * Pfn.PageSize, Pfn.PageSize), frame) != 1)
                        return $"data frame {frame} changed: the repair reached the data area";
            }
            return null;
        }
    }

    public void Dispose()
    {
        _file.Dispose();
    }
}
