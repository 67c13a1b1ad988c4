using System.Runtime.InteropServices;

namespace PfnBlock.Interop;

// Memory-management calls of the page-descriptor maps: residency (mincore) and huge-page advice.
internal static unsafe partial class Libc
{
    // <sys/mman.h>
    public const int MADV_NOHUGEPAGE = 15;

    [LibraryImport(LibName, EntryPoint = "mincore", SetLastError = true)]
    public static partial int mincore(nint addr, nuint length, byte* vec);
}
