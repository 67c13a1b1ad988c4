using System.Runtime.InteropServices;

namespace PfnBlock.Interop;

// FIEMAP: where a file's extents lie on the device, for measuring how much of a tree sits in
// physically contiguous, 2 MiB-aligned extents (what a huge-page DAX mapping would need).
internal static unsafe partial class Libc
{
    // <linux/fs.h>: _IOWR('f', 11, struct fiemap)
    public const ulong FS_IOC_FIEMAP = 0xC020660B;

    // <linux/fiemap.h>
    public const uint FIEMAP_FLAG_SYNC = 0x1;
    public const uint FIEMAP_EXTENT_LAST = 0x1;
    public const uint FIEMAP_EXTENT_UNKNOWN = 0x2;
    public const uint FIEMAP_EXTENT_DELALLOC = 0x4;
    public const uint FIEMAP_EXTENT_ENCODED = 0x8;
    public const uint FIEMAP_EXTENT_NOT_ALIGNED = 0x100;
    public const uint FIEMAP_EXTENT_DATA_INLINE = 0x200;
    public const uint FIEMAP_EXTENT_DATA_TAIL = 0x400;

    /// <summary><c>struct fiemap</c> (32 bytes), followed in memory by <see cref="fm_extent_count"/> extents.</summary>
    [StructLayout(LayoutKind.Sequential)]
    public struct fiemap_hdr
    {
        public ulong fm_start;
        public ulong fm_length;
        public uint fm_flags;
        public uint fm_mapped_extents;
        public uint fm_extent_count;
        public uint fm_reserved;
    }

    /// <summary><c>struct fiemap_extent</c> (56 bytes).</summary>
    [StructLayout(LayoutKind.Sequential)]
    public struct fiemap_extent
    {
        public ulong fe_logical;
        public ulong fe_physical;
        public ulong fe_length;
        public ulong fe_reserved64_0;
        public ulong fe_reserved64_1;
        public uint fe_flags;
        public uint fe_reserved_0;
        public uint fe_reserved_1;
        public uint fe_reserved_2;
    }

    [LibraryImport(LibName, EntryPoint = "ioctl", SetLastError = true)]
    public static partial int ioctl(int fd, ulong request, void* argp);
}
