using System.Runtime.InteropServices;

namespace PfnBlock.Interop;

/// <summary>Thrown when io_uring cannot be used here; the message says why in one line.</summary>
internal sealed class IoUringUnavailableException(string message, int errno) : IOException(message, errno);

/// <summary>
/// One io_uring instance with its SQ and CQ rings mapped (what liburing's <c>io_uring_queue_init</c>
/// does, minus liburing). The caller owns the SQE slots: <see cref="Sqe"/> hands out SQE number
/// <c>i</c> directly and <see cref="Publish"/> queues it, so an SQE is identified with the request
/// that uses it and the SQ array needs no allocator.
/// </summary>
/// <remarks>
/// Memory ordering follows io_uring(7): the SQ tail and the CQ head are written with release
/// semantics after the entry they cover; the kernel's SQ head and CQ tail are read with acquire.
/// Thread safety is the caller's: <see cref="Publish"/> must be serialised, and only one thread
/// may consume the CQ.
/// </remarks>
internal sealed unsafe class IoUringRing : IDisposable
{
    // The ring fd and its three mappings (the CQ ring shares the SQ ring's with SINGLE_MMAP) are
    // owned handles; every pointer below is derived from them once, here, and Enter uses the raw
    // _fd. Nothing per I/O touches a handle. Safe because the engine disposes the ring only after
    // its completion thread stopped and no request is in the kernel.
    private readonly SafeFdHandle _ringFd;
    private readonly int _fd;
    private readonly SafeMmapHandle? _sqRing;
    private readonly SafeMmapHandle? _cqRing;
    private readonly SafeMmapHandle? _sqesMap;
    private int _disposed;

    private readonly uint* _sqHead;
    private readonly uint* _sqTail;
    private readonly uint _sqMask;
    private readonly uint* _sqArray;
    private readonly io_uring_sqe* _sqes;
    private readonly uint* _cqHead;
    private readonly uint* _cqTail;
    private readonly uint _cqMask;
    private readonly io_uring_cqe* _cqes;
    private readonly byte[] _supportedOps;

    private IoUringRing(SafeFdHandle ringFd, in io_uring_params p)
    {
        _ringFd = ringFd;
        _fd = ringFd.Fd;
        SqEntries = p.sq_entries;
        CqEntries = p.cq_entries;
        Features = p.features;
        try
        {
            nuint sqRingSize = p.sq_off.array + p.sq_entries * sizeof(uint);
            nuint cqRingSize = p.cq_off.cqes + p.cq_entries * (uint)sizeof(io_uring_cqe);
            bool single = (p.features & IoUring.IORING_FEAT_SINGLE_MMAP) != 0;
            if (single) sqRingSize = cqRingSize = Math.Max(sqRingSize, cqRingSize);
            _sqRing = MapRing(sqRingSize, IoUring.IORING_OFF_SQ_RING);
            _cqRing = single ? _sqRing : MapRing(cqRingSize, IoUring.IORING_OFF_CQ_RING);
            _sqesMap = MapRing(p.sq_entries * (nuint)sizeof(io_uring_sqe), IoUring.IORING_OFF_SQES);

            byte* sq = _sqRing.Address;
            _sqHead = (uint*)(sq + p.sq_off.head);
            _sqTail = (uint*)(sq + p.sq_off.tail);
            _sqMask = *(uint*)(sq + p.sq_off.ring_mask);
            _sqArray = (uint*)(sq + p.sq_off.array);
            _sqes = (io_uring_sqe*)_sqesMap.Address;
            byte* cq = _cqRing.Address;
            _cqHead = (uint*)(cq + p.cq_off.head);
            _cqTail = (uint*)(cq + p.cq_off.tail);
            _cqMask = *(uint*)(cq + p.cq_off.ring_mask);
            _cqes = (io_uring_cqe*)(cq + p.cq_off.cqes);
            _supportedOps = Probe(_fd);
        }
        catch
        {
            Release();
            throw;
        }
    }

    /// <summary>SQ size the kernel granted (a power of two).</summary>
    public uint SqEntries { get; }
    /// <summary>CQ size the kernel granted.</summary>
    public uint CqEntries { get; }
    /// <summary>IORING_FEAT_* bits the kernel reported.</summary>
    public uint Features { get; }

    /// <summary>
    /// Sets up a ring of at least <paramref name="entries"/> SQEs and twice as many CQEs, with the
    /// extra IORING_SETUP_* <paramref name="setupFlags"/>, maps it, and checks that every opcode in
    /// <paramref name="requiredOps"/> is supported.
    /// </summary>
    /// <exception cref="IoUringUnavailableException">Setup failed (its <c>HResult</c>
    /// is the errno: EINVAL for setup flags this kernel does not know) or a needed feature is missing.</exception>
    public static IoUringRing Create(uint entries, ReadOnlySpan<byte> requiredOps, uint setupFlags = 0)
    {
        io_uring_params p = default;
        p.flags = IoUring.IORING_SETUP_CQSIZE | IoUring.IORING_SETUP_CLAMP | setupFlags;
        p.cq_entries = entries * 2;
        var fd = new SafeFdHandle();
        fd.Own(IoUring.io_uring_setup(entries, &p));
        if (fd.IsInvalid)
        {
            int errno = Libc.Errno;
            throw new IoUringUnavailableException($"io_uring_setup(flags 0x{p.flags:x}) failed: {Libc.StrError(errno)} (errno {errno}){DisabledNote()}", errno);
        }
        // NODROP (5.5) guarantees no completion is ever lost to a full CQ; the engine sizes the CQ
        // so it cannot fill, but a kernel without NODROP predates the ops we need anyway.
        if ((p.features & IoUring.IORING_FEAT_NODROP) == 0)
        {
            fd.Dispose();
            throw new IoUringUnavailableException($"io_uring lacks IORING_FEAT_NODROP (kernel older than 5.5; features 0x{p.features:x})", Libc.EOPNOTSUPP);
        }
        var ring = new IoUringRing(fd, p) { SetupFlags = p.flags };
        foreach (byte op in requiredOps)
        {
            if (!ring.IsSupported(op))
            {
                ring.Dispose();
                throw new IoUringUnavailableException($"io_uring does not support opcode {op} on this kernel", Libc.EOPNOTSUPP);
            }
        }
        return ring;
    }

    /// <summary>The IORING_SETUP_* flags the ring was created with.</summary>
    public uint SetupFlags { get; private init; }

    /// <summary>
    /// Enables a ring created with IORING_SETUP_R_DISABLED (IORING_REGISTER_ENABLE_RINGS). With
    /// IORING_SETUP_SINGLE_ISSUER the calling thread becomes the only one allowed to submit,
    /// and to register resources from then on. Returns 0 or -errno.
    /// </summary>
    public int Enable() => Math.Min(0, Register(IoUring.IORING_REGISTER_ENABLE_RINGS, null, 0));

    /// <summary>Registers <paramref name="fd"/> as fixed file 0 (IORING_REGISTER_FILES); SQEs then name it with IOSQE_FIXED_FILE. Returns 0 or -errno.</summary>
    public int RegisterFile(int fd) => Math.Min(0, Register(IoUring.IORING_REGISTER_FILES, &fd, 1));

    /// <summary>Creates an empty table of <paramref name="count"/> fixed buffers (IORING_REGISTER_BUFFERS2, sparse; 5.19). Returns 0 or -errno.</summary>
    public int RegisterSparseBuffers(uint count)
    {
        io_uring_rsrc_register reg = default;
        reg.nr = count;
        reg.flags = IoUring.IORING_RSRC_REGISTER_SPARSE;
        return Math.Min(0, Register(IoUring.IORING_REGISTER_BUFFERS2, &reg, (uint)sizeof(io_uring_rsrc_register)));
    }

    /// <summary>
    /// Fills fixed-buffer slot <paramref name="index"/> with <paramref name="length"/> bytes at
    /// <paramref name="address"/> (IORING_REGISTER_BUFFERS_UPDATE). The kernel pins the pages for as
    /// long as the registration lasts (faulting in any not yet present); it refuses memory it cannot
    /// pin long-term. Returns 0 or -errno.
    /// </summary>
    public int UpdateBuffer(uint index, void* address, nuint length)
    {
        iovec iov = new() { iov_base = address, iov_len = length };
        io_uring_rsrc_update2 upd = default;
        upd.offset = index;
        upd.data = (ulong)&iov;
        upd.nr = 1;
        int r = Register(IoUring.IORING_REGISTER_BUFFERS_UPDATE, &upd, (uint)sizeof(io_uring_rsrc_update2));
        return r < 0 ? r : r == 1 ? 0 : -Libc.EINVAL;
    }

    /// <summary>io_uring_register, EINTR retried: the kernel's result (a count for some opcodes), or -errno.</summary>
    private int Register(uint opcode, void* arg, uint nrArgs)
    {
        while (true)
        {
            int r = IoUring.io_uring_register(_fd, opcode, arg, nrArgs);
            if (r >= 0) return r;
            int errno = Libc.Errno;
            if (errno != Libc.EINTR) return -errno;
        }
    }

    /// <summary>Makes the kernel signal <paramref name="eventFd"/> whenever it posts a completion (IORING_REGISTER_EVENTFD).</summary>
    /// <exception cref="IoUringUnavailableException">Registration failed.</exception>
    public void RegisterEventFd(int eventFd)
    {
        if (IoUring.io_uring_register(_fd, IoUring.IORING_REGISTER_EVENTFD, &eventFd, 1) < 0)
        {
            int errno = Libc.Errno;
            throw new IoUringUnavailableException($"IORING_REGISTER_EVENTFD failed: {Libc.StrError(errno)} (errno {errno})", errno);
        }
    }

    /// <summary>True when the kernel's probe lists <paramref name="op"/> as supported.</summary>
    public bool IsSupported(byte op) => op < _supportedOps.Length && _supportedOps[op] != 0;

    /// <summary>SQE number <paramref name="index"/> (below <see cref="SqEntries"/>), cleared.</summary>
    public io_uring_sqe* Sqe(uint index)
    {
        io_uring_sqe* sqe = _sqes + index;
        *sqe = default;
        return sqe;
    }

    /// <summary>Appends SQE <paramref name="index"/> to the SQ (callers serialise this).</summary>
    public void Publish(uint index)
    {
        uint tail = *_sqTail;
        _sqArray[tail & _sqMask] = index;
        Volatile.Write(ref *_sqTail, tail + 1);
    }

    /// <summary>Published SQEs the kernel has not consumed yet (exact when one thread enters the kernel).</summary>
    public uint SqPending => Volatile.Read(ref *_sqTail) - Volatile.Read(ref *_sqHead);

    /// <summary>True when a completion is waiting in the CQ.</summary>
    public bool CqReady => *_cqHead != Volatile.Read(ref *_cqTail);

    /// <summary>
    /// Hands published SQEs to the kernel (<paramref name="toSubmit"/> of them at most) and/or waits
    /// for <paramref name="minComplete"/> completions. Retries EINTR; returns the SQEs consumed or -errno.
    /// </summary>
    public int Enter(uint toSubmit, uint minComplete, uint flags)
    {
        while (true)
        {
            int r = IoUring.io_uring_enter(_fd, toSubmit, minComplete, flags);
            if (r >= 0) return r;
            int errno = Libc.Errno;
            if (errno != Libc.EINTR) return -errno;
        }
    }

    /// <summary>The next completion, or null when the CQ is empty. Call <see cref="Advance"/> after using it.</summary>
    public io_uring_cqe* PeekCqe()
    {
        uint head = *_cqHead;
        if (head == Volatile.Read(ref *_cqTail)) return null;
        return _cqes + (head & _cqMask);
    }

    /// <summary>Marks the completion returned by <see cref="PeekCqe"/> as consumed.</summary>
    public void Advance() => Volatile.Write(ref *_cqHead, *_cqHead + 1);

    /// <summary>Unmaps the rings and closes the ring fd. No request may be in flight.</summary>
    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        Release();
    }

    /// <summary>Unmaps whatever was mapped, then closes the ring fd (the kernel frees the ring with its last reference).</summary>
    private void Release()
    {
        _sqesMap?.Dispose();
        _cqRing?.Dispose(); // the same handle as _sqRing with SINGLE_MMAP: disposing twice is a no-op
        _sqRing?.Dispose();
        _ringFd.Dispose();
    }

    private SafeMmapHandle MapRing(nuint size, long offset)
    {
        SafeMmapHandle? p = SafeMmapHandle.TryMap(size, Libc.PROT_READ | Libc.PROT_WRITE, Libc.MAP_SHARED | Libc.MAP_POPULATE, _fd, offset);
        if (p is null)
        {
            int errno = Libc.Errno;
            throw new IoUringUnavailableException($"mmap of io_uring ring (offset 0x{offset:x}) failed: {Libc.StrError(errno)} (errno {errno})", errno);
        }
        return p;
    }

    private static byte[] Probe(int fd)
    {
        const int maxOps = 256;
        nuint size = (nuint)(sizeof(io_uring_probe) + maxOps * sizeof(io_uring_probe_op));
        byte* buf = (byte*)NativeMemory.AllocZeroed(size);
        try
        {
            // IORING_REGISTER_PROBE arrived in 5.6, together with IORING_OP_FALLOCATE.
            if (IoUring.io_uring_register(fd, IoUring.IORING_REGISTER_PROBE, buf, maxOps) < 0)
            {
                int errno = Libc.Errno;
                throw new IoUringUnavailableException($"io_uring opcode probe failed: {Libc.StrError(errno)} (errno {errno}; kernel older than 5.6?)", errno);
            }
            var probe = (io_uring_probe*)buf;
            var ops = (io_uring_probe_op*)(buf + sizeof(io_uring_probe));
            var supported = new byte[maxOps];
            for (int i = 0; i < probe->ops_len && i < maxOps; i++)
                if ((ops[i].flags & IoUring.IO_URING_OP_SUPPORTED) != 0) supported[ops[i].op] = 1;
            return supported;
        }
        finally { NativeMemory.Free(buf); }
    }

    private static string DisabledNote()
    {
        try
        {
            string v = File.ReadAllText("/proc/sys/kernel/io_uring_disabled").Trim();
            return v == "0" ? "" : $"; /proc/sys/kernel/io_uring_disabled = {v}";
        }
        catch (IOException) { return ""; }
        catch (UnauthorizedAccessException) { return ""; }
    }
}
