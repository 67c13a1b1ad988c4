using System.Runtime.InteropServices;

namespace PfnBlock.Interop;

// What sparse files need: finding holes (SEEK_DATA/SEEK_HOLE, page-cache residency) and filling
// mappings without touching holes; kept apart so the shared files stay small.
internal static unsafe partial class Libc
{
    // <unistd.h>
    public const int SEEK_DATA = 3;
    public const int SEEK_HOLE = 4;

    // <sys/mman.h>
    public const int MADV_POPULATE_READ = 22;
    public const int MADV_POPULATE_WRITE = 23;

    // <errno.h>
    public const int ENXIO = 6;
    public const int ENOSPC = 28;

    /// <summary><c>mincore(2)</c>: one byte per page of [addr, addr+length) in <paramref name="vec"/>, bit 0 set when the page is resident (in the page cache, for a file mapping).</summary>
    [LibraryImport(LibName, EntryPoint = "mincore", SetLastError = true)]
    public static partial int mincore(nint addr, nuint length, byte* vec);

    /// <summary>
    /// True when the system has no swap space (<c>sysinfo(2)</c>'s <c>totalswap</c> is 0): then no
    /// page is swapped out (<c>swapoff</c> reads every page back before it returns), and a tmpfs
    /// page <c>mincore</c> calls absent is a hole. False when it cannot tell.
    /// </summary>
    public static bool HasNoSwap()
    {
        // struct sysinfo (x86_64): uptime, loads[3], totalram, freeram, sharedram, bufferram, totalswap, ...
        byte* info = stackalloc byte[128];
        return sysinfo(info) == 0 && *(ulong*)(info + 64) == 0;
    }

    [LibraryImport(LibName, EntryPoint = "sysinfo", SetLastError = true)]
    private static partial int sysinfo(byte* info);

    /// <summary>True when <paramref name="fd"/> lives on tmpfs (<c>fstatfs</c> reports <see cref="TMPFS_MAGIC"/>).</summary>
    public static bool IsTmpfs(int fd)
    {
        byte* buf = stackalloc byte[256];
        return fstatfs(fd, buf) == 0 && *(long*)buf == TMPFS_MAGIC;
    }
}
