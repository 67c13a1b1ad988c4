using System.Buffers.Binary;

namespace PfnBlock.CrashTest;

/// <summary>
/// Self-checking sector contents, for the crash-state explorer's workloads and the crash and
/// concurrency tests: word 0 is the LBA, word 1 the version, every further 8-byte word a hash of
/// (lba, version, index). A sector mixing two writes, or holding a write meant for another LBA,
/// fails <see cref="Decode"/>.
/// </summary>
public static class SectorPattern
{
    /// <summary>Fills <paramref name="sector"/> with version <paramref name="version"/> of <paramref name="lba"/>.</summary>
    public static void Fill(Span<byte> sector, long lba, long version)
    {
        BinaryPrimitives.WriteInt64LittleEndian(sector, lba);
        BinaryPrimitives.WriteInt64LittleEndian(sector[8..], version);
        ulong x = Seed(lba, version);
        for (int i = 16; i < sector.Length; i += 8)
        {
            x ^= x << 13; x ^= x >> 7; x ^= x << 17;
            BinaryPrimitives.WriteUInt64LittleEndian(sector[i..], x);
        }
    }

    /// <summary>The version a sector holds: 0 for all zeros (never written), -1 when torn or foreign.</summary>
    public static long Decode(ReadOnlySpan<byte> sector, long lba)
    {
        long storedLba = BinaryPrimitives.ReadInt64LittleEndian(sector);
        long version = BinaryPrimitives.ReadInt64LittleEndian(sector[8..]);
        if (storedLba == 0 && version == 0) return sector.IndexOfAnyExcept((byte)0) < 0 ? 0 : -1;
        if (storedLba != lba || version <= 0) return -1;
        ulong x = Seed(lba, version);
        for (int i = 16; i < sector.Length; i += 8)
        {
            x ^= x << 13; x ^= x >> 7; x ^= x << 17;
            if (BinaryPrimitives.ReadUInt64LittleEndian(sector[i..]) != x) return -1;
        }
        return version;
    }

    private static ulong Seed(long lba, long version) => ((ulong)lba * 0x9E3779B97F4A7C15UL) ^ ((ulong)version * 0xC2B2AE3D27D4EB4FUL) | 1;
}
