namespace PfnBlock.Interop;

// Memory-management advice of the page-descriptor maps and what page size backs a mapping
// (residency is mincore, in Libc.Holes.cs).
internal static unsafe partial class Libc
{
    // <sys/mman.h>
    public const int MADV_NOHUGEPAGE = 15;
    public const int MAP_FIXED = 0x10;

    // <linux/magic.h>
    public const long HUGETLBFS_MAGIC = 0x958458f6;

    /// <summary>
    /// <c>fstatfs(2)</c>'s <c>f_type</c> and <c>f_bsize</c> (the first two 8-byte fields of
    /// <c>struct statfs</c> on 64-bit Linux); false with errno set when the call failed.
    /// </summary>
    public static bool FsTypeAndBlockSize(int fd, out long type, out long blockSize)
    {
        byte* buf = stackalloc byte[256];
        type = blockSize = 0;
        if (fstatfs(fd, buf) != 0) return false;
        type = *(long*)buf;
        blockSize = *(long*)(buf + 8);
        return true;
    }
}
