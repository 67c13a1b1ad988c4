using System.Numerics;
using PfnBlock.Block;

namespace PfnBlock.Targets.Md;

/// <summary>What a member's md metadata holds (<c>pfnblock raid examine</c>, <c>mdadm --examine</c>).</summary>
/// <param name="Superblock">The validated superblock.</param>
/// <param name="Bitmap">The bitmap superblock, when the array has one and it is valid.</param>
/// <param name="BitmapError">Why the bitmap was refused, when the superblock announces one that is not valid.</param>
/// <param name="DirtyBits">Bits set in the bitmap (regions a crash left unsynced).</param>
public sealed record MdMemberInfo(MdSuperblock Superblock, MdBitmapSuperblock? Bitmap, string? BitmapError, long DirtyBits);

/// <summary>Reads and validates the md metadata of one member device.</summary>
public static class MdExamine
{
    /// <summary>Reads the superblock (and bitmap) of <paramref name="device"/>.</summary>
    /// <exception cref="InvalidDataException">No valid md v1.2 superblock; the message says why.</exception>
    /// <exception cref="IOException">The member cannot be read.</exception>
    public static MdMemberInfo Examine(IBlockDevice device)
    {
        using var io = new MdMetadataIo(device.AddressSpace);
        return Examine(device, io);
    }

    internal static MdMemberInfo Examine(IBlockDevice device, MdMetadataIo io)
    {
        if (device.CapacitySectors < MdSuperblock.SuperOffsetSectors + 8)
            throw new InvalidDataException($"{device.Name} is too small to hold an md superblock");
        var block = new byte[MdSuperblock.BlockBytes];
        io.Read(device, MdSuperblock.SuperOffsetSectors * 512, block);
        MdSuperblock sb = MdSuperblock.Decode(block, device.CapacitySectors, out string? error)
            ?? throw new InvalidDataException($"{device.Name}: {error}");
        if (!sb.HasBitmap) return new MdMemberInfo(sb, null, null, 0);
        long bitmapByte = ((long)sb.SuperOffset + sb.BitmapOffset) * 512;
        io.Read(device, bitmapByte, block);
        MdBitmapSuperblock? bm = MdBitmapSuperblock.Decode(block, sb, out string? bmError);
        if (bm is null) return new MdMemberInfo(sb, null, bmError, 0);
        long bytes = (bm.Bits + 7) / 8;
        var bits = new byte[RoundUp(MdBitmapSuperblock.Bytes + bytes, device.Limits.LogicalBlockSize)];
        for (int done = 0; done < bits.Length; done += MdMetadataIo.BufferBytes)
            io.Read(device, bitmapByte + done, bits.AsSpan(done, Math.Min(MdMetadataIo.BufferBytes, bits.Length - done)));
        return new MdMemberInfo(sb, bm, null, CountBits(bits.AsSpan(MdBitmapSuperblock.Bytes), bm.Bits));
    }

    /// <summary>Bits set among the first <paramref name="count"/> of <paramref name="bits"/> (little-endian bit order).</summary>
    public static long CountBits(ReadOnlySpan<byte> bits, long count)
    {
        long n = 0;
        for (long i = 0; i < count / 8; i++) n += BitOperations.PopCount(bits[(int)i]);
        if (count % 8 != 0) n += BitOperations.PopCount((uint)(bits[(int)(count / 8)] & ((1 << (int)(count % 8)) - 1)));
        return n;
    }

    private static int RoundUp(long v, int to) => (int)((v + to - 1) / to * to);

    /// <summary>The md level as mdadm names it.</summary>
    public static string LevelName(uint level) => level switch { 1 => "raid1", 5 => "raid5", _ => $"level {level}" };

    /// <summary>A role as mdadm's "Device Role" line shows it.</summary>
    public static string RoleName(ushort role) => role switch
    {
        MdSuperblock.RoleSpare => "spare",
        MdSuperblock.RoleFaulty => "faulty",
        < MdSuperblock.RoleMax => $"Active device {role}",
        _ => $"role 0x{role:x4}",
    };

    /// <summary>The superblock in mdadm's <c>--examine</c> style, one "Field : value" per line.</summary>
    public static string Format(string member, MdMemberInfo info)
    {
        MdSuperblock sb = info.Superblock;
        var lines = new List<(string, string)>
        {
            ("Magic", $"{MdSuperblock.Magic:x8}"),
            ("Version", "1.2"),
            ("Feature Map", $"0x{sb.FeatureMap:x}"),
            ("Array UUID", sb.UuidText),
            ("Name", sb.SetName),
            ("Creation Time", MdSuperblock.DecodeTime(sb.CTime).ToString("u", System.Globalization.CultureInfo.InvariantCulture)),
            ("Raid Level", LevelName(sb.Level)),
            ("Raid Devices", sb.RaidDisks.ToString(System.Globalization.CultureInfo.InvariantCulture)),
            ("Avail Dev Size", $"{sb.DataSize} sectors"),
            ("Array Size", $"{sb.ArraySectors / 2} KiB"),
            ("Used Dev Size", $"{sb.Size} sectors"),
            ("Data Offset", $"{sb.DataOffset} sectors"),
            ("Super Offset", $"{sb.SuperOffset} sectors"),
        };
        if ((sb.FeatureMap & MdSuperblock.FeatureRecoveryOffset) != 0) lines.Add(("Recovery Offset", $"{sb.RecoveryOffset} sectors"));
        // mdadm shows the journal through the journal device's role; PfnBlock's journal has its own superblock, so the member says it.
        if ((sb.FeatureMap & MdSuperblock.FeatureJournal) != 0) lines.Add(("Journal", "yes (MD_FEATURE_JOURNAL): assemble with journal=SPEC"));
        lines.Add(("State", sb.IsClean ? "clean" : "active"));
        lines.Add(("Device UUID", MdSuperblock.FormatUuid(sb.DeviceUuid)));
        if (sb.HasBitmap) lines.Add(("Internal Bitmap", $"{sb.BitmapOffset} sectors from superblock"));
        if (info.Bitmap is { } bm)
            lines.Add(("Bitmap", $"{bm.Bits} bits (chunks of {bm.ChunkBytes >> 10} KiB), {info.DirtyBits} dirty"));
        else if (info.BitmapError is { } e) lines.Add(("Bitmap", $"invalid: {e}"));
        lines.Add(("Update Time", MdSuperblock.DecodeTime(sb.UTime).ToString("u", System.Globalization.CultureInfo.InvariantCulture)));
        lines.Add(("Checksum", $"{sb.StoredChecksum:x8} - correct"));
        lines.Add(("Events", sb.Events.ToString(System.Globalization.CultureInfo.InvariantCulture)));
        if (sb.Level == 5)
        {
            lines.Add(("Layout", "left-symmetric"));
            lines.Add(("Chunk Size", $"{sb.ChunkSectors / 2}K"));
        }
        lines.Add(("Device Role", RoleName(sb.Role)));
        lines.Add(("Array State", ArrayState(sb)));
        var text = new System.Text.StringBuilder();
        text.AppendLine($"{member}:");
        foreach ((string k, string v) in lines) text.Append(k.PadLeft(16)).Append(" : ").AppendLine(v);
        return text.ToString();
    }

    /// <summary>mdadm's "Array State": one character per slot, 'A' active, '.' missing or failed.</summary>
    public static string ArrayState(MdSuperblock sb)
    {
        var slots = new char[sb.RaidDisks];
        Array.Fill(slots, '.');
        foreach (ushort r in sb.DevRoles)
            if (r < sb.RaidDisks) slots[r] = 'A';
        return new string(slots);
    }
}
