using System.Diagnostics;
using PfnBlock.Block;
using PfnBlock.Devices;

namespace PfnBlock.Targets.Delay;

/// <summary>
/// Holds bios back for a fixed time before passing them on, per kind of I/O, optionally to other
/// devices (the kernel's <c>dm-delay</c>). Table:
/// <c>START LENGTH delay DEV OFFSET DELAY_MS [WRITE_DEV WRITE_OFFSET WRITE_DELAY_MS [FLUSH_DEV FLUSH_OFFSET FLUSH_DELAY_MS]]</c>.
/// With three arguments every bio goes to DEV after DELAY_MS; with six, writes (and discards,
/// write-zeroes and flushes) take the second triple; with nine, flushes take the third.
/// </summary>
/// <remarks>
/// <para>A bio to delay is remapped at once and put on its class's list with the time it is due
/// (dm-delay's <c>delayed_bios</c>): each class has one delay, so each list is already in due
/// order and is a ring of slots, grown (never per I/O) when more bios wait than ever before. One
/// dedicated thread for all delay targets, <see cref="DelayTimer"/>, sleeps until the earliest due
/// time and submits what is due: no thread, task or timer per I/O. A delay of 0 remaps in place.</para>
/// <para>A write carrying PREFLUSH is delayed as a write: when several devices lie below, the
/// mapped device sends the preflush ahead as a flush of its own, which takes the flush class.</para>
/// <para>Disposing the target (the table going away) submits every held bio at once, as dm-delay's
/// presuspend does.</para>
/// </remarks>
public sealed class DelayTarget : Target, IRegisteredTarget
{
    /// <summary>One kind of I/O: where it goes and how long it waits (dm-delay's <c>delay_class</c>).</summary>
    private sealed class DelayClass(LowerDevice dev, long start, long delayMs)
    {
        public readonly IBlockDevice Device = dev.Device;
        public readonly string Spec = dev.Spec;
        public readonly long Start = start;
        public readonly long DelayMs = delayMs;
        public readonly long DelayTicks = delayMs * Stopwatch.Frequency / 1000;
        // The held bios, oldest first: a ring of (bio, due timestamp).
        public Bio?[] Bios = new Bio?[64];
        public long[] Due = new long[64];
        public int Head, Count;

        public override string ToString() => $"{Spec} {Start} {DelayMs}";
    }

    private readonly DelayClass _read, _write, _flush;
    private readonly DelayClass[] _classes;
    private readonly int _argCount;
    private readonly Lock _lock = new();
    // Held by the timer thread while it submits this target's due bios, and by Dispose: no bio reaches a lower device after Dispose returns.
    private readonly Lock _submitLock = new();
    private bool _disposed;

    private DelayTarget(DelayClass read, DelayClass write, DelayClass flush, int argCount)
        : base([.. new[] { read.Device, write.Device, flush.Device }.Distinct()])
    {
        (_read, _write, _flush, _argCount) = (read, write, flush, argCount);
        _classes = [.. new[] { read, write, flush }.Distinct()];
        DelayTimer.Register(this);
    }

    /// <inheritdoc/>
    public static TargetType TargetType { get; } = new()
    {
        Name = "delay",
        Version = new(1, 4, 0),
        Arguments = "DEV OFFSET DELAY_MS [WRITE_DEV WRITE_OFFSET WRITE_DELAY_MS [FLUSH_DEV FLUSH_OFFSET FLUSH_DELAY_MS]]",
        Summary = "linear onto DEV, each bio held back DELAY_MS milliseconds first (writes and flushes may go elsewhere, with delays of their own)",
        Create = Create,
        Samples =
        [
            new("1 ms on every bio", s => new($"{s.Lower[0]} 0 1", s.LowerSectors)),
            new("reads at once, writes 1 ms, flushes 2 ms, at an offset", s =>
                new($"{s.Lower[0]} 2048 0 {s.Lower[0]} 2048 1 {s.Lower[0]} 2048 2", s.LowerSectors - 2048)),
        ],
    };

    private static DelayTarget Create(TargetContext ctx)
    {
        int n = ctx.Args.Count;
        if (n is not (3 or 6 or 9)) throw TargetContext.Fail($"Requires exactly 3, 6 or 9 arguments (got {n})");
        DelayClass read = Class(ctx, 0, "");
        if (n == 3) return new DelayTarget(read, read, read, n);
        DelayClass write = Class(ctx, 3, "write ");
        if (n == 6) return new DelayTarget(read, write, write, n);
        return new DelayTarget(read, write, Class(ctx, 6, "flush "), n);
    }

    private static DelayClass Class(TargetContext ctx, int at, string what)
    {
        long start = ctx.Sector(at + 1, $"Invalid {what}device sector");
        long delay = ctx.Number(at + 2, $"Invalid {what}delay", uint.MaxValue);
        LowerDevice dev = ctx.Device(at);
        TargetContext.RequireArea(dev.Device, start, ctx.Length);
        return new DelayClass(dev, start, delay);
    }

    /// <inheritdoc/>
    public override bool RemapsWithinLimits => true; // each class's area was checked; only the sector moves

    /// <summary>Bios held now (dm-delay's status: reads, writes and flushes waiting).</summary>
    public int Held
    {
        get { lock (_lock) return _classes.Sum(c => c.Count); }
    }

    /// <inheritdoc/>
    public override MapResult Map(Bio bio, out IBlockDevice? lower)
    {
        DelayClass c = bio.Op switch { BioOp.Read => _read, BioOp.Flush => _flush, _ => _write };
        if (bio.Op != BioOp.Flush) bio.Iter.Sector += c.Start;
        lower = c.Device;
        if (c.DelayTicks == 0) return MapResult.Remapped;
        long due = Stopwatch.GetTimestamp() + c.DelayTicks;
        lock (_lock)
        {
            // A map racing with the table's teardown: pass the bio on rather than hold it forever.
            if (_disposed) return MapResult.Remapped;
            if (c.Count == c.Bios.Length) Grow(c);
            int tail = (c.Head + c.Count) % c.Bios.Length;
            c.Bios[tail] = bio;
            c.Due[tail] = due;
            c.Count++;
        }
        lower = null;
        DelayTimer.Wake(due);
        return MapResult.Submitted;
    }

    private static void Grow(DelayClass c)
    {
        var bios = new Bio?[c.Bios.Length * 2];
        long[] due = new long[bios.Length];
        for (int i = 0; i < c.Count; i++)
        {
            int from = (c.Head + i) % c.Bios.Length;
            bios[i] = c.Bios[from];
            due[i] = c.Due[from];
        }
        (c.Bios, c.Due, c.Head) = (bios, due, 0);
    }

    /// <summary>Takes the oldest bio of any class that is due at <paramref name="now"/>; false when none is.</summary>
    private bool TryTakeDue(long now, out Bio bio, out IBlockDevice device)
    {
        lock (_lock)
        {
            foreach (DelayClass c in _classes)
            {
                if (c.Count == 0 || c.Due[c.Head] > now) continue;
                bio = c.Bios[c.Head]!;
                c.Bios[c.Head] = null;
                c.Head = (c.Head + 1) % c.Bios.Length;
                c.Count--;
                device = c.Device;
                return true;
            }
        }
        bio = null!;
        device = null!;
        return false;
    }

    /// <summary>
    /// Submits every bio due at <paramref name="now"/> (all of them when <paramref name="all"/>) and
    /// returns when the next one is due (<see cref="long.MaxValue"/> when none is held). Runs on the
    /// timer thread, and on the disposing thread for the last time.
    /// </summary>
    internal long SubmitDue(long now, bool all = false)
    {
        lock (_submitLock)
        {
            if (_disposed && !all) return long.MaxValue;
            while (TryTakeDue(all ? long.MaxValue : now, out Bio bio, out IBlockDevice device)) device.Submit(bio);
            long next = long.MaxValue;
            lock (_lock)
                foreach (DelayClass c in _classes)
                    if (c.Count > 0) next = Math.Min(next, c.Due[c.Head]);
            return next;
        }
    }

    /// <inheritdoc/>
    public override string Arguments => _argCount switch
    {
        3 => _read.ToString(),
        6 => $"{_read} {_write}",
        _ => $"{_read} {_write} {_flush}",
    };

    /// <inheritdoc/>
    public override void Dispose()
    {
        DelayTimer.Unregister(this);
        lock (_submitLock)
        {
            lock (_lock) _disposed = true;
            SubmitDue(0, all: true);
        }
        base.Dispose();
    }
}
