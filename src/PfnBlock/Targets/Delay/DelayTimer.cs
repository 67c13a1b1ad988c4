using System.Diagnostics;

namespace PfnBlock.Targets.Delay;

/// <summary>
/// The one thread that releases the bios of every <see cref="DelayTarget"/> when they are due
/// (dm-delay's timer and <c>kdelayd</c> work queue in one): it sleeps until the earliest due time
/// of all targets, submits what is due, and sleeps again. A dedicated thread, not a thread-pool
/// timer, which a busy process can starve.
/// </summary>
/// <remarks>
/// Waking it costs the submitter a lock only when its bio is due before the time the thread means
/// to wake (or while the thread is scanning): with one delay per class, a new bio is usually due
/// after the ones already held, and then the submitter touches nothing shared.
/// </remarks>
internal static class DelayTimer
{
    private static readonly object s_lock = new(); // a monitor, for Wait and Pulse
    private static DelayTarget[] s_targets = [];
    private static Thread? s_thread;
    // When the thread will next look (a Stopwatch timestamp); long.MinValue while it is scanning.
    private static long s_nextWake = long.MinValue;
    private static bool s_kicked;
    private static long s_allocated;

    /// <summary>Bytes the timer thread has allocated since it started (tests check that releasing bios allocates nothing).</summary>
    internal static long AllocatedBytes => Volatile.Read(ref s_allocated);

    /// <summary>The timer thread, once started (tests count threads).</summary>
    internal static Thread? Thread => s_thread;

    /// <summary>Adds a target to those the thread serves, starting the thread with the first one.</summary>
    public static void Register(DelayTarget target)
    {
        lock (s_lock)
        {
            s_targets = [.. s_targets, target];
            if (s_thread is null)
            {
                s_thread = new Thread(Run) { IsBackground = true, Name = "pfnblock-delay" };
                s_thread.Start();
            }
        }
    }

    /// <summary>Stops serving a target (it submits what it still holds itself).</summary>
    public static void Unregister(DelayTarget target)
    {
        lock (s_lock) s_targets = [.. s_targets.Where(t => t != target)];
    }

    /// <summary>Tells the thread a bio is due at <paramref name="due"/>, if it would otherwise look later.</summary>
    public static void Wake(long due)
    {
        long wake = Volatile.Read(ref s_nextWake);
        if (wake != long.MinValue && due >= wake) return;
        lock (s_lock)
        {
            s_kicked = true;
            Monitor.Pulse(s_lock);
        }
    }

    private static void Run()
    {
        long allocatedAtStart = GC.GetAllocatedBytesForCurrentThread();
        while (true)
        {
            // Scanning: a bio queued from now on wakes the thread (or makes it scan again) whatever its due time.
            Volatile.Write(ref s_nextWake, long.MinValue);
            long next = long.MaxValue;
            foreach (DelayTarget t in Volatile.Read(ref s_targets))
            {
                try { next = Math.Min(next, t.SubmitDue(Stopwatch.GetTimestamp())); }
                catch (Exception e) { Trace.TraceError($"pfnblock: delay target: releasing bios failed: {e}"); }
            }
            Volatile.Write(ref s_allocated, GC.GetAllocatedBytesForCurrentThread() - allocatedAtStart);
            lock (s_lock)
            {
                if (s_kicked)
                {
                    s_kicked = false;
                    continue;
                }
                Volatile.Write(ref s_nextWake, next);
                if (next == long.MaxValue) Monitor.Wait(s_lock);
                else
                {
                    long ticks = next - Stopwatch.GetTimestamp();
                    // Round up: waking early would only cost another scan, but late is what a delay promises.
                    int ms = (int)Math.Clamp((ticks * 1000 + Stopwatch.Frequency - 1) / Stopwatch.Frequency, 0, int.MaxValue);
                    if (ms > 0) Monitor.Wait(s_lock, ms);
                }
                s_kicked = false;
            }
        }
    }
}
