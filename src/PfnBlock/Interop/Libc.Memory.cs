using System.Runtime.InteropServices;

namespace PfnBlock.Interop;

// Memory-management calls of the page-descriptor maps and the DAX mappings: residency, huge-page
// advice, filesystem identity (statfs) for telling which page size backs a namespace.
internal static unsafe partial class Libc
{
    // <sys/mman.h>
    public const int MADV_NOHUGEPAGE = 15;

    // <linux/magic.h>
    public const long HUGETLBFS_MAGIC = 0x958458f6;
    public const long EXT4_SUPER_MAGIC = 0xEF53;

    [LibraryImport(LibName, EntryPoint = "mincore", SetLastError = true)]
    public static partial int mincore(nint addr, nuint length, byte* vec);

    /// <summary><c>statfs(2)</c> by path into a raw buffer of at least 120 bytes: <c>f_type</c> at 0, <c>f_bsize</c> at 8 on 64-bit Linux.</summary>
    [LibraryImport(LibName, EntryPoint = "statfs64", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int statfs(string path, void* buf);
}
