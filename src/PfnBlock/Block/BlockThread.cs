using System.Runtime.CompilerServices;

namespace PfnBlock.Block;

/// <summary>
/// What the block layer keeps per thread, in one object so that an I/O finds all of it with one
/// thread-local lookup however deep its stack: the dispatch queue (bios submitted while the thread
/// is already dispatching, the kernel's <c>current-&gt;bio_list</c>) and the thread's blocks of
/// statistics counters, one per device it has touched.
/// </summary>
internal sealed class BlockThread
{
    [ThreadStatic] private static BlockThread? t_current;

    /// <summary>This thread's state.</summary>
    public static BlockThread Current
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        get => t_current ?? Create();
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static BlockThread Create() => t_current = new BlockThread();

    /// <summary>True while the thread is inside a dispatch loop.</summary>
    public bool Dispatching;
    /// <summary>Dispatch loops opened inside another on this thread (<see cref="BlockDevice.SubmitNested(Bio)"/>).</summary>
    public int Nesting;
    /// <summary>The next bio to dispatch.</summary>
    public Bio? Head;
    private Bio? _tail;

    /// <summary>Nesting depth of <see cref="BlockPoll.Begin"/> on this thread; polled bios are honoured while above 0.</summary>
    public int PollScopes;
    /// <summary>The poll queues devices opened for this thread's polled bios, [0, <see cref="PollQueueCount"/>).</summary>
    public PollQueue?[] PollQueues = [];
    /// <summary>Entries of <see cref="PollQueues"/> in use.</summary>
    public int PollQueueCount;

    /// <summary>The poll queue <paramref name="owner"/> opened for this thread, or null.</summary>
    public PollQueue? FindPollQueue(object owner)
    {
        PollQueue?[] queues = PollQueues;
        for (int i = 0; i < PollQueueCount; i++)
            if (ReferenceEquals(queues[i]!.Owner, owner)) return queues[i];
        return null;
    }

    /// <summary>Adds a queue a device opened for this thread (once per device and thread).</summary>
    public void AddPollQueue(PollQueue queue)
    {
        if (PollQueueCount == PollQueues.Length) Array.Resize(ref PollQueues, Math.Max(4, PollQueues.Length * 2));
        PollQueues[PollQueueCount++] = queue;
    }

    /// <summary>Drops the queue at <paramref name="index"/> (its device closed it).</summary>
    public void RemovePollQueue(int index)
    {
        PollQueues[index] = PollQueues[--PollQueueCount];
        PollQueues[PollQueueCount] = null;
    }

    /// <summary>Open <see cref="BlockPlug"/> scopes on this thread; bios of devices that take batches wait in the plug while above 0.</summary>
    public int PlugDepth;
    /// <summary>Above 0 while a submission must not wait in the plug (its caller blocks on the result).</summary>
    public int PlugBypass;
    /// <summary>Bios waiting in the plug, [0, <see cref="PluggedCount"/>), each with the device it goes to.</summary>
    public Bio[] Plugged = [];
    /// <summary>The device of each plugged bio.</summary>
    public BlockDevice[] PluggedDevices = [];
    /// <summary>Entries of <see cref="Plugged"/> in use.</summary>
    public int PluggedCount;

    /// <summary>True when a bio for a device that takes batches should wait in the plug.</summary>
    public bool Plugging
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        get => PlugDepth > 0 && PlugBypass == 0;
    }

    /// <summary>Adds a validated bio to the plug; true when the plug is now full and must be flushed.</summary>
    public bool Plug(Bio bio, BlockDevice device)
    {
        if (Plugged.Length == 0)
        {
            // Once per thread, on its first plug: the plug itself then allocates nothing.
            Plugged = new Bio[BlockPlug.MaxBios];
            PluggedDevices = new BlockDevice[BlockPlug.MaxBios];
        }
        Plugged[PluggedCount] = bio;
        PluggedDevices[PluggedCount] = device;
        return ++PluggedCount == BlockPlug.MaxBios;
    }

    /// <summary>This thread's blocks of counters (native, cache-line aligned), indexed by <see cref="DiskStats"/> number; 0 where none yet.</summary>
    public nint[] StatsBlocks = [];

    /// <summary>Queues <paramref name="bio"/> for <paramref name="device"/>.</summary>
    public void Enqueue(Bio bio, BlockDevice device)
    {
        bio.QueuedFor = device;
        if (_tail is null) Head = bio;
        else _tail.NextQueued = bio;
        _tail = bio;
    }

    /// <summary>Takes <paramref name="head"/> (which is <see cref="Head"/>) off the queue and says where it goes.</summary>
    public BlockDevice Dequeue(Bio head)
    {
        Head = head.NextQueued;
        if (Head is null) _tail = null;
        head.NextQueued = null;
        BlockDevice device = head.QueuedFor!;
        head.QueuedFor = null;
        return device;
    }

    /// <summary>The queue of an outer dispatch loop, kept aside while a nested one runs.</summary>
    public readonly record struct QueueState(Bio? Head, Bio? Tail);

    /// <summary>Empties the queue for a nested dispatch loop and returns what was in it.</summary>
    public QueueState SaveQueue()
    {
        var saved = new QueueState(Head, _tail);
        Head = _tail = null;
        Dispatching = false;
        return saved;
    }

    /// <summary>Puts back the outer loop's queue after a nested loop finished.</summary>
    public void RestoreQueue(QueueState saved)
    {
        Head = saved.Head;
        _tail = saved.Tail;
        Dispatching = true;
    }
}
