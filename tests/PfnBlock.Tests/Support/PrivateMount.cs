using System.Globalization;
using PfnBlock.Tests.Nbd;

namespace PfnBlock.Tests.Support;

/// <summary>
/// A filesystem mounted for one test on a directory of its own, unmounted (and the directory
/// removed) on dispose whatever happened. A hugetlbfs mount also raises the huge page pool
/// (<c>/proc/sys/vm/nr_hugepages</c>) by the pages it needs and puts the old value back on dispose,
/// or at once if the mount fails. Needs root, which this machine and CI have: a test run without
/// it fails here, loudly.
/// </summary>
public sealed class PrivateMount : IDisposable
{
    private const string Pool = "/proc/sys/vm/nr_hugepages";
    private readonly long? _poolBefore;
    private bool _mounted;

    private PrivateMount(string type, string options, long hugePages)
    {
        Assert.True(Environment.UserName == "root", "mounting tmpfs/hugetlbfs and sizing the huge page pool need root (as on this machine and in CI)");
        Directory = System.IO.Directory.CreateTempSubdirectory($"pfnblock-{type}-").FullName;
        try
        {
            if (hugePages > 0)
            {
                _poolBefore = ReadPool();
                File.WriteAllText(Pool, (_poolBefore + hugePages).Value.ToString(CultureInfo.InvariantCulture));
                long now = ReadPool();
                Assert.True(now >= _poolBefore + hugePages, $"the kernel gave {now - _poolBefore} of {hugePages} huge pages (memory fragmented?)");
            }
            Tool.Run("mount", "-t", type, "-o", options, $"pfnblock-test-{type}", Directory);
            _mounted = true;
        }
        catch
        {
            Dispose();
            throw;
        }
    }

    /// <summary>The mount point.</summary>
    public string Directory { get; }

    /// <summary>A tmpfs of <paramref name="sizeMiB"/> MiB mounted with <c>huge=<paramref name="huge"/></c>.</summary>
    public static PrivateMount Tmpfs(string huge, int sizeMiB = 64) => new("tmpfs", $"huge={huge},size={sizeMiB}m", 0);

    /// <summary>A hugetlbfs of 2 MiB pages limited to <paramref name="pages"/> pages, with the pool raised by as many.</summary>
    public static PrivateMount Hugetlbfs(int pages) => new("hugetlbfs", $"pagesize=2M,size={pages * 2}M", pages);

    /// <summary>A path inside the mount.</summary>
    public string PathOf(string name) => System.IO.Path.Combine(Directory, name);

    private static long ReadPool() => long.Parse(File.ReadAllText(Pool).Trim(), CultureInfo.InvariantCulture);

    /// <summary>Unmounts (the files go with the filesystem), restores the pool, removes the directory; each step runs even if an earlier one failed.</summary>
    public void Dispose()
    {
        try
        {
            if (_mounted) Tool.Run("umount", Directory);
            _mounted = false;
        }
        finally
        {
            try
            {
                if (_poolBefore is long before) File.WriteAllText(Pool, before.ToString(CultureInfo.InvariantCulture));
            }
            finally
            {
                if (System.IO.Directory.Exists(Directory)) System.IO.Directory.Delete(Directory, recursive: true);
            }
        }
    }
}
