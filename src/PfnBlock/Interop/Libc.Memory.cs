namespace PfnBlock.Interop;

// Memory-management advice of the page-descriptor maps (residency is mincore, in Libc.Holes.cs).
internal static unsafe partial class Libc
{
    // <sys/mman.h>
    public const int MADV_NOHUGEPAGE = 15;
}
