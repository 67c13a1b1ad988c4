using System.Diagnostics;
using HdrHistogram;
using PfnBlock.Block;
using PfnBlock.Memory;

namespace PfnBlock.Cli.Bench;

/// <summary>Run phases shared by all jobs of a run: warm-up, measured, stopping.</summary>
internal sealed class BenchClock
{
    public const int Ramp = 0, Measure = 1, Stop = 2;
    private volatile int _phase;
    /// <summary>Timestamp at which the measured phase started.</summary>
    public long MeasureStart;
    public int Phase => _phase;
    public void StartMeasuring() { MeasureStart = Stopwatch.GetTimestamp(); _phase = Measure; }
    public void RequestStop() => _phase = Stop;
}

/// <summary>
/// One benchmark job: a thread that keeps <c>iodepth</c> bios in flight against a device, each
/// with its own pre-allocated frame run, and accounts completions in latency histograms.
/// Nothing is allocated per I/O: bios, buffers, and the completion delegate are made up front.
/// </summary>
internal sealed unsafe class BenchJob
{
    private static readonly Action<Bio> s_onComplete = OnComplete;
    private static readonly long s_maxLatencyNs = 60_000_000_000L;
    /// <summary>How long a job waiting for a completion spins (yielding) before it blocks: 200 µs.</summary>
    private static readonly long s_spinTicks = Stopwatch.Frequency / 5_000;

    private readonly IBlockDevice _device;
    private readonly BenchOptions _options;
    private readonly BenchClock _clock;
    private readonly RwMode _rw;
    private readonly Slot[] _slots;
    private readonly long _regionStartBlock;
    private readonly long _regionBlocks;
    private readonly long _bytesToIssue;
    private readonly int _jobIndex;
    private readonly bool _verify;
    private readonly bool _counted;

    // Completions on the job's own thread need no lock; those from a device's completion thread do.
    private readonly Slot[] _localDone;
    private int _localCount;
    private readonly Slot[] _remoteDone;
    private int _remoteCount;
    private readonly Lock _remoteLock = new();
    private readonly ManualResetEventSlim _signal = new(false, 100);
    private volatile bool _waiting;
    private int _ownerThreadId;

    private ulong _rng;
    private long _seqNext;
    private long _issuedBytes;
    private ulong _stampCounter;

    public readonly LongHistogram ReadLatency = new(s_maxLatencyNs, 3);
    public readonly LongHistogram WriteLatency = new(s_maxLatencyNs, 3);
    public long ReadIos, WriteIos, ReadBytes, WriteBytes;
    public string? Error;
    /// <summary>Bytes this job's thread allocated during the measured phase (the hot path, inline completions included).</summary>
    public long AllocatedBytes;

    /// <param name="device">The device.</param>
    /// <param name="options">The workload.</param>
    /// <param name="rw">The pattern of this run (the fill and verify passes override the workload's).</param>
    /// <param name="clock">Shared phases.</param>
    /// <param name="jobIndex">This job's index.</param>
    /// <param name="buffers">Where I/O buffers come from.</param>
    /// <param name="regionStartBlock">First block this job addresses.</param>
    /// <param name="regionBlocks">Blocks it addresses.</param>
    /// <param name="bytesToIssue">Bytes to transfer before stopping; 0 for time-based runs.</param>
    /// <param name="counted">False for the unmeasured fill pass.</param>
    public BenchJob(IBlockDevice device, BenchOptions options, RwMode rw, BenchClock clock, int jobIndex, FrameAllocator buffers,
        long regionStartBlock, long regionBlocks, long bytesToIssue, bool counted)
    {
        _device = device;
        _options = options;
        _rw = rw;
        _clock = clock;
        _jobIndex = jobIndex;
        _regionStartBlock = regionStartBlock;
        _regionBlocks = regionBlocks;
        _bytesToIssue = bytesToIssue;
        _verify = options.Verify;
        _counted = counted;
        _rng = options.Seed ^ (0x9E3779B97F4A7C15UL * (ulong)(jobIndex + 1)) | 1;
        int framesPerBlock = (options.BlockSize + Pfn.PageSize - 1) / Pfn.PageSize;
        _slots = new Slot[options.IoDepth];
        for (int i = 0; i < _slots.Length; i++)
        {
            FrameRun run = buffers.Allocate(framesPerBlock);
            byte* address = device.AddressSpace.Kmap(run.First, 0, (uint)options.BlockSize);
            // Real data, as fio writes: untouched anonymous memory would all be the kernel's one
            // zero page, an always-cached source that flatters write bandwidth.
            FillRandom(new Span<byte>(address, options.BlockSize), options.Seed + (ulong)(jobIndex * 4096 + i));
            _slots[i] = new Slot(this, new Bio(1), run, address);
        }
        _localDone = new Slot[_slots.Length];
        _remoteDone = new Slot[_slots.Length];
    }

    /// <summary>Bytes transferred in the measured phase so far (read by the progress display).</summary>
    public long Bytes => Volatile.Read(ref ReadBytes) + Volatile.Read(ref WriteBytes);
    /// <summary>I/Os completed in the measured phase so far.</summary>
    public long Ios => Volatile.Read(ref ReadIos) + Volatile.Read(ref WriteIos);

    /// <summary>Runs until the clock says stop (time-based) or the job's bytes are done (size-based).</summary>
    public void Run()
    {
        _ownerThreadId = Environment.CurrentManagedThreadId;
        if (!_options.Poll)
        {
            RunLoop();
            return;
        }
        // The job waits for its own bios, so it can reap them itself: a device that polls leaves
        // their completions to the job's BlockPoll.Poll (one system call submits and reaps).
        BlockPoll.Begin();
        try { RunLoop(); }
        finally { BlockPoll.End(); }
    }

    private void RunLoop()
    {
        Span<Slot> free = _slots.ToArray();
        int freeCount = _slots.Length;
        int inFlight = 0;
        long allocStart = -1;
        while (true)
        {
            if (allocStart < 0 && _clock.Phase == BenchClock.Measure) allocStart = GC.GetAllocatedBytesForCurrentThread();
            if (freeCount > 0 && CanIssue())
            {
                // One clock read starts the whole batch (the kernel's plug caches the time alike).
                long now = Stopwatch.GetTimestamp();
                bool plug = _options.Plug && freeCount > 1;
                if (plug) BlockPlug.Start();
                try
                {
                    do
                    {
                        Slot slot = free[--freeCount];
                        inFlight++;
                        Issue(slot, now);
                    } while (freeCount > 0 && CanIssue());
                }
                finally
                {
                    if (plug) BlockPlug.Finish();
                }
            }
            int reaped = Reap(free, ref freeCount);
            inFlight -= reaped;
            if (inFlight == 0 && !CanIssue()) break;
            if (reaped == 0 && inFlight > 0 && (freeCount == 0 || !CanIssue())) WaitForCompletion();
        }
        if (allocStart >= 0) AllocatedBytes = GC.GetAllocatedBytesForCurrentThread() - allocStart;
    }

    private bool CanIssue() =>
        Error is null && _clock.Phase != BenchClock.Stop && (_bytesToIssue == 0 || _issuedBytes < _bytesToIssue);

    private void Issue(Slot slot, long now)
    {
        int bs = _options.BlockSize;
        bool write = _rw switch
        {
            RwMode.Write or RwMode.RandWrite => true,
            RwMode.RandRw => (int)(NextRandom() % 100) >= _options.ReadMixPercent,
            _ => false,
        };
        long block = _rw is RwMode.Read or RwMode.Write ? _seqNext++ % _regionBlocks : (long)(NextRandom() % (ulong)_regionBlocks);
        long offset = (_regionStartBlock + block) * bs;
        if (write && _verify)
            VerifyPattern.Fill(new Span<byte>(slot.Address, bs), offset, (ulong)_jobIndex << 48 | ++_stampCounter);
        _issuedBytes += bs;
        slot.Offset = offset;
        slot.IsWrite = write;
        BioFlags flags = (write && _options.Fua ? BioFlags.Fua : BioFlags.None) | (_options.Poll ? BioFlags.Polled : BioFlags.None);
        Bio bio = slot.Bio.Init(write ? BioOp.Write : BioOp.Read, offset >> Bio.SectorShift, flags);
        bio.AddVec(slot.Buffer.First, 0, (uint)bs);
        bio.EndIo = s_onComplete;
        bio.Private = slot;
        slot.Start = now;
        bio.SetStartTime(now); // one clock read per batch of submissions, shared with the block layer's accounting
        _device.Submit(bio);
    }

    private static void OnComplete(Bio bio)
    {
        var slot = (Slot)bio.Private!;
        slot.End = bio.CompletionTime != 0 ? bio.CompletionTime : Stopwatch.GetTimestamp();
        slot.Job.Completed(slot);
    }

    private void Completed(Slot slot)
    {
        if (Environment.CurrentManagedThreadId == _ownerThreadId)
        {
            _localDone[_localCount++] = slot;
            return;
        }
        lock (_remoteLock) _remoteDone[_remoteCount++] = slot;
        Interlocked.MemoryBarrier();
        if (_waiting) _signal.Set();
    }

    private int Reap(Span<Slot> free, ref int freeCount)
    {
        int n = 0;
        for (int i = 0; i < _localCount; i++, n++) { Account(_localDone[i]); free[freeCount++] = _localDone[i]; }
        _localCount = 0;
        if (Volatile.Read(ref _remoteCount) > 0)
        {
            lock (_remoteLock)
            {
                for (int i = 0; i < _remoteCount; i++, n++) { Account(_remoteDone[i]); free[freeCount++] = _remoteDone[i]; }
                _remoteCount = 0;
            }
        }
        return n;
    }

    private void WaitForCompletion()
    {
        // Polled bios in flight: the wait is the poll, which also starts the ones just queued.
        if (_options.Poll && BlockPoll.Poll(wait: true)) return;
        // Spin first, yielding the CPU on every round: a completion that arrives within the
        // spin costs no futex wake-up, and on a small machine the yield lets the device's
        // completion thread run. Blocking right away put a wake-up on every I/O's path
        // (measured: 4k randread on the file device at iodepth 8 went from ~45K to ~60K IOPS).
        long deadline = Stopwatch.GetTimestamp() + s_spinTicks;
        var spin = new SpinWait();
        while (Volatile.Read(ref _remoteCount) == 0)
        {
            if (Stopwatch.GetTimestamp() >= deadline)
            {
                Block();
                return;
            }
            spin.SpinOnce(sleep1Threshold: -1);
        }
    }

    private void Block()
    {
        _waiting = true;
        Interlocked.MemoryBarrier(); // pairs with the barrier in Completed (Dekker): no lost wake
        if (Volatile.Read(ref _remoteCount) == 0) _signal.Wait(1);
        _signal.Reset();
        _waiting = false;
    }

    private void Account(Slot slot)
    {
        BlockStatus status = slot.Bio.Status;
        if (status != BlockStatus.Ok)
        {
            // Busy never gets here: the block layer requeues it (counted in the result's requeues).
            Error ??= $"{(slot.IsWrite ? "write" : "read")} at offset {slot.Offset} failed: {status}";
            return;
        }
        if (_verify && !slot.IsWrite)
        {
            string? bad = VerifyPattern.Check(new ReadOnlySpan<byte>(slot.Address, _options.BlockSize), slot.Offset);
            if (bad is not null) { Error ??= $"verify failed at offset {slot.Offset}: {bad}"; return; }
        }
        if (!_counted || _clock.Phase == BenchClock.Ramp || slot.Start < _clock.MeasureStart) return;
        long ns = Math.Min(s_maxLatencyNs, (long)((slot.End - slot.Start) * (1e9 / Stopwatch.Frequency)));
        if (slot.IsWrite)
        {
            WriteLatency.RecordValue(ns);
            Volatile.Write(ref WriteIos, WriteIos + 1);
            Volatile.Write(ref WriteBytes, WriteBytes + _options.BlockSize);
        }
        else
        {
            ReadLatency.RecordValue(ns);
            Volatile.Write(ref ReadIos, ReadIos + 1);
            Volatile.Write(ref ReadBytes, ReadBytes + _options.BlockSize);
        }
    }

    private static void FillRandom(Span<byte> buffer, ulong seed)
    {
        ulong x = seed | 1;
        Span<ulong> words = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, ulong>(buffer);
        for (int i = 0; i < words.Length; i++) { x ^= x << 13; x ^= x >> 7; x ^= x << 17; words[i] = x; }
    }

    private ulong NextRandom()
    {
        // xorshift64*: fast, allocation-free, good enough for offsets.
        _rng ^= _rng >> 12; _rng ^= _rng << 25; _rng ^= _rng >> 27;
        return _rng * 0x2545F4914F6CDD1DUL;
    }

    /// <summary>Returns the job's buffers to the allocator.</summary>
    public void FreeBuffers(FrameAllocator buffers)
    {
        foreach (Slot s in _slots) buffers.Free(s.Buffer);
        _signal.Dispose();
    }

    private sealed class Slot(BenchJob job, Bio bio, FrameRun buffer, byte* address)
    {
        public readonly BenchJob Job = job;
        public readonly Bio Bio = bio;
        public readonly FrameRun Buffer = buffer;
        public readonly byte* Address = address;
        public long Offset;
        public bool IsWrite;
        public long Start;
        public long End;
    }
}
