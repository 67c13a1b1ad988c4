using System.Buffers.Binary;

namespace PfnBlock.Cli.Bench;

/// <summary>
/// Self-checking block contents for <c>--verify</c>: a 32-byte header (magic, device offset,
/// write stamp, header check) followed by a pseudo-random stream seeded from offset and stamp.
/// A block read back is right when its header names the offset it was read from and the whole
/// stream regenerates; a torn, misplaced or stale-garbage block fails.
/// </summary>
internal static class VerifyPattern
{
    private const ulong Magic = 0x5946_5256_424e_4650; // "PFNBVRFY" little-endian
    public const int HeaderSize = 32;

    /// <summary>Fills <paramref name="block"/> for device offset <paramref name="offset"/> with write stamp <paramref name="stamp"/>.</summary>
    public static void Fill(Span<byte> block, long offset, ulong stamp)
    {
        BinaryPrimitives.WriteUInt64LittleEndian(block, Magic);
        BinaryPrimitives.WriteInt64LittleEndian(block[8..], offset);
        BinaryPrimitives.WriteUInt64LittleEndian(block[16..], stamp);
        BinaryPrimitives.WriteUInt64LittleEndian(block[24..], HeaderCheck(offset, stamp));
        ulong state = Seed(offset, stamp);
        Span<byte> body = block[HeaderSize..];
        int i = 0;
        for (; i + 8 <= body.Length; i += 8) BinaryPrimitives.WriteUInt64LittleEndian(body[i..], Next(ref state));
        for (; i < body.Length; i++) body[i] = (byte)Next(ref state);
    }

    /// <summary>Null when <paramref name="block"/> is a complete pattern for <paramref name="offset"/>, else what is wrong.</summary>
    public static string? Check(ReadOnlySpan<byte> block, long offset)
    {
        if (BinaryPrimitives.ReadUInt64LittleEndian(block) != Magic) return "no verify header (block never written or overwritten by something else)";
        long stored = BinaryPrimitives.ReadInt64LittleEndian(block[8..]);
        ulong stamp = BinaryPrimitives.ReadUInt64LittleEndian(block[16..]);
        if (BinaryPrimitives.ReadUInt64LittleEndian(block[24..]) != HeaderCheck(stored, stamp)) return "corrupt verify header";
        if (stored != offset) return $"block written for offset {stored} found at offset {offset}";
        ulong state = Seed(offset, stamp);
        ReadOnlySpan<byte> body = block[HeaderSize..];
        int i = 0;
        for (; i + 8 <= body.Length; i += 8)
            if (BinaryPrimitives.ReadUInt64LittleEndian(body[i..]) != Next(ref state)) return $"data mismatch at byte {HeaderSize + i} (torn or corrupt block, stamp {stamp:x})";
        for (; i < body.Length; i++)
            if (body[i] != (byte)Next(ref state)) return $"data mismatch at byte {HeaderSize + i} (stamp {stamp:x})";
        return null;
    }

    private static ulong HeaderCheck(long offset, ulong stamp) => Mix((ulong)offset * 0x9E3779B97F4A7C15UL ^ stamp ^ Magic);
    private static ulong Seed(long offset, ulong stamp) => Mix((ulong)offset ^ Mix(stamp)) | 1;

    private static ulong Mix(ulong z)
    {
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }

    private static ulong Next(ref ulong s)
    {
        s ^= s << 13; s ^= s >> 7; s ^= s << 17;
        return s;
    }
}
