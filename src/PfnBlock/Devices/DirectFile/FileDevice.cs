using System.Runtime.InteropServices;
using PfnBlock.Block;
using PfnBlock.Interop;
using PfnBlock.Memory;

namespace PfnBlock.Devices.DirectFile;

/// <summary>How a <see cref="FileDevice"/> talks to the kernel.</summary>
public enum FileEngineKind
{
    /// <summary>
    /// io_uring when it can be set up, else the thread-pool engine; also the thread-pool engine on
    /// tmpfs, where io_uring hands every read and write to an io-wq worker thread. The reason for
    /// the choice is in <see cref="FileDevice.EngineDescription"/>.
    /// </summary>
    Auto,
    /// <summary>io_uring only; opening fails if it is unavailable.</summary>
    IoUring,
    /// <summary>Blocking preadv2/pwritev2 on a small pool of dedicated worker threads (at most 16).</summary>
    ThreadPool,
}

/// <summary>Options for <see cref="FileDevice.Open"/>.</summary>
public sealed record FileDeviceOptions
{
    /// <summary>The default number of requests in flight.</summary>
    public const int DefaultQueueDepth = 64;

    /// <summary>Open through the page cache (no O_DIRECT); for filesystems that refuse O_DIRECT. Spec suffix <c>,buffered</c>.</summary>
    public bool Buffered { get; init; }
    /// <summary>Requests in flight at most (1..4096); a submitter beyond it waits for a slot.</summary>
    public int QueueDepth { get; init; } = DefaultQueueDepth;
    /// <summary>Which engine to use: <see cref="FileEngineKind.Auto"/> picks io_uring, or the thread-pool engine on tmpfs or where io_uring is unavailable.</summary>
    public FileEngineKind Engine { get; init; } = FileEngineKind.Auto;
    /// <summary>Open read-only; writes, discards and write-zeroes are refused.</summary>
    public bool ReadOnly { get; init; }
    /// <summary>Test hook: behave as if io_uring_setup had failed.</summary>
    internal bool SimulateIoUringUnavailable { get; init; }
    /// <summary>Test hook: set io_uring up without SINGLE_ISSUER | DEFER_TASKRUN, as on a kernel older than 6.1.</summary>
    internal bool SimulateNoDeferTaskrun { get; init; }
}

/// <summary>
/// A block device over a regular file or a block device, opened with O_DIRECT: reads and writes go
/// straight between the file and the bio's frames (each segment kmapped into an iovec, no bounce
/// buffer), with real queue depth through io_uring, or through a pread/pwrite engine on dedicated
/// worker threads where io_uring is unavailable (or, under <see cref="FileEngineKind.Auto"/>, on tmpfs).
/// </summary>
/// <remarks>
/// <para>Capacity is the file size rounded down to the logical block size; the file is never grown.
/// Vectors must be aligned to <see cref="DeviceLimits.DmaAlignment"/> in offset and length
/// (O_DIRECT's rule); misaligned ones are refused with <see cref="BlockStatus.Invalid"/> before any
/// system call.</para>
/// <para>Completions arrive on the engine's completion context: io_uring's dedicated ring
/// thread (which is also the only thread that enters the ring), or the worker thread that did the
/// I/O. A submitter that finds all <see cref="QueueDepth"/> slots busy blocks until one frees
/// (back-pressure), except inside a completion callback, where it gets <see cref="BlockStatus.Busy"/>
/// instead of deadlocking the thread that frees slots.</para>
/// </remarks>
public sealed partial class FileDevice : BlockDevice, IRegisteredDevice, IFixedBufferDevice
{
    private const int MaxBytesPerBio = 1 << 20;

    private readonly FileIoEngine _engine;
    private readonly long _sectors;
    private readonly DeviceFeatures _features;

    private FileDevice(string path, FileIoEngine engine, long capacityBytes, DeviceLimits limits, bool direct, bool blockDevice,
        FileEngineKind kind, bool readOnly, PhysicalAddressSpace? space) : base(path, space)
    {
        _engine = engine;
        _sectors = capacityBytes >> Bio.SectorShift;
        Limits = limits;
        IsDirect = direct;
        IsBlockDevice = blockDevice;
        Engine = kind;
        _features = DeviceFeatures.WriteCache | DeviceFeatures.Fua | DeviceFeatures.Discard | DeviceFeatures.DiscardZeroesData
            | DeviceFeatures.WriteZeroes | (readOnly ? DeviceFeatures.ReadOnly : DeviceFeatures.None)
            | (blockDevice ? DeviceFeatures.None : DeviceFeatures.AllocationMap); // a file's holes (FileDevice.Holes.cs)
        if (engine.SupportsPolling) _features |= DeviceFeatures.Poll; // polled bios on their thread's own ring
    }

    /// <inheritdoc/>
    public static DeviceType Type { get; } = new()
    {
        Name = "file",
        Summary = "a regular file or block device through O_DIRECT (io_uring, or worker threads where io_uring is unavailable or on tmpfs)",
        Arguments = [new("PATH", ArgumentKind.Path, "the file or block device (never grown: its size is the capacity)")],
        Options =
        [
            new("buffered", null, "go through the page cache instead of O_DIRECT (for filesystems that refuse O_DIRECT)"),
            new("ro", null, "open read-only"),
            new("qd", ArgumentKind.Number, $"requests in flight at most (1..4096, default {FileDeviceOptions.DefaultQueueDepth})", "N"),
            new("engine", ArgumentKind.Text, "auto (default), io_uring or threads", "ENGINE"),
        ],
        Open = (spec, ctx) => Open(spec.Arguments[0], new FileDeviceOptions
        {
            Buffered = spec.Has("buffered"),
            ReadOnly = spec.Has("ro") || ctx.ReadOnly,
            QueueDepth = int.TryParse(spec.Option("qd"), out int qd) ? qd : FileDeviceOptions.DefaultQueueDepth,
            Engine = spec.Option("engine", "auto") switch
            {
                "auto" => FileEngineKind.Auto,
                "io_uring" => FileEngineKind.IoUring,
                "threads" => FileEngineKind.ThreadPool,
                var other => throw new FormatException($"file:{spec.Arguments[0]}: unknown engine '{other}' (auto, io_uring or threads)"),
            },
        }, ctx.AddressSpace),
        Samples =
        [
            new("O_DIRECT on a disk filesystem", s => $"file:{DeviceSpec.Quote(SampleFile(s.DiskDirectory, "direct.img"))}"),
            new("buffered on tmpfs", s => $"file:{DeviceSpec.Quote(SampleFile(s.Directory, "buffered.img"))},buffered"),
        ],
    };

    private static string SampleFile(string directory, string name)
    {
        string path = System.IO.Path.Combine(directory, name);
        using (FileStream f = File.Create(path)) f.SetLength(16 << 20);
        return path;
    }

    /// <inheritdoc/>
    public override string Description => $"file {Path} ({Common.SizeParser.Format(CapacityBytes)}); {EngineDescription}";

    /// <summary>The path opened.</summary>
    public string Path => Name;
    /// <summary>True when opened with O_DIRECT (false for the <c>,buffered</c> fallback).</summary>
    public bool IsDirect { get; }
    /// <summary>True when the path is a block device rather than a regular file.</summary>
    public bool IsBlockDevice { get; }
    /// <summary>The engine in use (never <see cref="FileEngineKind.Auto"/>).</summary>
    public FileEngineKind Engine { get; }
    /// <summary>One line: O_DIRECT or buffered, the engine, and why it was chosen.</summary>
    public string EngineDescription => $"{(IsDirect ? "O_DIRECT" : "buffered (page cache)")}; {_engine.Description}";
    /// <summary>Requests in flight at most.</summary>
    public int QueueDepth => _engine.Slots;

    /// <inheritdoc/>
    public override long CapacitySectors => _sectors;
    /// <inheritdoc/>
    public override DeviceLimits Limits { get; }
    /// <inheritdoc/>
    public override DeviceFeatures Features => _features;

    /// <summary>
    /// Registers the pinned frames of <paramref name="range"/> with the io_uring engine as a fixed
    /// buffer (at most 1 GiB, the kernel's limit), so reads into them and writes out of them skip
    /// the kernel's per-I/O page pinning. The caller keeps <paramref name="range"/> pinned until it
    /// has disposed the lease, and disposes it only once its I/O in the range has completed (see
    /// <see cref="FixedBufferLease"/>).
    /// </summary>
    /// <returns>The lease, or null when the range stays on plain READV/WRITEV: then
    /// <paramref name="errno"/> says why (EOPNOTSUPP: buffered or thread-pool engine, or no fixed
    /// buffers on this kernel; EFAULT: memory the kernel will not pin long-term, such as a shared
    /// mapping of a file on ext4; ENOMEM: RLIMIT_MEMLOCK; ENOSPC: every range slot in use;
    /// EINVAL: above 1 GiB; ESHUTDOWN: the device is closing).</returns>
    public unsafe FixedBufferLease? RegisterFixedBuffer(in DaxRange range, out int errno)
    {
        errno = 0;
        long bytes = range.Pages << Pfn.PageShift;
        int id = !IsDirect ? -Libc.EOPNOTSUPP : range.Pages <= 0 ? -Libc.EINVAL : _engine.RegisterRange(range.Address, (nuint)bytes);
        if (id >= 0) return new FixedBufferLease(_engine, id, bytes);
        errno = -id;
        return null;
    }

    /// <inheritdoc/>
    IDisposable? IFixedBufferDevice.RegisterFixedBuffer(in DaxRange range, out int errno) => RegisterFixedBuffer(range, out errno);

    /// <summary>Test hook into the engine (short-I/O simulation, counters).</summary>
    internal FileIoEngine EngineForTests => _engine;

    /// <summary>
    /// Opens <paramref name="path"/> (a regular file or a block device) as a block device.
    /// </summary>
    /// <exception cref="NotSupportedException">The filesystem refuses O_DIRECT (the message names the
    /// <c>file:PATH,buffered</c> fallback), or io_uring was required and is unavailable.</exception>
    /// <exception cref="IOException">The path cannot be opened, is not a file or block device, or is smaller than one block.</exception>
    public static unsafe FileDevice Open(string path, FileDeviceOptions? options = null, PhysicalAddressSpace? space = null)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        options ??= new FileDeviceOptions();
        if (options.QueueDepth is < 1 or > 4096)
            throw new ArgumentOutOfRangeException(nameof(options), options.QueueDepth, "queue depth must be 1..4096");
        bool direct = !options.Buffered;
        // Check the type by path first: O_DIRECT on a character device or a directory fails with
        // EINVAL, which must not read as "this filesystem lacks O_DIRECT".
        statx_t st;
        if (Libc.statx(Libc.AT_FDCWD, path, 0, Libc.STATX_TYPE, &st) < 0) Libc.ThrowErrno("statx", path);
        int type = st.stx_mode & Libc.S_IFMT;
        if (type != Libc.S_IFREG && type != Libc.S_IFBLK)
            throw new IOException($"file:{path}: not a regular file or block device");
        int flags = (options.ReadOnly ? Libc.O_RDONLY : Libc.O_RDWR) | Libc.O_CLOEXEC | (direct ? Libc.O_DIRECT : 0);
        SafeFdHandle fd = SafeFdHandle.Open(path, flags, 0);
        if (fd.IsInvalid)
        {
            int errno = Libc.Errno;
            if (errno == Libc.EINVAL && direct) throw DirectUnsupported(path, "open(O_DIRECT)");
            throw Libc.ErrnoException(errno, "open", path);
        }
        try
        {
            if (Libc.statx(fd.Fd, "", Libc.AT_EMPTY_PATH, Libc.STATX_TYPE | Libc.STATX_SIZE | Libc.STATX_DIOALIGN, &st) < 0)
                Libc.ThrowErrno("statx", path);
            type = st.stx_mode & Libc.S_IFMT;
            if (type != Libc.S_IFREG && type != Libc.S_IFBLK)
                throw new IOException($"file:{path}: not a regular file or block device");
            // lseek(END) is the size of a block device as well as of a file.
            long size = Libc.lseek(fd.Fd, 0, Libc.SEEK_END);
            if (size < 0) Libc.ThrowErrno("lseek", path);

            int lbs = Bio.SectorSize;
            if (direct)
            {
                if ((st.stx_mask & Libc.STATX_DIOALIGN) != 0)
                {
                    if (st.stx_dio_offset_align == 0) throw DirectUnsupported(path, "statx(STATX_DIOALIGN)");
                    uint need = Math.Max(st.stx_dio_offset_align, st.stx_dio_mem_align);
                    if (need > Pfn.PageSize)
                        throw new IOException($"file:{path}: O_DIRECT needs {need}-byte alignment; only 512 and 4096 are supported");
                    if (need > (uint)lbs) lbs = Pfn.PageSize;
                }
                lbs = ProbeDirect(fd.Fd, path, size, lbs);
            }
            long capacity = size & ~(long)(lbs - 1);
            if (capacity == 0) throw new IOException($"file:{path}: {size} bytes is smaller than one {lbs}-byte block");

            FileIoEngine engine = CreateEngine(fd, path, options, space ?? PhysicalAddressSpace.Shared, out FileEngineKind kind);
            var limits = new DeviceLimits(lbs, Math.Max(lbs, Pfn.PageSize), MaxBytesPerBio, direct ? lbs : 1);
            return new FileDevice(path, engine, capacity, limits, direct, type == Libc.S_IFBLK, kind, options.ReadOnly, space);
        }
        catch
        {
            fd.Dispose();
            throw;
        }
    }

    /// <inheritdoc/>
    protected override void SubmitCore(Bio bio) => _engine.Submit(bio);

    /// <summary>Completes every bio in flight (waiting for the kernel), then closes the file.</summary>
    protected override void Dispose(bool disposing) => _engine.Dispose();

    private static FileIoEngine CreateEngine(SafeFdHandle fd, string path, FileDeviceOptions options, PhysicalAddressSpace space, out FileEngineKind kind)
    {
        int slots = options.QueueDepth;
        string name = System.IO.Path.GetFileName(path);
        if (options.Engine == FileEngineKind.ThreadPool)
        {
            kind = FileEngineKind.ThreadPool;
            return new ThreadPoolEngine(fd, slots, space, name, "selected explicitly");
        }
        if (options.Engine == FileEngineKind.Auto && Libc.IsTmpfs(fd.Fd))
        {
            kind = FileEngineKind.ThreadPool;
            return new ThreadPoolEngine(fd, slots, space, name,
                "auto: tmpfs, where io_uring punts every read and write to an io-wq worker; blocking calls complete inline");
        }
        try
        {
            if (options.SimulateIoUringUnavailable)
                throw new IoUringUnavailableException("io_uring_setup failed: simulated for a test", Libc.ENOSYS);
            kind = FileEngineKind.IoUring;
            return IoUringEngine.Create(fd, slots, space, name, options.SimulateNoDeferTaskrun);
        }
        catch (IoUringUnavailableException e)
        {
            if (options.Engine == FileEngineKind.IoUring) throw new NotSupportedException($"file:{path}: {e.Message}", e);
            kind = FileEngineKind.ThreadPool;
            return new ThreadPoolEngine(fd, slots, space, name, $"io_uring unavailable: {e.Message}");
        }
    }

    // One aligned read at offset 0 tells whether O_DIRECT works here and whether 512-byte blocks do.
    private static unsafe int ProbeDirect(int fd, string path, long size, int lbs)
    {
        if (size < lbs) return lbs; // too small to probe; Open refuses it anyway
        void* buf = NativeMemory.AlignedAlloc(Pfn.PageSize, Pfn.PageSize);
        try
        {
            while (true)
            {
                if (Libc.pread(fd, buf, (nuint)lbs, 0) >= 0) return lbs;
                int errno = Libc.Errno;
                if (errno == Libc.EINTR) continue;
                if (errno != Libc.EINVAL) throw Libc.ErrnoException(errno, "pread(O_DIRECT probe)", path);
                if (lbs == Bio.SectorSize && size >= Pfn.PageSize) { lbs = Pfn.PageSize; continue; }
                throw DirectUnsupported(path, "the first O_DIRECT read");
            }
        }
        finally { NativeMemory.AlignedFree(buf); }
    }

    private static NotSupportedException DirectUnsupported(string path, string what) =>
        new($"file:{path}: O_DIRECT is not supported on this filesystem ({what} failed with EINVAL); use the explicit fallback 'file:{path},buffered' to go through the page cache");
}
