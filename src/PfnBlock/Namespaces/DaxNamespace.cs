using PfnBlock.Interop;
using PfnBlock.Memory;

namespace PfnBlock.Namespaces;

/// <summary>
/// A devdax namespace's data area mapped for direct load/store by an application, like
/// <c>mmap</c> of a kernel <c>/dev/daxX.Y</c>: no block I/O, the data 2 MiB-aligned in the file and
/// mapped at a 2 MiB-aligned address, so huge pages can back it where the filesystem gives them.
/// </summary>
/// <remarks>
/// The claim is <c>flock</c> on the namespace file, the lock block-mode opens already take:
/// mappers take it shared (<c>LOCK_SH</c>), so any number of processes map the namespace at once,
/// while block-mode opens, <c>create --force</c>, destroy and resize take it exclusive
/// (<c>LOCK_EX</c>) and are refused while anyone maps it. flock rather than a lock file: it lives
/// and dies with the mapper's descriptor (a killed mapper leaves no stale lock and there is no file
/// to clean up), the kernel arbitrates shared against exclusive, and it is the lock every other
/// opener of the namespace already honours. The descriptor stays open for the mapping's life.
/// </remarks>
public sealed unsafe class DaxNamespace : IDisposable
{
    private readonly NamespaceFile _file;
    private readonly SafeMmapHandle _mapping;
    private int _disposed;

    private DaxNamespace(NamespaceFile file, SafeMmapHandle mapping, NamespaceInfoBlock info, PersistenceMode mode)
    {
        _file = file;
        _mapping = mapping;
        Info = info;
        Persistence = mode;
    }

    /// <summary>The namespace's info block.</summary>
    public NamespaceInfoBlock Info { get; }
    /// <summary>The first byte of the data area in this process.</summary>
    public byte* Address => _mapping.Address;
    /// <summary>Bytes of the data area.</summary>
    public long Size => Info.DataSize;
    /// <summary>How stores become durable: cache flushes under MAP_SYNC, else msync.</summary>
    public PersistenceMode Persistence { get; }

    /// <summary>
    /// Maps the data area of the devdax namespace at <paramref name="path"/> with a shared claim.
    /// </summary>
    /// <exception cref="NamespaceInUseException">A block-mode opener holds the namespace.</exception>
    /// <exception cref="InvalidNamespaceException">The path is not a devdax namespace (a raw or sector namespace is opened as a block device instead).</exception>
    public static DaxNamespace Map(string path)
    {
        NamespaceFile file = NamespaceFile.OpenShared(path);
        SafeMmapHandle? map = null;
        try
        {
            NamespaceInfoBlock info = PmemNamespace.ReadValidInfo(file, out _);
            if (info.Mode != NamespaceMode.DevDax)
                throw new InvalidNamespaceException($"'{path}' is a {info.Mode.ToString().ToLowerInvariant()} namespace, not devdax: open it as a block device (pmem:{path})");
            // Whole huge pages from a 2 MiB-aligned file offset: create guarantees the data offset.
            nuint length = (nuint)info.DataSize;
            map = SafeMmapHandle.TryMapAligned(length, DevDaxAlign, Libc.PROT_READ | Libc.PROT_WRITE, Libc.MAP_SHARED_VALIDATE | Libc.MAP_SYNC, file.Fd, info.DataOffset);
            PersistenceMode mode = PersistenceMode.CpuCache;
            if (map is null)
            {
                int errno = Libc.Errno;
                if (errno is not (Libc.EOPNOTSUPP or Libc.EINVAL)) throw Libc.ErrnoException(errno, "mmap(MAP_SYNC)", path);
                map = SafeMmapHandle.TryMapAligned(length, DevDaxAlign, Libc.PROT_READ | Libc.PROT_WRITE, Libc.MAP_SHARED, file.Fd, info.DataOffset)
                    ?? throw Libc.ErrnoException(Libc.Errno, "mmap", path);
                mode = PersistenceMode.Msync;
            }
            return new DaxNamespace(file, map, info, mode);
        }
        catch
        {
            map?.Dispose();
            file.Dispose();
            throw;
        }
    }

    /// <summary>The data alignment of every devdax namespace (the kernel's default device-DAX alignment).</summary>
    public const uint DevDaxAlign = 2u << 20;

    /// <summary>Makes <paramref name="length"/> bytes at <paramref name="offset"/> of the data area durable.</summary>
    public void Persist(long offset, long length)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(offset);
        ArgumentOutOfRangeException.ThrowIfNegative(length);
        if (offset > Size - length) throw new ArgumentOutOfRangeException(nameof(length), $"[{offset}, +{length}) is outside the {Size}-byte data area");
        PmemNamespace.PersistMapped(Address + offset, length, Persistence);
    }

    /// <summary>Unmaps and releases the shared claim.</summary>
    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        _mapping.Dispose();
        _file.Dispose();
    }
}
