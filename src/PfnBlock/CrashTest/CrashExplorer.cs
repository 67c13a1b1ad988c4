using System.Diagnostics;
using System.Globalization;
using System.Runtime.InteropServices;
using PfnBlock.Memory;

namespace PfnBlock.CrashTest;

/// <summary>
/// The crash-state explorer: records a target's workload, enumerates the crash states the x86
/// persistence model allows (<see cref="PersistenceModel"/>), materialises each into the target's
/// image, and runs the target's recovery and invariants on it.
/// </summary>
/// <remarks>
/// The state budget is spread over the crash points smallest first: a point with fewer states than
/// its share is explored exhaustively and leaves the rest to the others; a larger one gets the
/// structured states (nothing, everything, each unit alone, all but each unit) and then seeded random
/// ones, without repeats.
/// </remarks>
public static unsafe class CrashExplorer
{
    /// <summary>Explores <paramref name="target"/>'s workload within <see cref="CrashTestOptions.States"/> states.</summary>
    /// <exception cref="InvalidOperationException">Tracing is off in this process, or the workload stored to its image without going through a traced primitive.</exception>
    public static CrashTestResult Run(ICrashTarget target, CrashTestOptions options)
    {
        using var session = new Session(target);
        (double untraced, double record) = session.Record(timed: true);
        var model = new PersistenceModel(session.Trace);

        double[] counts = new double[model.CrashPoints.Length];
        session.Walk(model, planning: true, (i, _, space, _) => { counts[i] = space.Count; return true; });
        long[] budget = Spread(counts, options.States);

        var result = new CrashTestResult
        {
            Structure = target.Name,
            Seed = options.Seed,
            Ops = options.Ops,
            TraceEvents = session.Trace.Count,
            StoreWords = model.Pieces.Length,
            Fences = session.Trace.CountOf(CrashEventKind.Fence),
            CrashPoints = model.CrashPoints.Length,
            StatesPossible = counts.Sum(),
            UntracedSeconds = untraced,
            RecordSeconds = record,
        };
        var clock = Stopwatch.StartNew();
        var checker = new StateChecker(session, model, options, result);
        session.Walk(model, planning: false, (i, c, space, _) =>
        {
            checker.Explore(c, space, budget[i]);
            return true;
        });
        result.ExploreSeconds = clock.Elapsed.TotalSeconds;
        session.CheckRestored();
        return result;
    }

    /// <summary>Rebuilds one crash state (a reproducer's) and checks it.</summary>
    /// <returns>Null when the state is consistent, else the failure.</returns>
    /// <exception cref="ArgumentException">The crash point is not one of this workload's.</exception>
    public static string? Replay(ICrashTarget target, int crashPoint, IReadOnlyList<LandedStore> landed)
    {
        using var session = new Session(target);
        session.Record(timed: false);
        var model = new PersistenceModel(session.Trace);
        if (Array.IndexOf(model.CrashPoints, crashPoint) < 0)
            throw new ArgumentException($"{crashPoint} is not a crash point of this workload (crash points are the fences' event indices and the trace length, {session.Trace.Count})");
        string? failure = null;
        var checker = new StateChecker(session, model, new CrashTestOptions { States = 1 }, null);
        session.Walk(model, planning: false, (_, c, _, pending) =>
        {
            if (c != crashPoint) return true;
            var chosen = pending.Where(p => landed.Any(s => Covers(s, model.Pieces[p]))).ToList();
            failure = checker.Check(c, chosen);
            return false;
        });
        session.CheckRestored();
        return failure;
    }

    /// <summary>Parses a <see cref="CrashReproducer.ReplaySpec"/>: <c>CRASHPOINT:EVENT@HEXOFFSET+LENGTH,…</c>.</summary>
    /// <exception cref="FormatException">Not of that form.</exception>
    public static (int CrashPoint, List<LandedStore> Landed) ParseReplay(string spec)
    {
        string[] parts = spec.Split(':', 2);
        if (!int.TryParse(parts[0], CultureInfo.InvariantCulture, out int point) || point < 0)
            throw new FormatException($"replay '{spec}': expected CRASHPOINT:EVENT@HEXOFFSET+LENGTH,...");
        var landed = new List<LandedStore>();
        if (parts.Length == 2)
        {
            foreach (string item in parts[1].Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
            {
                string[] a = item.Split('@', 2);
                string[] b = a.Length == 2 ? a[1].Split('+', 2) : [];
                if (a.Length != 2 || b.Length != 2
                    || !int.TryParse(a[0], CultureInfo.InvariantCulture, out int e)
                    || !long.TryParse(b[0], NumberStyles.HexNumber, CultureInfo.InvariantCulture, out long off)
                    || !int.TryParse(b[1], CultureInfo.InvariantCulture, out int len) || len <= 0)
                    throw new FormatException($"replay store '{item}': expected EVENT@HEXOFFSET+LENGTH");
                landed.Add(new LandedStore(e, off, len));
            }
        }
        return (point, landed);
    }

    private static bool Covers(LandedStore s, in StorePiece p) => s.Event == p.Event && p.Offset >= s.Offset && p.Offset + p.Length <= s.Offset + s.Length;

    /// <summary>Budgets per crash point: smallest first, each at most its count and at most an even share of what is left.</summary>
    internal static long[] Spread(double[] counts, long states)
    {
        long[] budget = new long[counts.Length];
        int[] order = Enumerable.Range(0, counts.Length).OrderBy(i => counts[i]).ToArray();
        long remaining = states;
        int left = counts.Length;
        foreach (int i in order)
        {
            long share = remaining / left--;
            long cap = counts[i] >= long.MaxValue ? long.MaxValue : (long)counts[i];
            budget[i] = Math.Min(cap, Math.Max(share, remaining > 0 ? 1 : 0));
            remaining -= budget[i];
        }
        return budget;
    }

    /// <summary>The recorded workload and the two images: the target's (working) and the explorer's durable copy.</summary>
    private sealed class Session : IDisposable
    {
        private readonly ICrashTarget _target;
        private readonly long _length;
        private byte* _base;
        private byte* _durable;
        private CrashImage? _image;

        public Session(ICrashTarget target)
        {
            if (!PmemTrace.Enabled)
                throw new InvalidOperationException($"crash testing needs persistence tracing, which is off in this process (AppContext switch {PmemTrace.SwitchName} or PFNBLOCK_PMEM_TRACING=1)");
            _target = target;
            _length = target.ImageLength;
            _base = (byte*)NativeMemory.AlignedAlloc((nuint)_length, 4096);
            _durable = (byte*)NativeMemory.AlignedAlloc((nuint)_length, 4096);
            Buffer.MemoryCopy(target.Image, _base, _length, _length);
            Trace = new CrashTrace(_length);
        }

        public ICrashTarget Target => _target;
        public CrashTrace Trace { get; private set; }
        public CrashImage Image => _image!;

        /// <summary>Runs the workload (a warm-up and an untraced run first when timed), then once recording; checks the trace accounts for every change.</summary>
        public (double Untraced, double Recorded) Record(bool timed)
        {
            double untraced = 0;
            if (timed)
            {
                _target.Run(new CrashRecording(new CrashTrace(_length), _target.Image, record: false));
                ResetImage();
                var run = Stopwatch.StartNew();
                _target.Run(new CrashRecording(new CrashTrace(_length), _target.Image, record: false));
                untraced = run.Elapsed.TotalSeconds;
                ResetImage();
            }
            Trace = new CrashTrace(_length);
            var clock = Stopwatch.StartNew();
            _target.Run(new CrashRecording(Trace, _target.Image, record: true));
            double recorded = clock.Elapsed.TotalSeconds;

            // Replaying every store onto the base must give the final image, or something stored untraced.
            Buffer.MemoryCopy(_base, _durable, _length, _length);
            for (int i = 0; i < Trace.Count; i++)
            {
                CrashEvent e = Trace[i];
                if (e.Kind is CrashEventKind.Store or CrashEventKind.NonTemporalStore) Trace.Data(e).CopyTo(new Span<byte>(_durable + e.Offset, e.Length));
            }
            long diff = FirstDifference(_durable, _target.Image, _length);
            if (diff >= 0)
                throw new InvalidOperationException($"{_target.Name}: the workload changed byte 0x{diff:x} of the image without a traced store (every store to persistent memory must go through PmemStore or PersistentMemory)");
            ResetImage();
            return (untraced, recorded);
        }

        /// <summary>
        /// Visits the crash points in order, keeping the durable image (and, unless planning, the
        /// working image) up to date; the visitor gets the point's space and its optional pieces.
        /// </summary>
        public void Walk(PersistenceModel model, bool planning, Func<int, int, CrashPointSpace, List<int>, bool> visit)
        {
            Buffer.MemoryCopy(_base, _durable, _length, _length);
            if (!planning) ResetImage();
            _image = new CrashImage(model, _durable, planning ? null : _target.Image);
            var pending = new List<int>();
            int next = 0;
            for (int i = 0; i < model.CrashPoints.Length; i++)
            {
                int c = model.CrashPoints[i];
                while (next < model.Pieces.Length && model.Pieces[next].Event < c) pending.Add(next++);
                int keep = 0;
                for (int k = 0; k < pending.Count; k++)
                {
                    int p = pending[k];
                    if (model.DurableAt[p] < c) _image.MakeDurable(p);
                    else pending[keep++] = p;
                }
                pending.RemoveRange(keep, pending.Count - keep);
                var space = new CrashPointSpace(model, pending.Where(_image.Changes));
                if (!visit(i, c, space, pending)) break;
            }
        }

        /// <summary>After exploring, the working image must equal the durable one: every state and every recovery store was undone.</summary>
        public void CheckRestored()
        {
            long diff = _image?.FirstDifference() ?? -1;
            if (diff >= 0)
                throw new InvalidOperationException($"{_target.Name}: recovery changed byte 0x{diff:x} of the image without a traced store; the states explored after it are unreliable");
        }

        private void ResetImage() => Buffer.MemoryCopy(_base, _target.Image, _length, _length);

        private static long FirstDifference(byte* a, byte* b, long length)
        {
            for (long at = 0; at < length; at += 1 << 30)
            {
                int chunk = (int)Math.Min(1 << 30, length - at);
                int d = new ReadOnlySpan<byte>(a + at, chunk).CommonPrefixLength(new ReadOnlySpan<byte>(b + at, chunk));
                if (d < chunk) return at + d;
            }
            return -1;
        }

        /// <summary>Leaves the target's image as the session found it (the next session snapshots it as its base).</summary>
        public void Dispose()
        {
            if (_base != null) ResetImage();
            if (_base != null) NativeMemory.AlignedFree(_base);
            if (_durable != null) NativeMemory.AlignedFree(_durable);
            _base = _durable = null;
        }
    }

    /// <summary>Materialises states into the working image, runs the target's check, undoes everything, and keeps the score.</summary>
    private sealed class StateChecker(Session session, PersistenceModel model, CrashTestOptions options, CrashTestResult? result)
    {
        private readonly PmemTraceRecorder _recovery = new();
        private readonly CrashRecoveryContext _context = new(session.Trace);
        private readonly List<int> _landed = [];

        public void Explore(int crashPoint, CrashPointSpace space, long budget)
        {
            long[] choice = new long[space.UnitCount];
            if (budget >= space.Count)
            {
                for (long index = 0; index < (long)space.Count; index++)
                {
                    space.StateAt(index, choice);
                    Check(crashPoint, space, choice);
                }
                result!.ExhaustiveCrashPoints++;
                return;
            }
            var seen = new HashSet<ulong>();
            long done = 0;
            foreach (long[] state in space.StructuredStates())
            {
                if (done == budget) return;
                if (!seen.Add(Hash(state))) continue;
                Check(crashPoint, space, state);
                done++;
            }
            var random = new Random(unchecked(options.Seed * 1_000_003 + crashPoint));
            for (long attempts = 0; done < budget && attempts < budget * 20; attempts++)
            {
                space.RandomState(random, choice);
                if (!seen.Add(Hash(choice))) continue;
                Check(crashPoint, space, choice);
                done++;
            }
        }

        private void Check(int crashPoint, CrashPointSpace space, long[] choice)
        {
            _landed.Clear();
            space.Landed(choice, _landed);
            string? failure = Check(crashPoint, _landed);
            result!.StatesExplored++;
            if (failure is null) return;
            result.InconsistentStates++;
            if (result.Reproducers.Count < options.MaxReproducers)
                result.Reproducers.Add(new CrashReproducer(options.Seed, crashPoint, session.Trace.LastLabelBefore(crashPoint), Merge(_landed), failure));
        }

        /// <summary>Lands <paramref name="landed"/> on the durable image of <paramref name="crashPoint"/>, checks, undoes.</summary>
        public string? Check(int crashPoint, List<int> landed)
        {
            landed.Sort();
            CrashImage image = session.Image;
            foreach (int p in landed) image.Land(p);
            _context.Reset(crashPoint);
            _recovery.Clear();
            string? failure;
            using (PmemTrace.Record(_recovery))
            {
                try { failure = session.Target.Verify(_context); }
                catch (Exception e) { failure = $"recovery failed: {e.GetType().Name}: {e.Message}"; }
            }
            foreach (int p in landed) image.Restore(model.Pieces[p].Offset, model.Pieces[p].Length);
            UndoRecovery(image);
            return failure;
        }

        /// <summary>Puts back what recovery stored, through the target's image or any mapping it declared.</summary>
        private void UndoRecovery(CrashImage image)
        {
            long length = session.Trace.ImageLength;
            foreach (PmemTraceEvent e in _recovery.Events)
            {
                if (e.Kind is not (PmemTraceKind.Store or PmemTraceKind.NonTemporalStore)) continue;
                nint at = e.Address - (nint)session.Target.Image;
                if (at >= 0 && at < length) { image.Restore(at, e.Length); continue; }
                foreach (nint mapping in _context.Mappings)
                {
                    at = e.Address - mapping;
                    if (at >= 0 && at < length) { image.Restore(at, e.Length); break; }
                }
            }
        }

        /// <summary>Landed pieces as stores: adjacent words of one event merged.</summary>
        private List<LandedStore> Merge(List<int> landed)
        {
            var stores = new List<LandedStore>();
            foreach (int i in landed)
            {
                StorePiece p = model.Pieces[i];
                if (stores.Count > 0 && stores[^1] is var last && last.Event == p.Event && last.Offset + last.Length == p.Offset)
                    stores[^1] = last with { Length = last.Length + p.Length };
                else stores.Add(new LandedStore(p.Event, p.Offset, p.Length));
            }
            return stores;
        }

        private static ulong Hash(long[] choice)
        {
            ulong h = 14695981039346656037UL;
            foreach (long c in choice) h = (h ^ (ulong)c) * 1099511628211UL;
            return h;
        }
    }
}
