using System.Buffers.Binary;
using PfnBlock.Memory;

namespace PfnBlock.Namespaces;

/// <summary>What opening a descriptor reserve found and repaired.</summary>
/// <param name="HeaderRebuilt">The reserve header was missing or invalid, so the whole reserve was formatted anew.</param>
/// <param name="BlocksRebuilt">Blocks of 64 descriptors whose checksum failed (and were rewritten).</param>
/// <param name="RuntimeReset">Descriptors that still held a reference count, map count or flags from an earlier opener (cleared).</param>
/// <param name="Blocks">Blocks of descriptors in the reserve.</param>
public readonly record struct DescriptorReserveReport(bool HeaderRebuilt, long BlocksRebuilt, long RuntimeReset, long Blocks);

/// <summary>
/// The on-media format of the <c>device</c> descriptor map (<c>--map device</c>): a reserve inside
/// the namespace, right after the info block and in front of the data area, as the kernel lays out
/// a pfn namespace with <c>vmem_altmap</c>: 64 bytes per 4 KiB data frame, the reserve rounded up so
/// the data starts on the namespace's alignment.
/// </summary>
/// <remarks>
/// <para>Layout, namespace offsets (map_off is 4096, map_size the reserve):</para>
/// <code>
/// map_off + 0      4 KiB  reserve header (below)
/// map_off + 4096          checksum table: one u64 per block of 64 descriptors, padded to 4 KiB
/// map_off + descs         descriptors: 64 bytes each, descriptor i for data frame i
/// ...                     padding up to dataoff
/// </code>
/// <para>Reserve header, little-endian:</para>
/// <code>
/// off  size field
///   0    16 signature     "PFNBLOCK_MEMMAP\0"
///  16    16 uuid          the namespace's uuid: a reserve copied from another namespace is rebuilt
///  32     2 major         1: any other is rebuilt
///  34     2 minor         0
///  36     4 desc_size     64
///  40     8 frames        data frames described
///  48     8 dataoff       namespace offset of data frame 0 (the info block's)
///  56     8 sums_off      reserve offset of the checksum table (4096)
///  64     8 descs_off     reserve offset of descriptor 0
///  72     8 reserve_size  bytes of the reserve (the info block's map_size)
///  80  4008 reserved      zero
/// 4088    8 checksum      Fletcher-64 of the header with this field zeroed
/// </code>
/// <para>A descriptor (<see cref="PageDescriptor"/>) has persistent bytes — <c>Index</c> (the
/// frame's number, 16..24) and the unused tail (40..64, zero) — covered by its block's checksum
/// (Fletcher-64 over the uuid, the block number and those 32 bytes of each of its descriptors),
/// and run-time bytes (flags, reference and map counts, private, pfn), which change on every pin,
/// are never checksummed or flushed, and are cleared when the namespace is opened by a writer (a
/// pin cannot outlive its process). Nothing in the reserve is trusted: open checks the header and
/// every block and rebuilds what fails, as Ingo's "persisting them across reboots is unnecessary"
/// allows.</para>
/// </remarks>
public static unsafe class DescriptorReserve
{
    /// <summary>Bytes of the reserve header.</summary>
    public const int HeaderSize = 4096;
    /// <summary>Offset of the header checksum.</summary>
    public const int ChecksumOffset = 4088;
    /// <summary>Descriptors per checksummed block (one 4 KiB page of them).</summary>
    public const int DescriptorsPerBlock = Pfn.PageSize / PageDescriptor.Size;
    /// <summary>The header's first 16 bytes.</summary>
    public static ReadOnlySpan<byte> Signature => "PFNBLOCK_MEMMAP\0"u8;
    private const ushort Major = 1;
    private const int PersistentBytes = 32;

    /// <summary>Reserve bytes the descriptors of <paramref name="frames"/> frames need, before rounding to the alignment.</summary>
    public static long Needed(long frames) => HeaderSize + SumsBytes(frames) + frames * PageDescriptor.Size;

    private static long Blocks(long frames) => (frames + DescriptorsPerBlock - 1) / DescriptorsPerBlock;
    private static long SumsBytes(long frames) => AlignUp(Blocks(frames) * sizeof(ulong), Pfn.PageSize);
    private static long AlignUp(long value, long align) => (value + align - 1) & ~(align - 1);

    /// <summary>
    /// Lays out a namespace of <paramref name="namespaceSize"/> bytes with a reserve: the data
    /// offset (aligned), the reserve's size (up to the data offset) and the data frames. As the
    /// kernel's <c>nd_pfn_init</c>, the reserve is sized for every frame the namespace could hold
    /// without it, so it always covers the data that is left.
    /// </summary>
    /// <exception cref="ArgumentException">The namespace is too small for its reserve and one data frame.</exception>
    public static (long DataOffset, long ReserveSize, long Frames) Layout(long namespaceSize, long align)
    {
        long backup = NamespaceInfoBlock.BackupOffset(namespaceSize);
        long upper = (backup - NamespaceInfoBlock.Size) / Pfn.PageSize;
        long dataOffset = AlignUp(NamespaceInfoBlock.Size + Needed(Math.Max(upper, 1)), align);
        long frames = (backup - dataOffset) / Pfn.PageSize;
        if (frames <= 0)
            throw new ArgumentException(
                $"namespace size {namespaceSize} is too small for --map device: its descriptor reserve needs {Needed(Math.Max(upper, 1))} bytes " +
                $"(64 per 4 KiB frame plus header and checksums), rounded up to the {align}-byte alignment, before any data");
        return (dataOffset, dataOffset - NamespaceInfoBlock.Size, frames);
    }

    /// <summary>Formats the whole reserve at <paramref name="reserve"/> for the namespace <paramref name="info"/> and makes it durable.</summary>
    internal static void Format(byte* reserve, NamespaceInfoBlock info, PersistenceMode mode)
    {
        long frames = info.DataSize >> Pfn.PageShift;
        long descs = HeaderSize + SumsBytes(frames);
        // Descriptors and checksums first, the header last: a valid header promises nothing
        // (every block is checked anyway), but it is cheap to keep the order meaningful.
        PmemStore.Clear(reserve + HeaderSize, (nuint)(descs - HeaderSize + frames * PageDescriptor.Size));
        for (long b = 0; b < Blocks(frames); b++) WriteBlock(reserve, info.Uuid, frames, descs, b);
        PmemNamespace.PersistMapped(reserve + HeaderSize, descs - HeaderSize + frames * PageDescriptor.Size, mode);
        WriteHeader(reserve, info, frames, descs);
        PmemNamespace.PersistMapped(reserve, HeaderSize, mode);
    }

    /// <summary>
    /// Validates the reserve of an opened namespace and rebuilds what fails (the header and with it
    /// everything, or single blocks); with <paramref name="resetRuntime"/>, clears the run-time
    /// fields earlier openers left. Returns the descriptor array.
    /// </summary>
    /// <param name="reserve">The reserve's first byte (a shared mapping, or a private copy for read-only opens).</param>
    /// <param name="info">The namespace's valid info block.</param>
    /// <param name="mode">How stores to the reserve become durable.</param>
    /// <param name="resetRuntime">True for an opener that knows no pin of another process can be live (an exclusive claim).</param>
    /// <param name="mutation">A deliberate bug for the crash explorer's mutation test (<see cref="OrderingMutation.DescriptorReserveTrusted"/>: no validation).</param>
    /// <param name="report">What was found and rebuilt.</param>
    internal static PageDescriptor* Open(byte* reserve, NamespaceInfoBlock info, PersistenceMode mode, bool resetRuntime, OrderingMutation mutation, out DescriptorReserveReport report)
    {
        long frames = info.DataSize >> Pfn.PageShift;
        long descs = HeaderSize + SumsBytes(frames);
        long blocks = Blocks(frames);
        if (PmemTrace.Enabled && mutation == OrderingMutation.DescriptorReserveTrusted)
        {
            report = new DescriptorReserveReport(false, 0, 0, blocks);
            return (PageDescriptor*)(reserve + descs);
        }
        if (!HeaderValid(reserve, info, frames, descs))
        {
            Format(reserve, info, mode);
            report = new DescriptorReserveReport(true, blocks, 0, blocks);
            return (PageDescriptor*)(reserve + descs);
        }
        long rebuilt = 0;
        var sums = (ulong*)(reserve + HeaderSize);
        for (long b = 0; b < blocks; b++)
        {
            if (BlockChecksum(reserve, info.Uuid, frames, descs, b) == sums[b]) continue;
            WriteBlock(reserve, info.Uuid, frames, descs, b);
            long count = Math.Min(DescriptorsPerBlock, frames - b * DescriptorsPerBlock);
            PmemNamespace.PersistMapped(reserve + descs + b * Pfn.PageSize, count * PageDescriptor.Size, mode);
            PmemNamespace.PersistMapped((byte*)(sums + b), sizeof(ulong), mode);
            rebuilt++;
        }
        long reset = 0;
        if (resetRuntime)
        {
            var d = (PageDescriptor*)(reserve + descs);
            for (long i = 0; i < frames; i++)
            {
                ulong* w = (ulong*)(d + i);
                // Words 0, 1, 3 and 4: flags, counts, private, pfn. Read first: an idle descriptor is never written.
                if ((w[0] | w[1] | w[3] | w[4]) == 0) continue;
                PmemStore.Write64(w, 0);
                PmemStore.Write64(w + 1, 0);
                PmemStore.Write64(w + 3, 0);
                PmemStore.Write64(w + 4, 0);
                reset++;
            }
        }
        report = new DescriptorReserveReport(false, rebuilt, reset, blocks);
        return (PageDescriptor*)(reserve + descs);
    }

    /// <summary>Null when the reserve of an opened namespace is valid throughout (header, every block, no run-time state left), else the first problem; for checks and tests.</summary>
    public static string? Verify(byte* reserve, NamespaceInfoBlock info)
    {
        long frames = info.DataSize >> Pfn.PageShift;
        long descs = HeaderSize + SumsBytes(frames);
        if (!HeaderValid(reserve, info, frames, descs)) return "reserve header invalid";
        var sums = (ulong*)(reserve + HeaderSize);
        for (long b = 0; b < Blocks(frames); b++)
            if (BlockChecksum(reserve, info.Uuid, frames, descs, b) != sums[b]) return $"descriptor block {b} fails its checksum";
        var d = (PageDescriptor*)(reserve + descs);
        for (long i = 0; i < frames; i++)
            if (d[i].Index != (ulong)i) return $"descriptor {i} names frame {d[i].Index}";
        return null;
    }

    private static void WriteHeader(byte* reserve, NamespaceInfoBlock info, long frames, long descs)
    {
        Span<byte> h = new byte[HeaderSize];
        Signature.CopyTo(h);
        info.Uuid.TryWriteBytes(h[16..], bigEndian: true, out _);
        BinaryPrimitives.WriteUInt16LittleEndian(h[32..], Major);
        BinaryPrimitives.WriteUInt16LittleEndian(h[34..], 0);
        BinaryPrimitives.WriteUInt32LittleEndian(h[36..], PageDescriptor.Size);
        BinaryPrimitives.WriteInt64LittleEndian(h[40..], frames);
        BinaryPrimitives.WriteInt64LittleEndian(h[48..], info.DataOffset);
        BinaryPrimitives.WriteInt64LittleEndian(h[56..], HeaderSize);
        BinaryPrimitives.WriteInt64LittleEndian(h[64..], descs);
        BinaryPrimitives.WriteInt64LittleEndian(h[72..], info.MapSize);
        BinaryPrimitives.WriteUInt64LittleEndian(h[ChecksumOffset..], Fletcher64.ComputeSkipping(h, ChecksumOffset));
        PmemStore.Copy(reserve, h);
    }

    private static bool HeaderValid(byte* reserve, NamespaceInfoBlock info, long frames, long descs)
    {
        var h = new ReadOnlySpan<byte>(reserve, HeaderSize);
        return h[..16].SequenceEqual(Signature)
            && BinaryPrimitives.ReadUInt64LittleEndian(h[ChecksumOffset..]) == Fletcher64.ComputeSkipping(h, ChecksumOffset)
            && new Guid(h.Slice(16, 16), bigEndian: true) == info.Uuid
            && BinaryPrimitives.ReadUInt16LittleEndian(h[32..]) == Major
            && BinaryPrimitives.ReadUInt32LittleEndian(h[36..]) == PageDescriptor.Size
            && BinaryPrimitives.ReadInt64LittleEndian(h[40..]) == frames
            && BinaryPrimitives.ReadInt64LittleEndian(h[48..]) == info.DataOffset
            && BinaryPrimitives.ReadInt64LittleEndian(h[56..]) == HeaderSize
            && BinaryPrimitives.ReadInt64LittleEndian(h[64..]) == descs
            && BinaryPrimitives.ReadInt64LittleEndian(h[72..]) == info.MapSize;
    }

    /// <summary>Rewrites block <paramref name="block"/>: each descriptor names its frame, everything else zero; then its checksum.</summary>
    private static void WriteBlock(byte* reserve, Guid uuid, long frames, long descs, long block)
    {
        long first = block * DescriptorsPerBlock;
        long count = Math.Min(DescriptorsPerBlock, frames - first);
        Span<byte> image = stackalloc byte[DescriptorsPerBlock * PageDescriptor.Size];
        image.Clear();
        for (int i = 0; i < count; i++) BinaryPrimitives.WriteInt64LittleEndian(image[(i * PageDescriptor.Size + 16)..], first + i);
        PmemStore.Copy(reserve + descs + block * Pfn.PageSize, image[..(int)(count * PageDescriptor.Size)]);
        ulong* sums = (ulong*)(reserve + HeaderSize);
        PmemStore.Write64(sums + block, BlockChecksum(reserve, uuid, frames, descs, block));
    }

    private static ulong BlockChecksum(byte* reserve, Guid uuid, long frames, long descs, long block)
    {
        long first = block * DescriptorsPerBlock;
        long count = Math.Min(DescriptorsPerBlock, frames - first);
        Span<byte> sum = stackalloc byte[24 + DescriptorsPerBlock * PersistentBytes];
        uuid.TryWriteBytes(sum, bigEndian: true, out _);
        BinaryPrimitives.WriteInt64LittleEndian(sum[16..], block);
        byte* d = reserve + descs + block * Pfn.PageSize;
        for (int i = 0; i < count; i++)
        {
            new ReadOnlySpan<byte>(d + i * PageDescriptor.Size + 16, 8).CopyTo(sum[(24 + i * PersistentBytes)..]);
            new ReadOnlySpan<byte>(d + i * PageDescriptor.Size + 40, 24).CopyTo(sum[(24 + i * PersistentBytes + 8)..]);
        }
        return Fletcher64.Compute(sum[..(int)(24 + count * PersistentBytes)]);
    }
}
