using PfnBlock.Interop;

namespace PfnBlock.CrashTest.Structures;

/// <summary>
/// The file a namespace-level crash target works on, mapped shared: the namespace code opens the
/// file by path, and the explorer reads and rewrites its bytes through <see cref="Address"/>
/// (the same page-cache pages), so a crash state written there is what the next open finds.
/// Deleted on dispose.
/// </summary>
internal sealed unsafe class SharedImageFile : IDisposable
{
    /// <summary>Creates a file of <paramref name="size"/> bytes named <paramref name="prefix"/>-GUID in <paramref name="directory"/> and maps it.</summary>
    public SharedImageFile(string directory, string prefix, long size)
    {
        Path = System.IO.Path.Combine(directory, $"{prefix}-{Guid.NewGuid():N}");
        Length = size;
        int fd = Libc.open(Path, Libc.O_RDWR | Libc.O_CREAT | Libc.O_CLOEXEC, 0x180 /* 0600 */);
        if (fd < 0) Libc.ThrowErrno("open", Path);
        try
        {
            if (Libc.ftruncate(fd, size) != 0) Libc.ThrowErrno("ftruncate", Path);
            nint map = Libc.mmap(0, (nuint)size, Libc.PROT_READ | Libc.PROT_WRITE, Libc.MAP_SHARED, fd, 0);
            if (map == Libc.MAP_FAILED) Libc.ThrowErrno("mmap", Path);
            Address = (byte*)map;
        }
        catch
        {
            File.Delete(Path);
            throw;
        }
        finally { _ = Libc.close(fd); }
    }

    /// <summary>The file's path.</summary>
    public string Path { get; }
    /// <summary>The shared mapping of the whole file; null once disposed.</summary>
    public byte* Address { get; private set; }
    /// <summary>The file's size.</summary>
    public long Length { get; }

    /// <summary>Unmaps and deletes the file.</summary>
    public void Dispose()
    {
        if (Address != null) _ = Libc.munmap((nint)Address, (nuint)Length);
        Address = null;
        File.Delete(Path);
    }
}
