using System.Diagnostics;
using PfnBlock.Block;
using PfnBlock.Memory;

namespace PfnBlock.Targets.WriteCache;

/// <summary>
/// The write-back thread of a write cache: takes the log from its tail in runs (committed
/// entries of one flush epoch, at most <see cref="WriteCacheOptions.WritebackJobs"/>; a discard or
/// write-zeroes alone), writes each run to the origin, flushes the origin, and only then persists
/// the new tail and frees the slots. The origin therefore always holds a prefix of the log, up to
/// the writes of one epoch in flight, which a crash may leave partly applied, as it may any
/// writes not yet separated by a flush.
/// </summary>
/// <remarks>
/// <para>What starts it: use above the high watermark (then it goes on down to the low one), a
/// writer finding the log full, data older than <c>max_age</c>, cleaner mode, and
/// <see cref="WriteBackAll"/>. <c>pause_writeback</c> holds it off while foreground writes keep
/// coming, unless the cache is above the high watermark.</para>
/// <para>Data goes to the origin straight from the cache slots: the bios name the cache's own
/// frames, so nothing is copied or allocated per run after the first (the arrays are sized once,
/// the bios are pooled). Within a run a block written twice is written back once, with its
/// newest data, since the bios of a run complete in any order.</para>
/// <para>Errors: a run the origin fails is retried after a growing pause (up to 5 s); the data
/// stays in the cache, the tail does not move, and <see cref="Errors"/>/<see cref="LastError"/>
/// report it.</para>
/// <para>Lost origin: an origin that another host can take over (<see cref="IOwnedDevice"/>, an RBD
/// image whose lock was broken and whose client was blocklisted) is checked on every pass of the
/// thread and after every failed run, and probed (one round trip) at most once a second, since a
/// cache that absorbs every write may not touch the origin for a long time. Once it is lost,
/// write-back stops for good in this process (writing behind the new owner's back would corrupt
/// its image), <see cref="Lost"/> says why, the target fails new writes with EIO, and every cached
/// entry stays in the cache for the operator.</para>
/// </remarks>
internal sealed class WriteCacheWriteback : IDisposable
{
    private static readonly TimeSpan s_idleWait = TimeSpan.FromMilliseconds(100);

    private readonly WriteCacheLog _log;
    private readonly IBlockDevice _origin;
    private readonly IOwnedDevice? _owned;
    private readonly string _name;
    private readonly Pfn _cachePfn;
    private WriteCacheOptions _options;
    private readonly Func<BlockStatus> _commit;
    private readonly Thread _thread;
    private readonly object _lock = new(); // a monitor: the thread waits on it
    private readonly Lock _runLock = new(); // one run at a time (the thread, or a test stepping by hand)
    private readonly BioPool _pool;
    private readonly Action<Bio> _endIo;
    private readonly ManualResetEventSlim _batchDone = new(false);
    private readonly (long Block, long Seq)[] _items;
    private readonly Bio[] _bios;
    private int _pending;
    private int _failedStatus;
    private bool _stop;
    private bool _draining;
    private bool _full;
    // When the first of the current streak of failed runs happened (Stopwatch ticks); 0 while runs succeed.
    private long _failingSinceTicks;
    private long _demandUpTo;
    private long _lastWriteTicks;
    private long _lastCommitTicks;
    private long _lastProbeTicks;
    private long _writtenBack;
    private long _errors;
    private string? _lastError;
    private string? _lost;
    private double _rate;
    private long _rateStartTicks;
    private long _rateStartCount;

    /// <summary>Starts the thread.</summary>
    /// <param name="log">The cache's log.</param>
    /// <param name="origin">Where the data goes.</param>
    /// <param name="cachePfn">The frame of the cache device's byte 0 (slots are named by frame in the bios).</param>
    /// <param name="options">Watermarks, jobs, ages.</param>
    /// <param name="commit">An autocommit of the cache (the writes so far made durable).</param>
    /// <param name="name">For the thread's name.</param>
    public WriteCacheWriteback(WriteCacheLog log, IBlockDevice origin, Pfn cachePfn, WriteCacheOptions options, Func<BlockStatus> commit, string name)
    {
        _commit = commit;
        _log = log;
        _origin = origin;
        _owned = origin as IOwnedDevice;
        _name = name;
        _cachePfn = cachePfn;
        _options = options;
        Cleaner = options.Cleaner;
        // Sized once for the most a table may ask (a reload may raise writeback_jobs up to this).
        int jobs = (int)Math.Min(Math.Max(options.WritebackJobs, 1024), log.Entries);
        _items = new (long, long)[jobs];
        _bios = new Bio[jobs + 1];
        _pool = new BioPool(new BioPoolOptions { Name = "writecache-writeback", MaxVecs = Bio.MaxVecs });
        _endIo = OnBioDone;
        _rateStartTicks = _lastCommitTicks = Stopwatch.GetTimestamp();
        _thread = new Thread(Run) { IsBackground = true, Name = $"writecache {name}" };
        _thread.Start();
    }

    /// <summary>The options in force (a reloaded table may change them).</summary>
    public WriteCacheOptions Options
    {
        get => Volatile.Read(ref _options);
        set
        {
            Volatile.Write(ref _options, value);
            Wake(full: false);
        }
    }

    /// <summary>Blocks written back since open.</summary>
    public long WrittenBack => Interlocked.Read(ref _writtenBack);
    /// <summary>Blocks per second written back over the last few seconds.</summary>
    public double Rate => Volatile.Read(ref _rate);
    /// <summary>Runs the origin failed (each retried).</summary>
    public long Errors => Interlocked.Read(ref _errors);
    /// <summary>The last failure, or null.</summary>
    public string? LastError => Volatile.Read(ref _lastError);

    /// <summary>
    /// Why the origin is lost to this host (another host took it over: <see cref="IOwnedDevice"/>),
    /// or null. Once set, nothing more is written back and the target fails new writes with EIO;
    /// the cache keeps everything it holds.
    /// </summary>
    public string? Lost => Volatile.Read(ref _lost);

    /// <summary>Asks an owned origin's owner of record at most once a second (outside <c>_lock</c>: it is a round trip).</summary>
    private void Probe()
    {
        if (_owned is null || Volatile.Read(ref _lost) is not null) return;
        long now = Stopwatch.GetTimestamp();
        if (now - _lastProbeTicks < Stopwatch.Frequency) return;
        _lastProbeTicks = now;
        _owned.ProbeOwnership();
    }

    /// <summary>Asks the origin whether it is still ours; true (and <see cref="Lost"/> set, once, with a log line) when it is not.</summary>
    private bool CheckLost()
    {
        if (Volatile.Read(ref _lost) is not null) return true;
        if (_owned?.LostOwnership is not { } why) return false;
        if (Interlocked.CompareExchange(ref _lost, why, null) is null)
        {
            // stderr, not Trace: this is the operator's cue (serve's log), and nothing listens to Trace there.
            Console.Error.WriteLine($"pfnblock: writecache {_name}: origin {_origin.Name} is lost to this host ({why}). New writes fail with EIO; "
                + $"the {_log.Used} cached entries ({_log.Dirty} dirty blocks) stay in the cache and nothing more is written back. "
                + "Decide which copy wins: restart serve here once the new owner has let the image go (the restart replays the cache and writes it "
                + "back over the new owner's writes), or keep the new owner's image and reformat this cache (pfnblock check shows what it holds).");
        }
        return true;
    }

    /// <summary>
    /// True when write-back has failed for at least <see cref="WriteCacheOptions.StallTimeoutMs"/>
    /// without a run succeeding since: a full cache will not get room back by waiting.
    /// </summary>
    public bool Stalled
    {
        get
        {
            long since = Volatile.Read(ref _failingSinceTicks);
            int limit = Options.StallTimeoutMs;
            return since != 0 && limit > 0 && (Stopwatch.GetTimestamp() - since) * 1000 >= limit * Stopwatch.Frequency;
        }
    }
    /// <summary>Background write-back is paused (demands still run).</summary>
    public bool Paused { get; set; }

    /// <summary>Cleaner mode: write everything back, then seal the log.</summary>
    public bool Cleaner
    {
        get => Volatile.Read(ref field);
        set
        {
            Volatile.Write(ref field, value);
            Wake(full: false);
        }
    }

    /// <summary>A foreground write completed (for <c>pause_writeback</c> and the watermark check).</summary>
    public void NoteWrite()
    {
        if (_options.PauseWritebackMs > 0) Volatile.Write(ref _lastWriteTicks, Stopwatch.GetTimestamp());
        if (!_draining && _log.Used * 100 >= _log.Entries * _options.HighWatermark) Wake(full: false);
    }

    /// <summary>Wakes the thread; <paramref name="full"/> when a writer found no room.</summary>
    public void Wake(bool full)
    {
        lock (_lock)
        {
            if (full) _full = true;
            Monitor.PulseAll(_lock);
        }
    }

    /// <summary>Writes back everything logged so far and waits for it; false on timeout.</summary>
    public bool WriteBackAll(TimeSpan timeout)
    {
        long target = _log.Head;
        long deadline = Stopwatch.GetTimestamp() + (long)(timeout.TotalSeconds * Stopwatch.Frequency);
        lock (_lock)
        {
            _demandUpTo = Math.Max(_demandUpTo, target);
            Monitor.PulseAll(_lock);
            while (_log.Tail < target)
            {
                long left = deadline - Stopwatch.GetTimestamp();
                if (left <= 0 || _stop || Volatile.Read(ref _lost) is not null) return false;
                Monitor.Wait(_lock, TimeSpan.FromSeconds(Math.Min(left, Stopwatch.Frequency) / (double)Stopwatch.Frequency));
            }
        }
        return true;
    }

    private bool ShouldWriteBack(long now)
    {
        long used = _log.Used;
        if (used == 0) { _draining = false; return false; }
        if (_log.Tail < Volatile.Read(ref _demandUpTo) || Cleaner) return true;
        if (Paused) return false;
        long pct = used * 100 / _log.Entries;
        if (pct >= _options.HighWatermark || Volatile.Read(ref _full)) _draining = true;
        else if (pct <= _options.LowWatermark) _draining = false;
        if (_draining) return true;
        if (_options.PauseWritebackMs > 0 && (now - Volatile.Read(ref _lastWriteTicks)) * 1000 < _options.PauseWritebackMs * Stopwatch.Frequency) return false;
        return _options.MaxAgeMs > 0 && _log.OldestTimeMs is { } t && WriteCacheLog.NowMs() - t >= _options.MaxAgeMs;
    }

    private void Run()
    {
        int failures = 0;
        while (true)
        {
            Probe();
            lock (_lock)
            {
                if (_stop) return;
                bool lost = CheckLost();
                if (lost || !ShouldWriteBack(Stopwatch.GetTimestamp()))
                {
                    if (!lost && Cleaner && _log.Used == 0) _log.TrySeal();
                    Monitor.PulseAll(_lock); // demand waiters re-check the tail
                    Monitor.Wait(_lock, s_idleWait);
                    if (_stop) return;
                    Autocommit();
                    UpdateRate();
                    continue;
                }
            }
            RunResult r;
            lock (_runLock) r = WriteBackRun();
            UpdateRate();
            if (r == RunResult.Failed)
            {
                failures++;
                if (CheckLost()) continue;
                lock (_lock) if (!_stop) Monitor.Wait(_lock, TimeSpan.FromMilliseconds(Math.Min(5000, 50 << Math.Min(failures, 7))));
                continue;
            }
            failures = 0;
            if (r == RunResult.NothingReady) Thread.Sleep(1); // the entry at the tail is still being written
            lock (_lock)
            {
                if (_log.Used * 100 < _log.Entries * Math.Max(_options.HighWatermark, 1)) _full = false;
                Monitor.PulseAll(_lock);
            }
        }
    }

    private enum RunResult { Done, NothingReady, Failed }

    /// <summary>Writes back one run on the caller's thread (model tests step write-back by hand with the thread paused); false when nothing was ready or it failed.</summary>
    internal bool Step()
    {
        lock (_runLock) return WriteBackRun() == RunResult.Done;
    }

    /// <summary>One run: write it to the origin, flush the origin, persist the tail, free the slots.</summary>
    private RunResult WriteBackRun()
    {
        long end = _log.CommittedRun(Math.Min(_items.Length, Options.WritebackJobs), out long start);
        if (end == start) return RunResult.NothingReady;
        int items = 0;
        WriteCacheEntry range = default;
        for (long s = start; s < end; s++)
        {
            WriteCacheEntry e = _log.EntryOf(s);
            if (e.Kind == WriteCacheEntryKind.Write) _items[items++] = (e.Block, s);
            else if (e.Kind != WriteCacheEntryKind.None) range = e;
        }
        int bios = range.Kind != WriteCacheEntryKind.None ? RangeBio(range) : WriteBios(items);
        if (bios > 0 && !SubmitAndWait(bios, out BlockStatus status))
            return Fail($"writing {bios} bio(s) of sequence {start}..{end - 1} to {_origin.Name} failed: {status}");
        Bio flush = _pool.Rent(BioOp.Flush, 0);
        _bios[0] = flush;
        if (!SubmitAndWait(1, out BlockStatus flushStatus)) return Fail($"flushing {_origin.Name} failed: {flushStatus}");
        _log.PersistTail(end);
        _log.Retire(start, end);
        Interlocked.Add(ref _writtenBack, range.Kind != WriteCacheEntryKind.None ? range.Count : items);
        Volatile.Write(ref _failingSinceTicks, 0);
        return RunResult.Done;
    }

    private RunResult Fail(string message)
    {
        Interlocked.Increment(ref _errors);
        Volatile.Write(ref _lastError, message);
        Interlocked.CompareExchange(ref _failingSinceTicks, Stopwatch.GetTimestamp(), 0);
        Trace.TraceWarning($"pfnblock: writecache write-back: {message}; retrying, the data stays in the cache");
        return RunResult.Failed;
    }

    private int RangeBio(WriteCacheEntry e)
    {
        // Both become write-zeroes: reads from the cache returned zeros, so must the origin's.
        BioFlags flags = e.Kind == WriteCacheEntryKind.WriteZeroes && (e.Flags & WriteCacheEntryFlags.NoUnmap) != 0 ? BioFlags.NoUnmap : BioFlags.None;
        Bio bio = _pool.Rent(BioOp.WriteZeroes, e.Block << 3, flags);
        bio.Iter.Size = e.Count << 12;
        _bios[0] = bio;
        return 1;
    }

    /// <summary>Bios for the newest write of each block of the run, one per run of consecutive blocks, naming the cache slots' frames.</summary>
    private int WriteBios(int items)
    {
        Span<(long Block, long Seq)> list = _items.AsSpan(0, items);
        list.Sort();
        int bios = 0;
        Bio? bio = null;
        long nextBlock = -1;
        for (int i = 0; i < list.Length; i++)
        {
            // Sorted by block then sequence: keep the last of each block (the newest).
            if (i + 1 < list.Length && list[i + 1].Block == list[i].Block) continue;
            (long block, long seq) = list[i];
            if (bio is null || block != nextBlock || bio.VecCount == bio.MaxVecCount)
            {
                bio = _pool.Rent(BioOp.Write, block << 3);
                _bios[bios++] = bio;
            }
            bio.AddVec(_cachePfn.Add((ulong)(_log.Layout.SlotOffset(seq) >> Pfn.PageShift)), 0, WriteCacheLayout.BlockSize);
            nextBlock = block + 1;
        }
        return bios;
    }

    private bool SubmitAndWait(int count, out BlockStatus status)
    {
        _batchDone.Reset();
        _failedStatus = 0;
        Volatile.Write(ref _pending, count);
        for (int i = 0; i < count; i++)
        {
            Bio b = _bios[i];
            _bios[i] = null!;
            b.EndIo = _endIo;
            _origin.Submit(b);
        }
        _batchDone.Wait();
        status = (BlockStatus)Volatile.Read(ref _failedStatus);
        return status == BlockStatus.Ok;
    }

    private void OnBioDone(Bio bio)
    {
        if (bio.Status != BlockStatus.Ok) Interlocked.CompareExchange(ref _failedStatus, (int)bio.Status, 0);
        bio.Release();
        if (Interlocked.Decrement(ref _pending) == 0) _batchDone.Set();
    }

    /// <summary>autocommit_time: every that long, commit what was written (durable, but no flush: the epoch goes on).</summary>
    private void Autocommit()
    {
        if (_options.AutocommitMs <= 0) return;
        long now = Stopwatch.GetTimestamp();
        if ((now - _lastCommitTicks) * 1000 < _options.AutocommitMs * Stopwatch.Frequency) return;
        _lastCommitTicks = now;
        _commit();
    }

    private void UpdateRate()
    {
        long now = Stopwatch.GetTimestamp();
        double seconds = (now - _rateStartTicks) / (double)Stopwatch.Frequency;
        if (seconds < 1) return;
        long count = WrittenBack;
        Volatile.Write(ref _rate, (count - _rateStartCount) / seconds);
        _rateStartTicks = now;
        _rateStartCount = count;
    }

    /// <summary>Stops the thread after the run in progress (the log stays as it is: the next open recovers it).</summary>
    public void Dispose()
    {
        lock (_lock)
        {
            _stop = true;
            Monitor.PulseAll(_lock);
        }
        _thread.Join();
        _batchDone.Dispose();
    }
}
