using System.Diagnostics;
using PfnBlock.Block;
using PfnBlock.Memory;

namespace PfnBlock.Exports.Copy;

/// <summary>How a <see cref="DeviceCopy"/> moved the bytes.</summary>
public enum CopyPath
{
    /// <summary>Reads from the source straight into the destination's pinned frames (an O_DIRECT file into pmem: the file's DMA lands in pmem).</summary>
    IntoPinnedFrames,
    /// <summary>Writes to the destination straight out of the source's pinned frames (pmem out to an O_DIRECT file).</summary>
    FromPinnedFrames,
    /// <summary>Neither side gives direct access: through a DRAM bounce buffer.</summary>
    Bounce,
}

/// <summary>Options of a <see cref="DeviceCopy"/>.</summary>
public sealed record DeviceCopyOptions
{
    /// <summary>Bytes to copy; null for the smaller of the two capacities.</summary>
    public long? Size { get; init; }
    /// <summary>Bytes per I/O (a multiple of 4096).</summary>
    public int BlockSize { get; init; } = 1 << 20;
    /// <summary>I/Os in flight.</summary>
    public int QueueDepth { get; init; } = 4;
    /// <summary>
    /// Register the pinned side's frames with an O_DIRECT file's io_uring as fixed buffers, a
    /// window of up to 1 GiB at a time (see <see cref="RegisteredWindow"/>), so the kernel pins no
    /// pages per I/O. Off by default: a copy uses each frame once, so registering pins exactly the
    /// pages per-I/O pinning would, only all at once before the window's first I/O (about 55 ms
    /// per GiB of tmpfs pages here) instead of overlapped with the disk, and measured no faster
    /// (docs/BENCHMARKS.md §12); and the window's pin holds a discard of it off for the window's
    /// whole copy rather than one chunk's.
    /// </summary>
    public bool FixedBuffers { get; init; }
    /// <summary>
    /// Submit the chunks as polled bios (<see cref="BioFlags.Polled"/>) inside a
    /// <see cref="BlockPoll"/> scope, so that a file on io_uring leaves their completions to the
    /// copy's own thread: it reaps a chunk, persists and unpins it and submits the next in one
    /// thread, as bench/copy-floor.c does, with no wake-up of the file's ring thread or of the
    /// copy's thread per chunk. Off by default: in 16 alternating reps (docs/BENCHMARKS.md §12)
    /// it was no faster than the ring thread's completions (medians of per-rep ratios 88–107 %),
    /// the copy being within a few per cent of the probe into its own pages either way. Not with
    /// <see cref="FixedBuffers"/>, whose windows are registered on the file's shared ring.
    /// </summary>
    public bool Poll { get; init; }
    /// <summary>Test hook: the largest registered window (1 GiB, the kernel's limit, unless a test wants several windows in a small copy).</summary>
    internal long WindowBytes { get; init; } = RegisteredWindow.MaxBytes;
}

/// <summary>What a copy did.</summary>
/// <param name="Bytes">Bytes copied.</param>
/// <param name="Path">How they went.</param>
/// <param name="PinnedBytes">Bytes moved to or from pinned device frames (no buffer in between).</param>
/// <param name="BounceBytes">Bytes that went through the DRAM bounce buffer (chunks a pending discard kept from being pinned, or a copy without a DAX side).</param>
/// <param name="CpuCopiedBytes">Bytes a CPU copied (a memory device's memcpy, a buffered file's kernel copy); 0 when an O_DIRECT file's DMA moved every byte.</param>
/// <param name="Elapsed">Wall time.</param>
public sealed record DeviceCopyResult(long Bytes, CopyPath Path, long PinnedBytes, long BounceBytes, long CpuCopiedBytes, TimeSpan Elapsed)
{
    /// <summary>Bytes of chunks whose bios all completed on the copy's own thread (reaped by its poll, <see cref="DeviceCopyOptions.Poll"/>, or completed inline by a device that works in its caller's thread); the others were completed by a device's thread, which then woke the copy's.</summary>
    public long PolledBytes { get; init; }
    /// <summary>Bytes of chunks whose frames were registered with the file's io_uring as a fixed buffer while they moved (READ_FIXED/WRITE_FIXED: no per-I/O page pinning in the kernel).</summary>
    public long RegisteredBytes { get; init; }
    /// <summary>Why registration stopped being tried (an errno: EFAULT for a namespace on a disk filesystem, ENOMEM for RLIMIT_MEMLOCK, EOPNOTSUPP for a buffered file or an engine without fixed buffers); 0 when it was never refused.</summary>
    public int RegistrationErrno { get; init; }

    /// <summary>Bytes per second.</summary>
    public double BytesPerSecond => Bytes / Math.Max(Elapsed.TotalSeconds, 1e-9);
}

/// <summary>
/// Copies between two block devices the way the seed's first use case asks: an O_DIRECT file
/// reads straight into the destination pmem frames (pinned for the transfer, through the pin seam
/// of whatever descriptor map the namespace has, <c>none</c> included), or writes straight out of
/// them. No bounce buffer and no CPU copy on those paths; the pin keeps a discard of the frames
/// waiting until the transfer is done.
/// </summary>
/// <remarks>
/// Up to <see cref="DeviceCopyOptions.QueueDepth"/> chunks are in flight, each in a slot with its
/// own bio, completion event and bounce buffer (used only when a chunk cannot be pinned), all
/// allocated before the first I/O. Frames written by a read into them are made durable with the
/// destination's <see cref="IDaxDevice.PersistRange"/> before they are unpinned; the destination
/// is flushed at the end. With <see cref="DeviceCopyOptions.Poll"/> the chunks are polled bios in a
/// <see cref="BlockPoll"/> scope: an io_uring file then leaves their completions to this thread's
/// own ring, and a device that cannot poll completes them as usual while the copy waits on the event.
/// <para>When asked (<see cref="DeviceCopyOptions.FixedBuffers"/>) and the other side is an O_DIRECT
/// file on io_uring, the copy also registers the DAX side's frames as fixed buffers, one window of
/// up to 1 GiB at a time, pinned as a whole for as
/// long as it is registered (<see cref="RegisteredWindow"/>): the kernel then pins no user pages
/// per I/O. The registration lasts only while the copy runs over that window, so a discard waits
/// for at most one window's worth of copying; where registration is refused the chunks simply go
/// as READV/WRITEV.</para>
/// </remarks>
public sealed unsafe class DeviceCopy
{
    private readonly IBlockDevice _from;
    private readonly IBlockDevice _to;
    private readonly long _size;
    private readonly int _bs;
    private readonly int _depth;
    private readonly IFixedBufferDevice? _fixedFile;
    private readonly long _windowBytes;
    private readonly bool _poll;

    /// <summary>Checks that the copy can run: sizes, block alignment (O_DIRECT's rule) and a shared address space.</summary>
    /// <exception cref="ArgumentException">A size or block size the devices cannot take, or devices in different address spaces.</exception>
    public DeviceCopy(IBlockDevice from, IBlockDevice to, DeviceCopyOptions options)
    {
        ArgumentNullException.ThrowIfNull(from);
        ArgumentNullException.ThrowIfNull(to);
        if (from.AddressSpace != to.AddressSpace)
            throw new ArgumentException("the two devices belong to different address spaces: the frames one pins cannot be named in the other's bios");
        if ((to.Features & DeviceFeatures.ReadOnly) != 0) throw new ArgumentException($"{to.Name} is read-only");
        long max = Math.Min(from.CapacityBytes, to.CapacityBytes);
        long size = options.Size ?? max;
        if (size <= 0) throw new ArgumentException($"nothing to copy (size {size})");
        if (size > from.CapacityBytes) throw new ArgumentException($"--size {size} is more than {from.Name} holds ({from.CapacityBytes} bytes)");
        if (size > to.CapacityBytes) throw new ArgumentException($"--size {size} is more than {to.Name} holds ({to.CapacityBytes} bytes)");
        int block = Math.Max(from.Limits.LogicalBlockSize, to.Limits.LogicalBlockSize);
        if (size % block != 0)
            throw new ArgumentException($"size {size} is not a multiple of the {block}-byte logical block size (O_DIRECT transfers whole blocks; {Describe(from)} to {Describe(to)})");
        if (options.BlockSize <= 0 || options.BlockSize % Pfn.PageSize != 0)
            throw new ArgumentException($"block size {options.BlockSize} is not a multiple of 4096: O_DIRECT transfers into pinned frames go a whole page at a time");
        if (options.QueueDepth is < 1 or > 256) throw new ArgumentException($"queue depth {options.QueueDepth} is outside 1..256");
        (_from, _to, _size, _bs, _depth) = (from, to, size, options.BlockSize, options.QueueDepth);
        // pmem to pmem reads into the pinned destination too: the source's memcpy is the one copy.
        Path = IsDax(to) ? CopyPath.IntoPinnedFrames : IsDax(from) ? CopyPath.FromPinnedFrames : CopyPath.Bounce;
        IBlockDevice fileSide = Path == CopyPath.IntoPinnedFrames ? from : to;
        // Windows of whole chunks, so no chunk straddles two registrations.
        _windowBytes = Math.Min(options.WindowBytes, RegisteredWindow.MaxBytes) / _bs * _bs;
        if (options.FixedBuffers && Path != CopyPath.Bounce && _windowBytes > 0 && fileSide is IFixedBufferDevice f) _fixedFile = f;
        _poll = options.Poll && _fixedFile is null;
    }

    /// <summary>Bytes the copy moves.</summary>
    public long Size => _size;
    /// <summary>The path the chunks take (a chunk that cannot be pinned falls back to the bounce buffer).</summary>
    public CopyPath Path { get; }

    /// <summary>Runs the copy on the calling thread; <paramref name="progress"/> hears the bytes done after each chunk.</summary>
    /// <exception cref="IOException">A read or write failed; the message names the range and the device.</exception>
    public DeviceCopyResult Run(Action<long>? progress = null)
    {
        var clock = Stopwatch.StartNew();
        using DramArena bounce = DramArena.Create((long)_depth * _bs, _from.AddressSpace, "copy-bounce");
        var slots = new Slot[_depth];
        int owner = Environment.CurrentManagedThreadId;
        for (int i = 0; i < _depth; i++) slots[i] = new Slot(bounce.PfnAt((long)i * _bs / Pfn.PageSize), owner);
        long next = 0, done = 0, pinned = 0, bounced = 0, cpu = 0, registered = 0, polled = 0;
        RegisteredWindow? window = null;
        int refused = 0;
        // Opened before the first chunk and closed after the last wait (End polls until nothing of
        // this thread's is in flight, so no polled bio is left without a poller on any path).
        if (_poll) BlockPoll.Begin();
        try
        {
            int busy = 0;
            for (int i = 0; next < _size || busy > 0; i = (i + 1) % _depth)
            {
                Slot s = slots[i];
                if (s.Stage != Stage.Idle)
                {
                    WaitFor(s);
                    s.Done.Reset();
                    if (s.Bio.Status != BlockStatus.Ok) Fail(s);
                    if (Advance(s)) continue; // its second half is in flight
                    done += s.Length;
                    if (s.Pinned) pinned += s.Length; else bounced += s.Length;
                    if (s.Polled) polled += s.Length;
                    if (s.Window is { } w)
                    {
                        if (w.Registered) registered += s.Length;
                        s.Window = null;
                        if (--w.InFlight == 0 && w.Retired) w.Release();
                    }
                    cpu += s.CpuBytes;
                    busy--;
                    progress?.Invoke(done);
                }
                if (next >= _size) continue;
                int length = (int)Math.Min(_bs, _size - next);
                if (_fixedFile is not null && refused == 0 && (window is null || next >= window.End))
                {
                    if (window is not null)
                    {
                        window.Retired = true;
                        if (window.InFlight == 0) window.Release();
                    }
                    // The last window ends at the page holding the copy's last byte: pins go by whole pages.
                    window = RegisteredWindow.Open((IDaxDevice)(Path == CopyPath.IntoPinnedFrames ? _to : _from), _fixedFile,
                        next, Math.Min(next + _windowBytes, _size + Pfn.PageSize - 1 & ~(long)(Pfn.PageSize - 1)), out refused);
                }
                if (window is not null && next < window.End)
                {
                    s.Window = window;
                    window.InFlight++;
                }
                Start(s, next, length);
                next += length;
                busy++;
            }
            // Durable at the destination as a whole (the file's cache, the namespace's msync).
            Bio flush = new Bio(1).Init(BioOp.Flush, 0);
            BlockStatus fs = _to.SubmitAndWait(flush);
            if (fs != BlockStatus.Ok) throw new IOException($"flush of {_to.Name} failed: {fs}");
        }
        finally
        {
            try
            {
                foreach (Slot s in slots)
                    if (s.Stage != Stage.Idle) WaitFor(s); // never free a buffer under an I/O
            }
            finally
            {
                if (_poll) BlockPoll.End();
            }
            // Nothing is in flight now: a failed copy's windows (retired ones included) can go.
            foreach (Slot s in slots)
            {
                if (s.Pinned && s.Pin.Pages != 0) s.Pin.Unpin();
                s.Window?.Release();
                s.Done.Dispose();
            }
            window?.Release();
        }
        return new DeviceCopyResult(done, Path, pinned, bounced, cpu, clock.Elapsed) { RegisteredBytes = registered, RegistrationErrno = refused, PolledBytes = polled };
    }

    /// <summary>
    /// Waits until <paramref name="s"/>'s bio has completed: polls while this thread has polled bios
    /// in flight (the slot's own, or others whose completions must be reaped here before the slot's
    /// can be), else blocks on its event (a device that does not poll completes it on its own thread).
    /// </summary>
    private void WaitFor(Slot s)
    {
        while (!s.Done.IsSet)
        {
            if (_poll && BlockPoll.Poll(wait: true)) continue;
            s.Done.Wait();
        }
    }

    private void Start(Slot s, long offset, int length)
    {
        s.Offset = offset;
        s.Length = length;
        s.CpuBytes = 0;
        s.Pinned = false;
        s.Polled = true;
        long firstPage = offset >> Pfn.PageShift;
        long pages = (length + Pfn.PageSize - 1) >> Pfn.PageShift;
        if (Path != CopyPath.Bounce)
        {
            var dax = (IDaxDevice)(Path == CopyPath.IntoPinnedFrames ? _to : _from);
            long got = dax.DirectAccess(firstPage, pages, out DaxRange range);
            if (got == pages)
            {
                s.Pin = range;
                s.Pinned = true;
                if (Path == CopyPath.IntoPinnedFrames) Submit(s, Stage.ReadIntoPin, _from, BioOp.Read, range.Pfn);
                else Submit(s, Stage.WriteFromPin, _to, BioOp.Write, range.Pfn);
                return;
            }
            // Past a target boundary, or a discard of the range is pending: this chunk goes through DRAM.
            if (got > 0) range.Unpin();
        }
        Submit(s, Stage.BounceRead, _from, BioOp.Read, s.BouncePfn);
    }

    /// <summary>Moves a slot on after its bio completed; true when it submitted another bio.</summary>
    private bool Advance(Slot s)
    {
        switch (s.Stage)
        {
            case Stage.BounceRead:
                Submit(s, Stage.BounceWrite, _to, BioOp.Write, s.BouncePfn);
                return true;
            case Stage.ReadIntoPin:
                // The file's DMA wrote the frames behind the CPU's caches' back only on real
                // hardware with DDIO off; either way the namespace's persistence path now runs.
                ((IDaxDevice)_to).PersistRange(s.Offset, s.Length);
                break;
        }
        if (s.Pinned)
        {
            s.Pin.Unpin();
            s.Pin = default;
        }
        s.Stage = Stage.Idle;
        return false;
    }

    private void Submit(Slot s, Stage stage, IBlockDevice device, BioOp op, Pfn pfn)
    {
        s.Stage = stage;
        s.Device = device;
        if (IsCpuCopying(device)) s.CpuBytes += s.Length;
        s.Bio.Init(op, s.Offset >> Bio.SectorShift, _poll ? BioFlags.Polled : BioFlags.None).AddVec(pfn, 0, (uint)s.Length);
        s.Bio.EndIo = s.EndIo;
        device.Submit(s.Bio);
    }

    private void Fail(Slot s)
    {
        string what = s.Stage is Stage.ReadIntoPin or Stage.BounceRead ? "read" : "write";
        string hint = s.Bio.Status == BlockStatus.Invalid ? " (an O_DIRECT device refuses transfers not aligned to its logical block size)" : "";
        string failure = $"{what} of [{s.Offset}, +{s.Length}) on {Describe(s.Device!)} failed: {s.Bio.Status}{hint}";
        // Its bio has completed and its event was reset: Run's finally must not wait for it again
        // (it did, for ever: a copy whose read failed hung instead of reporting it).
        if (s.Pinned) s.Pin.Unpin();
        s.Pin = default;
        s.Pinned = false;
        s.Stage = Stage.Idle;
        throw new IOException(failure);
    }

    private static bool IsDax(IBlockDevice d) => d is IDaxDevice && (d.Features & DeviceFeatures.Dax) != 0;

    /// <summary>
    /// True when the device moves data with a CPU copy (memory devices; a buffered file, through
    /// the kernel's copy): its vectors need no DMA alignment. False for an O_DIRECT file, whose
    /// transfers are DMA (alignment above 1), and for the null device, which moves nothing.
    /// </summary>
    private static bool IsCpuCopying(IBlockDevice d) => d.Limits.DmaAlignment <= 1 && (d.Features & DeviceFeatures.DiscardsData) == 0;

    private static string Describe(IBlockDevice d) => d.Limits.DmaAlignment > 1 ? $"{d.Name} (O_DIRECT)" : d.Name;

    private enum Stage { Idle, ReadIntoPin, WriteFromPin, BounceRead, BounceWrite }

    private sealed class Slot
    {
        public readonly Bio Bio = new(1);
        public readonly ManualResetEventSlim Done = new(false);
        public readonly Action<Bio> EndIo;
        public readonly Pfn BouncePfn;
        public Stage Stage;
        public IBlockDevice? Device;
        public DaxRange Pin;
        public bool Pinned;
        /// <summary>True while every bio of the chunk completed on the copy's own thread.</summary>
        public bool Polled;
        /// <summary>The registered window the chunk is in, if any.</summary>
        public RegisteredWindow? Window;
        public long Offset;
        public int Length;
        public long CpuBytes;

        public Slot(Pfn bounce, int owner)
        {
            BouncePfn = bounce;
            EndIo = _ =>
            {
                // On the owner's thread (inside its BlockPoll.Poll, or inline) the Set wakes nobody.
                if (Environment.CurrentManagedThreadId != owner) Polled = false;
                Done.Set();
            };
        }
    }
}
