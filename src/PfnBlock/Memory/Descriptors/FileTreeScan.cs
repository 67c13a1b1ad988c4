using PfnBlock.Interop;

namespace PfnBlock.Memory;

/// <summary>One size class of a <see cref="FileTreeScan"/>: files of at most <paramref name="UpTo"/> bytes (and more than the previous class's).</summary>
/// <param name="UpTo">The class's upper bound in bytes; <see cref="long.MaxValue"/> for the last.</param>
/// <param name="Files">Files in the class.</param>
/// <param name="Bytes">Their apparent bytes.</param>
public readonly record struct FileSizeClass(long UpTo, long Files, long Bytes);

/// <summary>
/// What a real tree says about the thread's file-size claims (<c>pfnblock memmap --scan DIR</c>):
/// how file sizes are distributed (Stoffel's /home full of small files), how many bytes sit in
/// files of 2 MiB or more (Linus: "big files are almost immaterial from a caching standpoint"),
/// how many in <c>.git/objects/pack</c> (Al: pack caching "matters a lot"), and, from FIEMAP,
/// how many file bytes lie in physically contiguous, 2 MiB-aligned extents that a huge page
/// could map (Linus: "I doubt you will find a very sane rw filesystem that makes them contiguous
/// and aligns them at 2MB boundaries").
/// </summary>
public sealed class FileTreeScan
{
    /// <summary>Size class bounds: 0, 4 KiB, 16 KiB, 64 KiB, 256 KiB, 1 MiB, 2 MiB (a huge page), 16 MiB, 128 MiB, 1 GiB, more.</summary>
    public static IReadOnlyList<long> Bounds { get; } = [0, 4 << 10, 16 << 10, 64 << 10, 256 << 10, 1 << 20, 2 << 20, 16 << 20, 128 << 20, 1 << 30, long.MaxValue];

    private const long Huge = 2 << 20;
    private readonly long[] _files = new long[Bounds.Count];
    private readonly long[] _bytes = new long[Bounds.Count];

    /// <summary>Regular files seen (symbolic links and special files are not followed or counted).</summary>
    public long TotalFiles { get; private set; }
    /// <summary>Their apparent sizes, summed.</summary>
    public long TotalBytes { get; private set; }
    /// <summary>Bytes in files of 2 MiB or more.</summary>
    public long LargeFileBytes { get; private set; }
    /// <summary>Bytes in files under a <c>.git/objects/pack</c> directory.</summary>
    public long GitPackBytes { get; private set; }
    /// <summary>Files whose extents FIEMAP reported.</summary>
    public long FilesMapped { get; private set; }
    /// <summary>Bytes of the extents FIEMAP reported with a known physical place.</summary>
    public long BytesMapped { get; private set; }
    /// <summary>Bytes in 2 MiB chunks that are 2 MiB-aligned both in the file and on the device and lie inside one extent.</summary>
    public long BytesInAligned2MExtents { get; private set; }
    /// <summary>Directories or files that could not be read (permissions, races with deletion).</summary>
    public long Unreadable { get; private set; }
    /// <summary>The size classes, in <see cref="Bounds"/> order.</summary>
    public IEnumerable<FileSizeClass> Classes => Bounds.Select((b, i) => new FileSizeClass(b, _files[i], _bytes[i]));

    /// <summary>Scans every regular file under <paramref name="root"/> (not following links or crossing into /proc-like trees).</summary>
    /// <param name="root">The directory.</param>
    /// <param name="fiemap">Also ask the filesystem where each file's extents lie.</param>
    /// <exception cref="DirectoryNotFoundException">The directory does not exist.</exception>
    public static FileTreeScan Run(string root, bool fiemap = true)
    {
        if (!Directory.Exists(root)) throw new DirectoryNotFoundException($"'{root}' is not a directory");
        var scan = new FileTreeScan();
        var options = new EnumerationOptions { RecurseSubdirectories = true, IgnoreInaccessible = true, AttributesToSkip = FileAttributes.ReparsePoint, ReturnSpecialDirectories = false };
        foreach (FileInfo f in new DirectoryInfo(root).EnumerateFiles("*", options))
        {
            long size;
            try
            {
                if ((f.Attributes & (FileAttributes.ReparsePoint | FileAttributes.Device)) != 0) continue;
                size = f.Length;
            }
            catch (IOException) { scan.Unreadable++; continue; }
            scan.Add(f.FullName, size);
            if (fiemap && size > 0) scan.Map(f.FullName);
        }
        return scan;
    }

    private void Add(string path, long size)
    {
        TotalFiles++;
        TotalBytes += size;
        int c = 0;
        while (size > Bounds[c]) c++;
        _files[c]++;
        _bytes[c] += size;
        if (size >= Huge) LargeFileBytes += size;
        if (path.Contains("/.git/objects/pack/", StringComparison.Ordinal)) GitPackBytes += size;
    }

    private unsafe void Map(string path)
    {
        using var fd = SafeFdHandle.Open(path, Libc.O_RDONLY | Libc.O_CLOEXEC, 0);
        if (fd.IsInvalid) { Unreadable++; return; }
        const int Batch = 128;
        byte* buffer = stackalloc byte[sizeof(Libc.fiemap_hdr) + Batch * sizeof(Libc.fiemap_extent)];
        var request = (Libc.fiemap_hdr*)buffer;
        var extents = (Libc.fiemap_extent*)(buffer + sizeof(Libc.fiemap_hdr));
        ulong start = 0;
        bool mapped = false;
        while (true)
        {
            *request = new Libc.fiemap_hdr { fm_start = start, fm_length = ulong.MaxValue, fm_flags = Libc.FIEMAP_FLAG_SYNC, fm_extent_count = Batch };
            // Filesystems without FIEMAP (tmpfs, overlay over one) answer EOPNOTSUPP: the file counts as unmapped.
            if (Libc.ioctl(fd.Fd, Libc.FS_IOC_FIEMAP, buffer) != 0) break;
            uint n = request->fm_mapped_extents;
            if (n == 0) break;
            mapped = true;
            bool last = false;
            for (uint i = 0; i < n; i++)
            {
                Libc.fiemap_extent e = extents[i];
                last |= (e.fe_flags & Libc.FIEMAP_EXTENT_LAST) != 0;
                start = e.fe_logical + e.fe_length;
                const uint Unplaced = Libc.FIEMAP_EXTENT_UNKNOWN | Libc.FIEMAP_EXTENT_DELALLOC | Libc.FIEMAP_EXTENT_ENCODED
                    | Libc.FIEMAP_EXTENT_NOT_ALIGNED | Libc.FIEMAP_EXTENT_DATA_INLINE | Libc.FIEMAP_EXTENT_DATA_TAIL;
                if ((e.fe_flags & Unplaced) != 0) continue;
                BytesMapped += (long)e.fe_length;
                BytesInAligned2MExtents += Aligned2MBytes((long)e.fe_logical, (long)e.fe_physical, (long)e.fe_length);
            }
            if (last) break;
        }
        if (mapped) FilesMapped++;
    }

    /// <summary>Bytes of an extent in whole 2 MiB chunks aligned to 2 MiB in the file and on the device alike.</summary>
    public static long Aligned2MBytes(long logical, long physical, long length)
    {
        // A chunk at file offset L (2 MiB-aligned) lies at physical + (L - logical): aligned only if the two offsets agree mod 2 MiB.
        if (((physical - logical) & (Huge - 1)) != 0) return 0;
        long first = (logical + Huge - 1) & ~(Huge - 1);
        long end = (logical + length) & ~(Huge - 1);
        return Math.Max(0, end - first);
    }
}
