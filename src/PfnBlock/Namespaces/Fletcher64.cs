using System.Buffers.Binary;

namespace PfnBlock.Namespaces;

/// <summary>
/// The Fletcher-64 checksum of the nvdimm info blocks (kernel <c>nd_fletcher64</c>, PMDK
/// <c>util_checksum_compute</c>): the block is summed as little-endian u32 words,
/// <c>lo += w; hi += lo</c>, result <c>hi &lt;&lt; 32 | lo</c>.
/// </summary>
public static class Fletcher64
{
    /// <summary>Checksums <paramref name="data"/> (length a multiple of 4).</summary>
    public static ulong Compute(ReadOnlySpan<byte> data)
    {
        if ((data.Length & 3) != 0) throw new ArgumentException("length must be a multiple of 4", nameof(data));
        uint lo = 0, hi = 0;
        for (int i = 0; i < data.Length; i += 4)
        {
            lo += BinaryPrimitives.ReadUInt32LittleEndian(data[i..]);
            hi += lo;
        }
        return (ulong)hi << 32 | lo;
    }

    /// <summary>
    /// Checksums <paramref name="block"/> as if the 8-byte checksum field at <paramref name="checksumOffset"/>
    /// were zero, without modifying the block.
    /// </summary>
    public static ulong ComputeSkipping(ReadOnlySpan<byte> block, int checksumOffset)
    {
        uint lo = 0, hi = 0;
        for (int i = 0; i < block.Length; i += 4)
        {
            uint w = i >= checksumOffset && i < checksumOffset + 8 ? 0 : BinaryPrimitives.ReadUInt32LittleEndian(block[i..]);
            lo += w;
            hi += lo;
        }
        return (ulong)hi << 32 | lo;
    }
}
