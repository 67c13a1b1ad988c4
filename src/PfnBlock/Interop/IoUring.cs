using System.Runtime.InteropServices;

namespace PfnBlock.Interop;

// The io_uring ABI as in <linux/io_uring.h> (checked against the 6.18 uapi header). Names keep
// their C spelling so they can be compared with the header line by line. Only what the file
// device uses is declared.

/// <summary><c>struct io_sqring_offsets</c>: where the SQ ring's fields live in its mapping.</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct io_sqring_offsets
{
    public uint head;
    public uint tail;
    public uint ring_mask;
    public uint ring_entries;
    public uint flags;
    public uint dropped;
    public uint array;
    public uint resv1;
    public ulong resv2;
}

/// <summary><c>struct io_cqring_offsets</c>: where the CQ ring's fields live in its mapping.</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct io_cqring_offsets
{
    public uint head;
    public uint tail;
    public uint ring_mask;
    public uint ring_entries;
    public uint overflow;
    public uint cqes;
    public uint flags;
    public uint resv1;
    public ulong resv2;
}

/// <summary><c>struct io_uring_params</c> (120 bytes): in/out argument of io_uring_setup.</summary>
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct io_uring_params
{
    public uint sq_entries;
    public uint cq_entries;
    public uint flags;
    public uint sq_thread_cpu;
    public uint sq_thread_idle;
    public uint features;
    public uint wq_fd;
    public fixed uint resv[3];
    public io_sqring_offsets sq_off;
    public io_cqring_offsets cq_off;
}

/// <summary>
/// <c>struct io_uring_sqe</c> (64 bytes), with the unions flattened to the member the file
/// device uses: <c>off</c>, <c>addr</c>, <c>len</c>, <c>rw_flags</c> (also <c>fsync_flags</c>).
/// </summary>
[StructLayout(LayoutKind.Explicit, Size = 64)]
internal struct io_uring_sqe
{
    [FieldOffset(0)] public byte opcode;
    [FieldOffset(1)] public byte flags;
    [FieldOffset(2)] public ushort ioprio;
    [FieldOffset(4)] public int fd;
    [FieldOffset(8)] public ulong off;
    [FieldOffset(16)] public ulong addr;
    [FieldOffset(24)] public uint len;
    [FieldOffset(28)] public uint rw_flags;
    [FieldOffset(32)] public ulong user_data;
    [FieldOffset(40)] public ushort buf_index;
    [FieldOffset(42)] public ushort personality;
    [FieldOffset(44)] public int splice_fd_in;
    [FieldOffset(48)] public ulong addr3;
    [FieldOffset(56)] public ulong __pad2;
}

/// <summary><c>struct io_uring_cqe</c> (16 bytes; the ring is set up without CQE32).</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct io_uring_cqe
{
    public ulong user_data;
    public int res;
    public uint flags;
}

/// <summary><c>struct io_uring_rsrc_register</c>: argument of IORING_REGISTER_BUFFERS2 / FILES2.</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct io_uring_rsrc_register
{
    public uint nr;
    public uint flags;
    public ulong resv2;
    public ulong data;
    public ulong tags;
}

/// <summary><c>struct io_uring_rsrc_update2</c>: argument of IORING_REGISTER_BUFFERS_UPDATE.</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct io_uring_rsrc_update2
{
    public uint offset;
    public uint resv;
    public ulong data;
    public ulong tags;
    public uint nr;
    public uint resv2;
}

/// <summary><c>struct io_uring_probe_op</c>.</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct io_uring_probe_op
{
    public byte op;
    public byte resv;
    public ushort flags;
    public uint resv2;
}

/// <summary><c>struct io_uring_probe</c> header; <c>ops[]</c> follows it.</summary>
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct io_uring_probe
{
    public byte last_op;
    public byte ops_len;
    public ushort resv;
    public fixed uint resv2[3];
}

/// <summary>The io_uring system calls and constants (x86_64 and arm64 share the syscall numbers).</summary>
internal static unsafe partial class IoUring
{
    // asm-generic/unistd.h and arch/x86/entry/syscalls: 425..427 on every 64-bit arch since 5.1.
    public const long __NR_io_uring_setup = 425;
    public const long __NR_io_uring_enter = 426;
    public const long __NR_io_uring_register = 427;

    // enum io_uring_op (the subset used)
    public const byte IORING_OP_READV = 1;
    public const byte IORING_OP_WRITEV = 2;
    public const byte IORING_OP_FSYNC = 3;
    public const byte IORING_OP_READ_FIXED = 4;
    public const byte IORING_OP_WRITE_FIXED = 5;
    public const byte IORING_OP_FALLOCATE = 17;
    public const byte IORING_OP_READ = 22;

    // sqe->flags
    public const byte IOSQE_FIXED_FILE = 1 << 0;

    // sqe->fsync_flags
    public const uint IORING_FSYNC_DATASYNC = 1U << 0;

    // io_uring_setup flags
    public const uint IORING_SETUP_CQSIZE = 1U << 3;
    public const uint IORING_SETUP_CLAMP = 1U << 4;
    public const uint IORING_SETUP_R_DISABLED = 1U << 6;
    public const uint IORING_SETUP_SUBMIT_ALL = 1U << 7;
    public const uint IORING_SETUP_SINGLE_ISSUER = 1U << 12;
    public const uint IORING_SETUP_DEFER_TASKRUN = 1U << 13;

    // io_uring_params.features
    public const uint IORING_FEAT_SINGLE_MMAP = 1U << 0;
    public const uint IORING_FEAT_NODROP = 1U << 1;
    public const uint IORING_FEAT_SUBMIT_STABLE = 1U << 2;

    // mmap offsets
    public const long IORING_OFF_SQ_RING = 0;
    public const long IORING_OFF_CQ_RING = 0x8000000;
    public const long IORING_OFF_SQES = 0x10000000;

    // io_uring_enter flags
    public const uint IORING_ENTER_GETEVENTS = 1U << 0;

    // io_uring_register opcodes
    public const uint IORING_REGISTER_FILES = 2;
    public const uint IORING_REGISTER_EVENTFD = 4;
    public const uint IORING_REGISTER_PROBE = 8;
    public const uint IORING_REGISTER_ENABLE_RINGS = 12;
    public const uint IORING_REGISTER_BUFFERS2 = 15;
    public const uint IORING_REGISTER_BUFFERS_UPDATE = 16;
    // io_uring_rsrc_register.flags: a table of empty slots, filled later by *_UPDATE (5.19)
    public const uint IORING_RSRC_REGISTER_SPARSE = 1U << 0;
    public const ushort IO_URING_OP_SUPPORTED = 1 << 0;

    // <linux/fs.h> per-I/O flags for sqe->rw_flags (preadv2/pwritev2)
    public const uint RWF_DSYNC = 0x2;

    // glibc's syscall(2) is variadic; on x86_64 and arm64 Linux, integer arguments of a
    // variadic call travel in the same registers as fixed ones, so fixed prototypes are exact.
    [LibraryImport("libc", EntryPoint = "syscall", SetLastError = true)]
    private static partial long syscall_setup(long number, uint entries, io_uring_params* p);

    [LibraryImport("libc", EntryPoint = "syscall", SetLastError = true)]
    private static partial long syscall_enter(long number, int fd, uint to_submit, uint min_complete, uint flags, nint sig, nuint sigsz);

    [LibraryImport("libc", EntryPoint = "syscall", SetLastError = true)]
    private static partial long syscall_register(long number, int fd, uint opcode, void* arg, uint nr_args);

    /// <summary><c>io_uring_setup(2)</c>: a ring fd, or -1 with errno set.</summary>
    public static int io_uring_setup(uint entries, io_uring_params* p) => (int)syscall_setup(__NR_io_uring_setup, entries, p);

    /// <summary><c>io_uring_enter(2)</c> without a signal mask: SQEs consumed, or -1 with errno set.</summary>
    public static int io_uring_enter(int fd, uint to_submit, uint min_complete, uint flags) =>
        (int)syscall_enter(__NR_io_uring_enter, fd, to_submit, min_complete, flags, 0, 0);

    /// <summary><c>io_uring_register(2)</c>: 0 or a count, or -1 with errno set.</summary>
    public static int io_uring_register(int fd, uint opcode, void* arg, uint nr_args) =>
        (int)syscall_register(__NR_io_uring_register, fd, opcode, arg, nr_args);
}
