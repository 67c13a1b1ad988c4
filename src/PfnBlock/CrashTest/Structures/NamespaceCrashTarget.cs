using PfnBlock.Memory;
using PfnBlock.Namespaces;
using PfnBlock.Namespaces.Btt;

namespace PfnBlock.CrashTest.Structures;

/// <summary>
/// Crash target for the namespace info block (and, for sector namespaces, the BTT layout written
/// with it): a namespace file on tmpfs, mapped shared so that crash states written into the image
/// are what <see cref="PmemNamespace.Open"/> reads.
/// </summary>
/// <remarks>
/// <para>Workload: a sequence of <c>namespace create --force</c> over the same file (raw or sector,
/// random sector size, alignment, descriptor map and name), of damaged-primary repairs (a word of
/// the primary info block is overwritten, and the next open restores it from the backup), and on a
/// raw namespace of bad-block list changes (<c>inject-error</c>, <c>clear-errors</c>, a write over bad
/// blocks: each rewrites both info blocks).</para>
/// <para>Recovery: <see cref="PmemNamespace.Open"/> (primary, else backup, which it copies over the
/// primary). Invariants: while nothing is in flight, open yields exactly the last acknowledged info
/// block; during a create, the previous one, the new one, or a clean refusal; during a repair, the
/// previous one; during a bad-block change, the previous list or the new one, never a refusal; a
/// sector namespace that opens has a BTT that opens and passes check.</para>
/// </remarks>
internal sealed unsafe class NamespaceCrashTarget : ICrashTarget
{
    private const long FileSize = (16L << 20) + (64 << 10);

    private readonly CrashTestOptions _options;
    private readonly SharedImageFile _file;
    private readonly PhysicalAddressSpace _space = new();
    private readonly List<Op> _ops = [];

    private enum Kind { Create, Repair, BadBlocks }

    private sealed class Op(int index, Kind kind)
    {
        public int Index { get; } = index;
        public Kind Kind { get; } = kind;
        public bool Create => Kind == Kind.Create;
        public NamespaceInfoBlock? Before, After;
        public int Start = -1, Ack = -1;
        public override string ToString() => Kind switch
        {
            Kind.Create => $"create {Describe(After)}",
            Kind.Repair => $"damage the primary and reopen {Describe(Before)}",
            _ => $"bad blocks {Before?.BadBlocks} -> {After?.BadBlocks} of {Describe(Before)}",
        };
    }

    public NamespaceCrashTarget(CrashTestOptions options)
    {
        _options = options;
        _file = new SharedImageFile(options.Directory, "pfnblock-crashtest-ns", FileSize);
    }

    public string Name => "namespace";
    public byte* Image => _file.Address;
    public long ImageLength => FileSize;

    public void Run(CrashRecording recording)
    {
        _ops.Clear();
        var random = new Random(_options.Seed);
        using PmemTraceScope scope = recording.Start();
        NamespaceInfoBlock? current = null;
        for (int i = 0; i < _options.Ops; i++)
        {
            // (No draw before the first create: seeds keep the workloads they had before bad blocks joined.)
            int dice = current is null ? 0 : random.Next(100);
            // The bad-block mutation shows only in a workload that changes the list: it gets one (a raw namespace, then changes).
            bool listChanges = _options.Mutation == OrderingMutation.NamespaceBadBlocksOneFlush;
            Kind kind = current is null || (dice < 70 && !listChanges) ? Kind.Create
                : current.Mode == NamespaceMode.Raw && (dice < 90 || listChanges) ? Kind.BadBlocks : Kind.Repair;
            var op = new Op(i, kind) { Before = current };
            _ops.Add(op);
            op.Start = recording.Mark($"start op {i}");
            if (op.Create)
            {
                bool sector = random.Next(2) == 0 && !listChanges;
                var create = new NamespaceCreateOptions
                {
                    Size = FileSize,
                    Mode = sector ? NamespaceMode.Sector : NamespaceMode.Raw,
                    SectorSize = random.Next(2) == 0 ? 512u : 4096u,
                    Align = sector ? 0 : random.Next(2) == 0 ? 4096u : 65536u,
                    // Every map kind (its value lands in the info block); device only in raw mode, where it formats its reserve.
                    MapKind = sector && random.Next(2) == 0 ? DescriptorMapKind.None
                        : DescriptorMaps.All[random.Next(DescriptorMaps.All.Count)] is var map && (map != DescriptorMapKind.Device || !sector) ? map : DescriptorMapKind.Dense,
                    Name = $"crash{i}",
                    Force = true,
                    Mutation = _options.Mutation,
                };
                using PmemNamespace ns = PmemNamespace.Create(_file.Path, create, _space);
                recording.Capture(ns.BaseAddress);
                op.After = ns.Info;
            }
            else if (kind == Kind.BadBlocks)
            {
                using PmemNamespace ns = PmemNamespace.Open(_file.Path, _space);
                ns.Mutation = _options.Mutation;
                long blocks = ns.DataSize >> 9;
                long start = random.NextInt64(0, blocks - 64), count = random.Next(1, 64);
                if (ns.BadBlocks.IsEmpty || random.Next(3) > 0) ns.AddBadBlocks(start, count);
                else ns.ClearBadBlocks(start, count, zeroData: false);
                recording.Capture(ns.BaseAddress);
                op.After = ns.Info;
            }
            else
            {
                using (PmemNamespace ns = PmemNamespace.Open(_file.Path, _space))
                {
                    // Damage the primary (its data offset word): the checksum no longer matches.
                    PmemStore.Write64((ulong*)(ns.BaseAddress + 64), 0xBAD0_BAD0_BAD0_BAD0);
                    PmemNamespace.PersistMapped(ns.BaseAddress, NamespaceInfoBlock.Size, ns.Persistence);
                    recording.Capture(ns.BaseAddress);
                }
                using (PmemNamespace ns = PmemNamespace.Open(_file.Path, _space))
                {
                    if (!ns.RecoveredFromBackup) throw new InvalidOperationException("workload: the damaged primary was not restored from the backup");
                    recording.Capture(ns.BaseAddress);
                    op.After = ns.Info;
                }
            }
            current = op.After;
            op.Ack = recording.Mark($"ack op {i}: {op}");
        }
    }

    public string? Verify(CrashRecoveryContext context)
    {
        // The operation in flight (started, not acknowledged) or, failing that, the last acknowledged one.
        Op? inFlight = _ops.FirstOrDefault(o => context.Happened(o.Start) && !context.Happened(o.Ack));
        Op? done = _ops.LastOrDefault(o => context.Happened(o.Ack));
        var allowed = new List<NamespaceInfoBlock>();
        bool refusalAllowed;
        if (inFlight is not null)
        {
            if (inFlight.Before is not null) allowed.Add(inFlight.Before);
            if (inFlight.Kind != Kind.Repair) allowed.Add(inFlight.After!); // a create or a bad-block change: old or new
            refusalAllowed = inFlight.Create || inFlight.Before is null;
        }
        else
        {
            if (done?.After is not null) allowed.Add(done.After);
            refusalAllowed = done is null;
        }

        PmemNamespace ns;
        try { ns = PmemNamespace.Open(_file.Path, _space); }
        catch (InvalidNamespaceException e)
        {
            return refusalAllowed ? null : $"open refused ({e.Message}); expected {string.Join(" or ", allowed.Select(Describe))}";
        }
        using (ns)
        {
            context.RecoveryMappedAt(ns.BaseAddress);
            if (!allowed.Contains(ns.Info))
                return $"opened as {Describe(ns.Info)}; expected {(allowed.Count == 0 ? "a refusal" : string.Join(" or ", allowed.Select(Describe)))}";
            if (ns.Info.Mode != NamespaceMode.Sector) return null;
            BttMedia media = BttMedia.ForNamespace(ns);
            var btt = new BttOptions { LbaSize = ns.Info.SectorSize, ParentUuid = ns.Info.Uuid, Flavor = BttFlavor.Kernel };
            try { _ = Btt.Open(media, btt); }
            catch (InvalidNamespaceException e) { return $"sector namespace {Describe(ns.Info)} opens but its BTT does not: {e.Message}"; }
            BttCheckReport report = BttCheck.CheckMedia(media, btt);
            return report.Consistent ? null
                : $"sector namespace {Describe(ns.Info)}: check: " + string.Join("; ", report.Findings.Where(f => f.Severity == CheckSeverity.Error).Select(f => f.Message));
        }
    }

    private static string Describe(NamespaceInfoBlock? info) =>
        info is null ? "no namespace"
            : $"{info.Mode.ToString().ToLowerInvariant()} namespace '{info.Name}' {info.Uuid.ToString()[..8]}{(info.BadBlocks.IsEmpty ? "" : $" bad blocks {info.BadBlocks}")}";

    public void Dispose()
    {
        _file.Dispose();
    }
}
