namespace PfnBlock.Block;

/// <summary>
/// Polled completion, the kernel's <c>REQ_POLLED</c> + <c>bio_poll</c>: a thread that waits for
/// its own bios reaps their completions itself instead of being woken by a device's thread.
/// </summary>
/// <remarks>
/// <para>The contract, in three steps. A thread opens a scope with <see cref="Begin"/>, which
/// promises that it keeps calling <see cref="Poll"/> while any bio it submitted with
/// <see cref="BioFlags.Polled"/> is in flight. A device that supports polling
/// (<see cref="DeviceFeatures.Poll"/>) and receives such a bio on such a thread may queue it on a
/// <see cref="PollQueue"/> of that thread and leave its completion to the thread's next
/// <see cref="Poll"/>; it may also defer starting it until then, as a plug does, so several
/// polled bios go to the kernel in one call. Everything else completes as usual. <see cref="End"/>
/// closes the scope and, at the outermost level, polls until nothing polled is left.</para>
/// <para>Why a thread scope and not only the flag: a bio's flags travel with it, also to a target's
/// worker thread or the requeue worker, which never poll. Those threads are outside any scope, so
/// a device completes the bios they submit on its own thread, and nothing waits for a poll that
/// never comes. A poll therefore never has to find "its" bio: it reaps whatever the thread's queues
/// hold, as <c>io_uring_enter(GETEVENTS)</c> does, and the waiter checks its own bio afterwards.</para>
/// </remarks>
public static class BlockPoll
{
    /// <summary>
    /// Opens a polling scope on the calling thread (nestable): until the matching <see cref="End"/>,
    /// polled bios it submits may complete only inside its own <see cref="Poll"/> calls.
    /// </summary>
    public static void Begin() => BlockThread.Current.PollScopes++;

    /// <summary>
    /// Closes a scope opened by <see cref="Begin"/>; the outermost <see cref="End"/> first polls
    /// until no polled bio of this thread is in flight, so none is left without a poller.
    /// </summary>
    /// <exception cref="InvalidOperationException">No scope is open on this thread.</exception>
    public static void End()
    {
        BlockThread t = BlockThread.Current;
        if (t.PollScopes == 0) throw new InvalidOperationException("BlockPoll.End without a matching Begin on this thread");
        if (t.PollScopes == 1)
            while (Poll(wait: true)) { }
        t.PollScopes--;
    }

    /// <summary>True when the calling thread is inside a <see cref="Begin"/> scope.</summary>
    public static bool IsPolling => BlockThread.Current.PollScopes > 0;

    /// <summary>
    /// Hands the polled bios this thread queued to their devices and reaps their completions, which
    /// run here, on this thread. With <paramref name="wait"/>, blocks until at least one completion
    /// event (which may be a step of a request rather than a whole bio: check your bios and poll again).
    /// </summary>
    /// <returns>False when nothing polled is in flight on this thread (the caller must wait some
    /// other way for bios that complete elsewhere); true when it polled.</returns>
    public static bool Poll(bool wait)
    {
        BlockThread t = BlockThread.Current;
        PollQueue? only = null;
        int active = 0;
        for (int i = 0; i < t.PollQueueCount; i++)
        {
            PollQueue q = t.PollQueues[i]!;
            if (q.IsClosed) { t.RemovePollQueue(i--); continue; }
            if (q.InFlight == 0) continue;
            only ??= q;
            active++;
        }
        if (active == 0) return false;
        if (active == 1) { only!.Poll(wait); return true; }
        // Several devices: look at each without blocking, and block on one only when none had
        // anything, so a slow device does not hold back the others' completions.
        int reaped = 0;
        for (int i = 0; i < t.PollQueueCount; i++)
        {
            PollQueue q = t.PollQueues[i]!;
            if (q.InFlight > 0) reaped += q.Poll(wait: false);
        }
        if (reaped == 0 && wait && only!.InFlight > 0) only.Poll(wait: true);
        return true;
    }
}

/// <summary>
/// One device's queue of polled requests for one thread (created by the device on that thread,
/// found again through <see cref="BlockThread"/>). Only the owning thread submits to it and polls it.
/// </summary>
internal abstract class PollQueue
{
    /// <summary>The device (or its engine) that opened the queue; one queue per owner and thread.</summary>
    public abstract object Owner { get; }
    /// <summary>Requests queued here and not yet completed (read and written by the owning thread only).</summary>
    public abstract int InFlight { get; }
    /// <summary>True once the device closed the queue; the thread then forgets it.</summary>
    public abstract bool IsClosed { get; }
    /// <summary>Submits what is queued and reaps completions, blocking for one when <paramref name="wait"/>; returns the completion events handled.</summary>
    public abstract int Poll(bool wait);
}
