using System.Runtime.CompilerServices;

namespace PfnBlock.Namespaces.Btt;

/// <summary>
/// The run-time state of one arena (kernel <c>struct arena_info</c>, PMDK <c>struct arena</c>):
/// pointers to its on-media parts, the lanes' free blocks rebuilt from the flog, the map locks and
/// the read tracking table.
/// </summary>
/// <remarks>
/// On media, relative to the arena: info (4 KiB) | data blocks | map | flog | backup info (4 KiB).
/// </remarks>
internal sealed unsafe class Arena
{
    public Arena(BttMedia media, int index, long offset, long externalStart, BttInfoBlock info, int lanes)
    {
        Index = index;
        Offset = offset;
        ExternalStart = externalStart;
        Info = info;
        byte* b = media.Address + offset;
        Data = b + info.DataOff;
        Map = (uint*)(b + info.MapOff);
        Flog = b + info.FlogOff;
        Free = new LaneFreeState[info.Nfree];
        MapLocks = new Lock[info.Nfree];
        for (int i = 0; i < MapLocks.Length; i++) MapLocks[i] = new Lock();
        Rtt = new ReadTrackingTable(lanes);
        ReadOnly = info.HasErrorFlag;
    }

    public int Index { get; }
    /// <summary>Offset of the arena within the media.</summary>
    public long Offset { get; }
    /// <summary>First external LBA served by this arena.</summary>
    public long ExternalStart { get; }
    public BttInfoBlock Info { get; }
    public byte* Data { get; }
    public uint* Map { get; }
    public byte* Flog { get; }
    public LaneFreeState[] Free { get; }
    public Lock[] MapLocks { get; }
    public ReadTrackingTable Rtt { get; }
    /// <summary>The info block's error flag is set: writes are refused (as both drivers do).</summary>
    public bool ReadOnly { get; }

    public uint ExternalNlba => Info.ExternalNlba;
    public uint InternalNlba => Info.InternalNlba;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public byte* Block(uint block) => Data + (long)block * Info.InternalLbaSize;

    /// <summary>The lock guarding a map entry's cache line (premap * 4 / 64, modulo nfree).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public Lock MapLock(uint premap) => MapLocks[(premap >> 4) % (uint)MapLocks.Length];

    /// <summary>Address of flog slot <paramref name="slot"/> (0 or 1) of <paramref name="lane"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public ulong* FlogSlot(int lane, int slot) => (ulong*)(Flog + lane * BttInfoBlock.FlogGroupSize + slot * FlogEntry.Size);

    public FlogEntry ReadFlog(int lane, int slot)
    {
        uint* p = (uint*)FlogSlot(lane, slot);
        return new FlogEntry(p[0], p[1], p[2], p[3]);
    }
}
