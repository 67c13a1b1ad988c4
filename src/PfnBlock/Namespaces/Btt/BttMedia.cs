using PfnBlock.Memory;

namespace PfnBlock.Namespaces.Btt;

/// <summary>
/// The byte range a BTT is laid out in — a namespace's data area or a pmemblk pool's data area —
/// together with how stores to it are made durable.
/// </summary>
public sealed unsafe class BttMedia
{
    private readonly Action<long, long> _persistRange;
    private readonly Action _flush;

    /// <summary>Describes <paramref name="length"/> bytes at <paramref name="address"/>.</summary>
    /// <param name="address">First byte of the range (4 KiB aligned).</param>
    /// <param name="length">Bytes in the range.</param>
    /// <param name="persistence">How stores become durable.</param>
    /// <param name="persistRange">Makes a byte range (offset, length) durable, e.g. msync.</param>
    /// <param name="flush">Makes every store durable.</param>
    public BttMedia(byte* address, long length, PersistenceMode persistence, Action<long, long> persistRange, Action flush)
    {
        Address = address;
        Length = length;
        Persistence = persistence;
        _persistRange = persistRange;
        _flush = flush;
    }

    /// <summary>
    /// CPU address of the range's first byte. Valid while the mapping's owner (namespace or pool) is
    /// open; the persist and flush delegates reference that owner, so the media keeps it reachable.
    /// </summary>
    public byte* Address { get; }
    /// <summary>Bytes in the range; arenas fill it but for a tail smaller than one arena (16 MiB).</summary>
    public long Length { get; }
    /// <summary>How stores become durable.</summary>
    public PersistenceMode Persistence { get; }

    /// <summary>Makes <paramref name="length"/> bytes at <paramref name="offset"/> durable.</summary>
    public void PersistRange(long offset, long length) => _persistRange(offset, length);
    /// <summary>Makes every store durable.</summary>
    public void Flush() => _flush();

    /// <summary>The data area of an open namespace.</summary>
    public static BttMedia ForNamespace(PmemNamespace ns) =>
        new(ns.DataAddress, ns.DataSize, ns.Persistence, ns.PersistRange, ns.Flush);
}
