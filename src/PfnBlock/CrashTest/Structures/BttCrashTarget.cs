using System.Runtime.InteropServices;
using PfnBlock.Memory;
using PfnBlock.Namespaces;
using PfnBlock.Namespaces.Btt;

namespace PfnBlock.CrashTest.Structures;

/// <summary>
/// Crash target for the Block Translation Table: one 16 MiB arena on MAP_SYNC-like media (every
/// metadata step flushed and fenced), one lane so that a seed always gives the same trace.
/// </summary>
/// <remarks>
/// <para>Workload: format, then random operations on a few sectors (the first ones and the last):
/// writes of self-checking versions, zero and error marks, flushes, reopens, and writes crashed at
/// a step of the write path (after the data, after the flog's first half, after the whole flog
/// entry) followed by the reopen that recovers them — so recovery's own stores are crashed too.</para>
/// <para>Recovery: <see cref="Btt.Open"/> (info block with backup fallback, flog scan, map
/// completion). Invariants: open succeeds once the format was acknowledged; <see cref="BttCheck"/>
/// finds the layout consistent (every block owned once, nothing outside the arena; before the format
/// is acknowledged, after its <c>--repair</c> of an info block from its twin); each sector
/// reads whole, as its last acknowledged version or one written after it and not yet acknowledged.</para>
/// </remarks>
internal sealed unsafe class BttCrashTarget : ICrashTarget
{
    private const long MediaSize = BttInfoBlock.MinArenaSize;
    private const long Torn = -1, ErrorState = -2, BadStatus = -3;

    private readonly CrashTestOptions _options;
    private readonly BttOptions _btt;
    private readonly BttMedia _media;
    private readonly byte[] _sector;
    private readonly List<Op> _ops = [];
    private long[] _lbas = [];
    private byte* _image;

    private enum Kind { Format, Write, Zero, Error, Flush, Reopen, CrashedWrite }

    /// <summary>One workload operation: what it set its sector to, and its markers.</summary>
    private sealed class Op(int index, Kind kind, long lba, long value)
    {
        public int Index { get; } = index;
        public Kind Kind { get; } = kind;
        public long Lba { get; } = lba;
        public long Value { get; } = value;
        public int Start = -1, Ack = -1;
        /// <summary>False for a crashed write that recovery rolled back: its value never holds once acknowledged.</summary>
        public bool Effective = true;
        public override string ToString() => Kind switch
        {
            Kind.Write or Kind.CrashedWrite => $"{Kind} lba {Lba} v{Value}",
            Kind.Zero or Kind.Error => $"{Kind} lba {Lba}",
            _ => Kind.ToString(),
        };
    }

    public BttCrashTarget(CrashTestOptions options)
    {
        _options = options;
        _image = (byte*)NativeMemory.AlignedAlloc((nuint)MediaSize, 4096);
        NativeMemory.Clear(_image, (nuint)MediaSize);
        byte* image = _image;
        // As a MAP_SYNC namespace does: ranges persisted with flush + fence, a flush is a fence.
        _media = new BttMedia(image, MediaSize, PersistenceMode.CpuCache, (o, l) => PersistentMemory.Persist(image + o, (nuint)l), PersistentMemory.Drain);
        _btt = new BttOptions
        {
            LbaSize = 4096,
            ParentUuid = new Guid(options.Seed, 0x5046, 0x4e42, 0, 0, 0, 0, 0, 0, 0, 1),
            Flavor = BttFlavor.Kernel,
            Lanes = 1,
            Mutation = options.Mutation,
        };
        _sector = new byte[_btt.LbaSize];
    }

    public string Name => "btt";
    public byte* Image => _image;
    public long ImageLength => MediaSize;

    public void Run(CrashRecording recording)
    {
        _ops.Clear();
        var random = new Random(_options.Seed);
        using PmemTraceScope scope = recording.Start();
        Op format = Begin(recording, Kind.Format, 0, 0);
        Btt.Format(_media, _btt);
        End(recording, format);
        Btt btt = Btt.Open(_media, _btt);
        long last = btt.ExternalNlba - 1;
        _lbas = [0, 1, 2, 3, 4, 5, last - 1, last];
        long version = 0;
        for (int i = 0; i < _options.Ops; i++)
        {
            long lba = _lbas[random.Next(_lbas.Length)];
            int pick = random.Next(100);
            Op op;
            switch (pick)
            {
                case < 60:
                    op = Begin(recording, Kind.Write, lba, ++version);
                    Expect(WriteVersion(btt, lba, version), op);
                    break;
                case < 68:
                    op = Begin(recording, Kind.Zero, lba, 0);
                    Expect(btt.SetZero(lba), op);
                    break;
                case < 72:
                    op = Begin(recording, Kind.Error, lba, ErrorState);
                    Expect(btt.SetError(lba), op);
                    break;
                case < 77:
                    op = Begin(recording, Kind.Flush, -1, 0);
                    btt.Flush();
                    break;
                case < 82:
                    op = Begin(recording, Kind.Reopen, -1, 0);
                    btt = Btt.Open(_media, _btt);
                    break;
                default:
                    // A process crash at a step of the write path, then the reopen that recovers it.
                    var step = (BttWriteStep)random.Next(3);
                    op = Begin(recording, Kind.CrashedWrite, lba, ++version);
                    btt.StepHook = s => { if (s == step) throw new CrashInjectedException(); };
                    try { WriteVersion(btt, lba, version); throw new InvalidOperationException("the injected crash did not happen"); }
                    catch (CrashInjectedException) { }
                    btt = Btt.Open(_media, _btt);
                    op.Effective = step == BttWriteStep.FlogWritten;
                    if (btt.RecoveredWrites != (op.Effective ? 1 : 0))
                        throw new InvalidOperationException($"workload: reopen after {op} crashed at {step} completed {btt.RecoveredWrites} writes");
                    break;
            }
            End(recording, op);
        }
    }

    public string? Verify(CrashRecoveryContext context)
    {
        Btt btt;
        try { btt = Btt.Open(_media, _btt); }
        catch (InvalidNamespaceException e)
        {
            // Before the format is acknowledged there may be no layout yet; refusing is right then.
            return context.Happened(_ops[0].Ack) ? $"open refused after the format was acknowledged: {e.Message}" : null;
        }
        // A crash inside the format can leave a torn primary info block beside a complete backup:
        // open uses the backup, and check --repair restores the primary. After the format, no repair may be needed.
        BttCheckReport report = BttCheck.CheckMedia(_media, _btt, repair: !context.Happened(_ops[0].Ack));
        if (!report.Consistent)
            return "check: " + string.Join("; ", report.Findings.Where(f => f.Severity == CheckSeverity.Error).Select(f => f.Message));
        foreach (long lba in _lbas)
        {
            HashSet<long> allowed = Allowed(lba, context);
            long value = ReadValue(btt, lba);
            if (!allowed.Contains(value))
                return $"sector {lba} reads {Describe(value)}; allowed: {string.Join(", ", allowed.Order().Select(Describe))}";
        }
        return null;
    }

    /// <summary>The values sector <paramref name="lba"/> may hold after the crash: the last acknowledged one and any started after it.</summary>
    private HashSet<long> Allowed(long lba, CrashRecoveryContext context)
    {
        var allowed = new HashSet<long> { 0 };
        foreach (Op op in _ops)
        {
            if (op.Lba != lba || op.Kind is Kind.Flush or Kind.Reopen or Kind.Format) continue;
            bool acked = context.Happened(op.Ack);
            if (acked && op.Effective) { allowed.Clear(); allowed.Add(op.Value); }
            else if (context.Happened(op.Start) && !acked) allowed.Add(op.Value);
        }
        return allowed;
    }

    private long ReadValue(Btt btt, long lba)
    {
        BttStatus status;
        fixed (byte* p = _sector) status = btt.Read(lba, p);
        return status switch
        {
            BttStatus.Ok => SectorPattern.Decode(_sector, lba),
            BttStatus.MediaError => ErrorState,
            _ => BadStatus,
        };
    }

    private static string Describe(long value) => value switch
    {
        0 => "zeros",
        Torn => "a torn or foreign sector",
        ErrorState => "the error state",
        BadStatus => "an unexpected status",
        _ => $"v{value}",
    };

    private BttStatus WriteVersion(Btt btt, long lba, long version)
    {
        SectorPattern.Fill(_sector, lba, version);
        fixed (byte* p = _sector) return btt.Write(lba, p);
    }

    private static void Expect(BttStatus status, Op op)
    {
        if (status != BttStatus.Ok) throw new InvalidOperationException($"workload: {op} failed with {status}");
    }

    private Op Begin(CrashRecording recording, Kind kind, long lba, long value)
    {
        var op = new Op(_ops.Count, kind, lba, value);
        _ops.Add(op);
        op.Start = recording.Mark($"start op {op.Index}: {op}");
        return op;
    }

    private void End(CrashRecording recording, Op op) => op.Ack = recording.Mark($"ack op {op.Index}: {op}");

    private sealed class CrashInjectedException : Exception;

    public void Dispose()
    {
        if (_image != null) NativeMemory.AlignedFree(_image);
        _image = null;
    }
}
