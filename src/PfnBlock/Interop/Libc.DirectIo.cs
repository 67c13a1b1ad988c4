using System.Runtime.InteropServices;

namespace PfnBlock.Interop;

#pragma warning disable CS8981 // the C name, kept on purpose
/// <summary><c>struct iovec</c> from &lt;sys/uio.h&gt;.</summary>
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct iovec
{
    public void* iov_base;
    public nuint iov_len;
}
#pragma warning restore CS8981

/// <summary>
/// <c>struct statx</c> (256 bytes) from &lt;linux/stat.h&gt;, with the fields the file device reads
/// at their header offsets; timestamps and spares are kept as padding.
/// </summary>
[StructLayout(LayoutKind.Explicit, Size = 256)]
internal struct statx_t
{
    [FieldOffset(0x00)] public uint stx_mask;
    [FieldOffset(0x04)] public uint stx_blksize;
    [FieldOffset(0x1c)] public ushort stx_mode;
    [FieldOffset(0x20)] public ulong stx_ino;
    [FieldOffset(0x28)] public ulong stx_size;
    [FieldOffset(0x88)] public uint stx_dev_major;
    [FieldOffset(0x8c)] public uint stx_dev_minor;
    [FieldOffset(0x98)] public uint stx_dio_mem_align;
    [FieldOffset(0x9c)] public uint stx_dio_offset_align;
}

// Calls the file device needs beyond Libc.cs; kept in their own file so the shared one stays small.
internal static unsafe partial class Libc
{
    // <linux/falloc.h>
    public const int FALLOC_FL_ZERO_RANGE = 0x10;

    // <linux/fcntl.h>, <linux/stat.h>
    public const int AT_FDCWD = -100;
    public const int AT_EMPTY_PATH = 0x1000;
    public const uint STATX_TYPE = 0x1;
    public const uint STATX_SIZE = 0x200;
    public const uint STATX_DIOALIGN = 0x2000;
    public const int S_IFMT = 0xF000;
    public const int S_IFSOCK = 0xC000;
    public const int S_IFREG = 0x8000;
    public const int S_IFBLK = 0x6000;
    public const int S_IFDIR = 0x4000;
    public const int S_IFCHR = 0x2000;
    public const int S_IFIFO = 0x1000;

    // <errno.h> additions
    public const int EPERM = 1;
    public const int ENOSYS = 38;
    public const int EBUSY = 16;
    public const int EROFS = 30;

    // <sys/eventfd.h>
    public const int EFD_CLOEXEC = 0x80000;

    /// <summary><c>eventfd(2)</c>.</summary>
    [LibraryImport(LibName, EntryPoint = "eventfd", SetLastError = true)]
    public static partial int eventfd(uint initval, int flags);

    /// <summary><c>read(2)</c>.</summary>
    [LibraryImport(LibName, EntryPoint = "read", SetLastError = true)]
    public static partial nint read(int fd, void* buf, nuint count);

    /// <summary><c>write(2)</c>.</summary>
    [LibraryImport(LibName, EntryPoint = "write", SetLastError = true)]
    public static partial nint write(int fd, void* buf, nuint count);

    // <linux/magic.h>
    public const long TMPFS_MAGIC = 0x01021994;

    /// <summary><c>fstatfs(2)</c> into a raw buffer of at least 120 bytes; <c>f_type</c> is its first 8 bytes on 64-bit Linux.</summary>
    [LibraryImport(LibName, EntryPoint = "fstatfs64", SetLastError = true)]
    public static partial int fstatfs(int fd, void* buf);

    /// <summary><c>statx(2)</c>.</summary>
    [LibraryImport(LibName, EntryPoint = "statx", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
    public static partial int statx(int dirfd, string pathname, int flags, uint mask, statx_t* statxbuf);

    /// <summary><c>preadv2(2)</c>: scatter read with per-call RWF_* flags.</summary>
    [LibraryImport(LibName, EntryPoint = "preadv64v2", SetLastError = true)]
    public static partial nint preadv2(int fd, iovec* iov, int iovcnt, long offset, int flags);

    /// <summary><c>pwritev2(2)</c>: gather write with per-call RWF_* flags (RWF_DSYNC for FUA).</summary>
    [LibraryImport(LibName, EntryPoint = "pwritev64v2", SetLastError = true)]
    public static partial nint pwritev2(int fd, iovec* iov, int iovcnt, long offset, int flags);
}
