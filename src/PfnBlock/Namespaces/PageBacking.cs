using System.Globalization;
using PfnBlock.Common;
using PfnBlock.Interop;
using PfnBlock.Memory;

namespace PfnBlock.Namespaces;

/// <summary>The kind of filesystem a namespace file lives on, as far as the page size of its mappings goes.</summary>
public enum BackingFilesystem
{
    /// <summary>Any other filesystem (ext4, xfs, …) or a device: mapped with 4 KiB pages.</summary>
    Other,
    /// <summary>tmpfs: 4 KiB pages, or transparent 2 MiB pages when mounted <c>huge=always</c> or <c>huge=within_size</c>.</summary>
    Tmpfs,
    /// <summary>hugetlbfs: every page is a huge page of the mount's <c>pagesize</c>, taken from the pool in <c>/proc/sys/vm/nr_hugepages</c>.</summary>
    Hugetlbfs,
}

/// <summary>
/// Which page size backs a namespace's mapping: what the filesystem offers (<see cref="Offered(string)"/>,
/// from <c>fstatfs</c> and the tmpfs mount's <c>huge=</c> option) and, for a mapping, what the kernel
/// actually put in the page tables (<see cref="Measure"/>, from <c>/proc/self/smaps</c>).
/// </summary>
/// <remarks>
/// This is the TLB's page size, separate from <c>--map huge</c>, which is the granularity of the
/// page descriptors. The page size is a property of where the file lives, not of the namespace:
/// copying the file to another filesystem changes it, so it is not recorded in the info block.
/// </remarks>
public sealed record PageBacking
{
    /// <summary>The base page size.</summary>
    public const long SmallPage = Pfn.PageSize;

    /// <summary>The filesystem kind.</summary>
    public BackingFilesystem Filesystem { get; init; }
    /// <summary>The page size the filesystem gives this file's mappings: hugetlbfs' <c>f_bsize</c>, the PMD size on a huge tmpfs, else 4096.</summary>
    public long OfferedPageSize { get; init; } = SmallPage;
    /// <summary>The filesystem and the setting that decides its page size, e.g. "tmpfs huge=always", "hugetlbfs pagesize=2M", "ext4".</summary>
    public string Detail { get; init; } = "";
    /// <summary>Bytes of the mapping that were in the page tables when measured (0 before measuring).</summary>
    public long MappedBytes { get; init; }
    /// <summary>Of <see cref="MappedBytes"/>, those mapped by huge pages (PMD-mapped THP, or hugetlb pages).</summary>
    public long HugeMappedBytes { get; init; }
    /// <summary>The size of the pages mapped, as measured: the hugetlb page size, 2 MiB when at least half the mapped bytes are PMD-mapped, else 4096; the offered size before measuring.</summary>
    public long PageSize { get; init; } = SmallPage;
    /// <summary>True once <see cref="Measure"/> filled the mapped figures.</summary>
    public bool Measured { get; init; }

    /// <summary>The huge page size of the transparent-huge-page code (<c>hpage_pmd_size</c>, 2 MiB on x86-64).</summary>
    public static long PmdPageSize { get; } = ReadPmdPageSize();

    /// <summary>One line for people: "2 MiB pages (hugetlbfs pagesize=2M)", "2 MiB pages for 64 MiB of 64 MiB mapped (tmpfs huge=always)".</summary>
    public string Describe()
    {
        string size = SizeParser.Format(PageSize);
        if (!Measured) return $"{size} pages offered ({Detail})";
        if (Filesystem == BackingFilesystem.Hugetlbfs) return $"{size} pages ({Detail})";
        string share = MappedBytes == 0 ? "nothing mapped yet"
            : HugeMappedBytes == 0 ? $"{SizeParser.Format(MappedBytes)} mapped, none by {SizeParser.Format(PmdPageSize)} pages"
            : $"{SizeParser.Format(HugeMappedBytes)} of {SizeParser.Format(MappedBytes)} mapped by {SizeParser.Format(PmdPageSize)} pages";
        return $"{size} pages: {share} ({Detail})";
    }

    /// <summary>
    /// What the filesystem holding <paramref name="path"/> offers (the nearest existing directory's
    /// when the file does not exist yet; opening the file then reports what is missing).
    /// </summary>
    public static PageBacking Offered(string path)
    {
        string target = Path.GetFullPath(path);
        while (!File.Exists(target) && !Directory.Exists(target)) target = Path.GetDirectoryName(target) ?? "/";
        using SafeFdHandle fd = SafeFdHandle.Open(target, Libc.O_RDONLY | Libc.O_CLOEXEC, 0);
        if (fd.IsInvalid) throw Libc.ErrnoException(Libc.Errno, "open", target);
        return Offered(fd.Fd, target);
    }

    /// <summary>What the filesystem holding the open file <paramref name="fd"/> offers.</summary>
    internal static unsafe PageBacking Offered(int fd, string path)
    {
        if (!Libc.FsTypeAndBlockSize(fd, out long type, out long blockSize)) throw Libc.ErrnoException(Libc.Errno, "fstatfs", path);
        if (type == Libc.HUGETLBFS_MAGIC)
            return new PageBacking { Filesystem = BackingFilesystem.Hugetlbfs, OfferedPageSize = blockSize, PageSize = blockSize, Detail = $"hugetlbfs pagesize={SizeParser.Format(blockSize)}" };
        if (type != Libc.TMPFS_MAGIC)
            return new PageBacking { Filesystem = BackingFilesystem.Other, Detail = MountOf(fd)?.FsType ?? $"filesystem type 0x{type:x}" };
        string huge = MountOf(fd)?.Option("huge") ?? "never";
        // The global shmem_enabled setting overrides every mount: "force" makes all tmpfs huge, "deny" none.
        string global = ReadSelected("/sys/kernel/mm/transparent_hugepage/shmem_enabled") ?? "deny";
        string effective = global is "force" or "deny" ? global : huge;
        // advise is left out: a namespace's pages are allocated by fallocate at create, before any
        // mapping could ask for huge pages, so they come out small.
        bool offersHuge = PmdPageSize > SmallPage && effective is "always" or "within_size" or "force";
        string detail = effective == huge ? $"tmpfs huge={huge}" : $"tmpfs huge={huge}, shmem_enabled={global}";
        long page = offersHuge ? PmdPageSize : SmallPage;
        return new PageBacking { Filesystem = BackingFilesystem.Tmpfs, OfferedPageSize = page, PageSize = page, Detail = detail };
    }

    /// <summary>
    /// This backing with the mapping at [<paramref name="address"/>, +<paramref name="length"/>)
    /// measured from <c>/proc/self/smaps</c>: resident bytes, those mapped by huge pages
    /// (<c>ShmemPmdMapped</c>, <c>FilePmdMapped</c>, <c>AnonHugePages</c>, or the hugetlb counts
    /// with a <c>KernelPageSize</c> above 4 KiB), summed over every VMA of the range.
    /// </summary>
    internal unsafe PageBacking Measure(byte* address, long length)
    {
        ulong start = (ulong)address, end = start + (ulong)length;
        long mapped = 0, huge = 0, kernelPage = SmallPage;
        bool inside = false;
        foreach (string line in File.ReadLines("/proc/self/smaps"))
        {
            int dash = line.IndexOf('-');
            int space = line.IndexOf(' ');
            if (dash > 0 && space > dash && ulong.TryParse(line.AsSpan(0, dash), NumberStyles.HexNumber, CultureInfo.InvariantCulture, out ulong lo)
                && ulong.TryParse(line.AsSpan(dash + 1, space - dash - 1), NumberStyles.HexNumber, CultureInfo.InvariantCulture, out ulong hi))
            {
                inside = lo < end && hi > start;
                continue;
            }
            if (!inside) continue;
            int colon = line.IndexOf(':');
            if (colon <= 0) continue;
            string key = line[..colon];
            if (key is not ("Rss" or "KernelPageSize" or "ShmemPmdMapped" or "FilePmdMapped" or "AnonHugePages" or "Shared_Hugetlb" or "Private_Hugetlb")) continue;
            string[] parts = line[(colon + 1)..].Split(' ', StringSplitOptions.RemoveEmptyEntries);
            if (parts.Length == 0 || !long.TryParse(parts[0], CultureInfo.InvariantCulture, out long kb)) continue;
            long bytes = kb << 10;
            switch (key)
            {
                case "Rss": mapped += bytes; break;
                case "KernelPageSize": kernelPage = Math.Max(kernelPage, bytes); break;
                case "ShmemPmdMapped" or "FilePmdMapped" or "AnonHugePages": huge += bytes; break;
                // hugetlb pages are not in Rss: they are counted here only.
                default: mapped += bytes; huge += bytes; break;
            }
        }
        long page = kernelPage > SmallPage ? kernelPage : huge > 0 && 2 * huge >= mapped ? PmdPageSize : SmallPage;
        return this with { MappedBytes = mapped, HugeMappedBytes = huge, PageSize = page, Measured = true };
    }

    /// <summary>A mount from <c>/proc/self/mountinfo</c>: its filesystem type and its superblock options.</summary>
    private sealed record MountEntry(string FsType, string SuperOptions)
    {
        public string? Option(string name) =>
            SuperOptions.Split(',').Select(o => o.Split('=', 2)).FirstOrDefault(kv => kv[0] == name && kv.Length == 2)?[1];
    }

    /// <summary>The mount whose device (major:minor) holds <paramref name="fd"/>; bind mounts of one superblock share its options.</summary>
    private static unsafe MountEntry? MountOf(int fd)
    {
        statx_t st;
        if (Libc.statx(fd, "", Libc.AT_EMPTY_PATH, Libc.STATX_TYPE, &st) < 0) return null;
        string dev = $"{st.stx_dev_major}:{st.stx_dev_minor}";
        // mountinfo: "id parent maj:min root mountpoint options [optional…] - fstype source superoptions"
        foreach (string line in File.ReadLines("/proc/self/mountinfo"))
        {
            string[] f = line.Split(' ');
            if (f.Length < 3 || f[2] != dev) continue;
            int sep = Array.IndexOf(f, "-");
            if (sep < 0 || sep + 3 >= f.Length) continue;
            return new MountEntry(f[sep + 1], f[sep + 3]);
        }
        return null;
    }

    /// <summary>The bracketed choice of a sysfs setting such as "always [madvise] never", or null when the file is absent.</summary>
    private static string? ReadSelected(string path)
    {
        if (!File.Exists(path)) return null;
        string text = File.ReadAllText(path);
        int open = text.IndexOf('['), close = text.IndexOf(']');
        return open >= 0 && close > open ? text[(open + 1)..close] : null;
    }

    private static long ReadPmdPageSize()
    {
        const string path = "/sys/kernel/mm/transparent_hugepage/hpage_pmd_size";
        // Without THP in the kernel no tmpfs gives huge pages; 4 KiB then means "no larger page".
        return File.Exists(path) && long.TryParse(File.ReadAllText(path).Trim(), CultureInfo.InvariantCulture, out long size) ? size : SmallPage;
    }
}
