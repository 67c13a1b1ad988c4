namespace PfnBlock.Tests.Support;

/// <summary>
/// Scratch files for one test: paths under /dev/shm (tmpfs, the emulated pmem of the suite),
/// deleted when the test ends whatever happened. Keep namespaces at 64 MiB or less.
/// </summary>
public sealed class Scratch : IDisposable
{
    /// <summary>Largest namespace a test may create.</summary>
    public const long MaxNamespaceBytes = 64L << 20;

    private readonly List<string> _paths = [];

    /// <summary>The directory scratch files live in.</summary>
    public static string Directory => System.IO.Directory.Exists("/dev/shm") ? "/dev/shm" : Path.GetTempPath();

    /// <summary>A fresh path that does not exist yet (under <paramref name="directory"/>, default <see cref="Directory"/>); deleted on dispose.</summary>
    public string NewPath(string hint = "ns", string? directory = null)
    {
        string path = Path.Combine(directory ?? Directory, $"pfnblock-test-{hint}-{Guid.NewGuid():N}");
        lock (_paths) _paths.Add(path);
        return path;
    }

    /// <summary>A fresh sparse file of <paramref name="size"/> bytes under <paramref name="directory"/>; deleted on dispose.</summary>
    public string NewSizedFile(string directory, long size, string hint = "file")
    {
        string path = NewPath(hint, directory);
        using (var f = File.Create(path)) f.SetLength(size);
        return path;
    }

    /// <summary>A fresh file holding <paramref name="content"/>; deleted on dispose.</summary>
    public string NewFile(ReadOnlySpan<byte> content, string hint = "file")
    {
        string path = NewPath(hint);
        File.WriteAllBytes(path, content.ToArray());
        return path;
    }

    /// <summary>A fresh, closed namespace of <paramref name="size"/> bytes; deleted on dispose.</summary>
    public string NewNamespace(long size = 2 << 20, uint sectorSize = 512, string name = "")
    {
        string path = NewPath();
        PfnBlock.Namespaces.PmemNamespace.Create(path, new PfnBlock.Namespaces.NamespaceCreateOptions { Size = size, SectorSize = sectorSize, Name = name }).Dispose();
        return path;
    }

    /// <summary>A fresh empty directory under <paramref name="directory"/> (default <see cref="Directory"/>); deleted with its contents on dispose.</summary>
    public string NewDirectory(string hint = "dir", string? directory = null)
    {
        string path = NewPath(hint, directory);
        System.IO.Directory.CreateDirectory(path);
        return path;
    }

    /// <summary>Deletes every path handed out (directories with their contents).</summary>
    public void Dispose()
    {
        lock (_paths)
        {
            foreach (string p in _paths)
            {
                try
                {
                    if (System.IO.Directory.Exists(p)) System.IO.Directory.Delete(p, recursive: true);
                    else File.Delete(p);
                }
                catch (IOException) { }
                catch (UnauthorizedAccessException) { }
            }
            _paths.Clear();
        }
    }
}
