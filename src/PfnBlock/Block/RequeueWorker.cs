using System.Diagnostics;

namespace PfnBlock.Block;

/// <summary>
/// The thread that resubmits requeued bios of idle devices (the kernel's <c>kblockd</c>): a device
/// with bios on its requeue list and nothing in flight to kick them asks to be kicked after a short
/// delay. A dedicated thread, not a timer: timer callbacks run on the thread pool, which a busy
/// process can starve for seconds, and a requeued bio must not wait on that.
/// </summary>
internal static class RequeueWorker
{
    private static readonly object s_lock = new();
    private static readonly Dictionary<BlockDevice, long> s_due = new(ReferenceEqualityComparer.Instance);
    private static Thread? s_thread;

    /// <summary>Kicks <paramref name="device"/>'s requeue list after <paramref name="delay"/> (or sooner, if already scheduled sooner).</summary>
    public static void Schedule(BlockDevice device, TimeSpan delay)
    {
        long due = Stopwatch.GetTimestamp() + (long)(delay.TotalSeconds * Stopwatch.Frequency);
        lock (s_lock)
        {
            if (s_due.TryGetValue(device, out long existing) && existing <= due) return;
            s_due[device] = due;
            if (s_thread is null)
            {
                s_thread = new Thread(Run) { IsBackground = true, Name = "pfnblock-requeue" };
                s_thread.Start();
            }
            Monitor.Pulse(s_lock);
        }
    }

    private static void Run()
    {
        var ready = new List<BlockDevice>();
        while (true)
        {
            lock (s_lock)
            {
                while (true)
                {
                    long now = Stopwatch.GetTimestamp(), next = long.MaxValue;
                    foreach ((BlockDevice d, long due) in s_due)
                    {
                        if (due <= now) ready.Add(d);
                        else next = Math.Min(next, due);
                    }
                    foreach (BlockDevice d in ready) s_due.Remove(d);
                    if (ready.Count > 0) break;
                    int waitMs = next == long.MaxValue ? Timeout.Infinite
                        : (int)Math.Clamp((next - now) * 1000 / Stopwatch.Frequency, 0, int.MaxValue);
                    // A sub-millisecond remainder still waits one tick rather than spinning.
                    Monitor.Wait(s_lock, waitMs == 0 ? 1 : waitMs);
                }
            }
            foreach (BlockDevice d in ready)
            {
                try { d.KickRequeue(); }
                catch (Exception e) { Trace.TraceError($"pfnblock: requeue of {d.Name} failed: {e}"); }
            }
            ready.Clear();
        }
    }
}
