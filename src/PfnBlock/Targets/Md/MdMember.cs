using PfnBlock.Block;

namespace PfnBlock.Targets.Md;

/// <summary>The state of an array slot's member.</summary>
public enum MdMemberState
{
    /// <summary>In the array and in sync: read and written.</summary>
    InSync,
    /// <summary>Being rebuilt: written everywhere, read only below its recovery offset.</summary>
    Recovering,
    /// <summary>Failed: neither read nor written (md's Faulty).</summary>
    Faulty,
    /// <summary>No device in the slot (absent at assembly, or stale).</summary>
    Missing,
}

/// <summary>One slot of an array and the device in it (md's <c>md_rdev</c>).</summary>
internal sealed class MdMember
{
    private int _state;
    private long _recoveryOffset;
    private long _ioErrors;
    private long _readErrors;

    public MdMember(int slot, string spec, IBlockDevice? device, IDisposable? handle, MdSuperblock? superblock, MdMemberState state)
    {
        Slot = slot;
        Spec = spec;
        Device = device;
        Handle = handle;
        _state = (int)state;
        if (superblock is not null)
        {
            DevNumber = superblock.DevNumber;
            DeviceUuid = superblock.DeviceUuid;
            DataOffset = (long)superblock.DataOffset;
            DataSize = (long)superblock.DataSize;
            Events = superblock.Events;
        }
    }

    /// <summary>The slot (md's role) this member fills.</summary>
    public int Slot { get; }
    /// <summary>The spec it was opened by ("missing" when absent).</summary>
    public string Spec { get; }
    /// <summary>The device, or null when the slot is missing.</summary>
    public IBlockDevice? Device { get; }
    /// <summary>The device-set handle (released with the array, or when the member is replaced).</summary>
    public IDisposable? Handle { get; }
    /// <summary>Its index in dev_roles.</summary>
    public uint DevNumber { get; set; }
    /// <summary>Its own uuid.</summary>
    public byte[] DeviceUuid { get; set; } = new byte[16];
    /// <summary>Where the array's data starts on it, in sectors.</summary>
    public long DataOffset { get; set; }
    /// <summary>Sectors from the data offset to its end.</summary>
    public long DataSize { get; set; }
    /// <summary>The events of its superblock when assembled.</summary>
    public ulong Events { get; set; }
    /// <summary>The personality's end_io hook for reads of this member (made on first use).</summary>
    public IBioEndIo? ReadHook { get; set; }

    /// <summary>The member's state (changed by the array under its lock; read lock-free on the I/O path).</summary>
    public MdMemberState State
    {
        get => (MdMemberState)Volatile.Read(ref _state);
        set => Volatile.Write(ref _state, (int)value);
    }

    /// <summary>For a recovering member: member sectors (from the data offset) already rebuilt.</summary>
    public long RecoveryOffset
    {
        get => Volatile.Read(ref _recoveryOffset);
        set => Volatile.Write(ref _recoveryOffset, value);
    }

    /// <summary>Failed bios seen from the member.</summary>
    public long IoErrors => Interlocked.Read(ref _ioErrors);

    /// <summary>Counts a failed bio.</summary>
    public void CountError() => Interlocked.Increment(ref _ioErrors);

    /// <summary>Read errors seen from the member (each one rewritten from the redundancy, or the member failed).</summary>
    public long ReadErrors => Interlocked.Read(ref _readErrors);

    /// <summary>Counts a read error and returns the count so far.</summary>
    public long CountReadError() => Interlocked.Increment(ref _readErrors);

    /// <summary>True when writes go to the member (in sync or recovering).</summary>
    public bool Writable => Device is not null && State is MdMemberState.InSync or MdMemberState.Recovering;

    /// <summary>True when member sectors [<paramref name="sector"/>, +<paramref name="sectors"/>) can be read from it.</summary>
    public bool Readable(long sector, long sectors)
    {
        MdMemberState s = State;
        return Device is not null && (s == MdMemberState.InSync || (s == MdMemberState.Recovering && sector + sectors <= RecoveryOffset));
    }
}

/// <summary>A member as status reports show it.</summary>
/// <param name="Slot">The slot it fills.</param>
/// <param name="Spec">Its spec ("missing" for an empty slot).</param>
/// <param name="State">Its state.</param>
/// <param name="RecoveryOffset">For a recovering member, sectors rebuilt so far.</param>
/// <param name="IoErrors">Failed bios seen from it.</param>
public sealed record MdMemberStatus(int Slot, string Spec, MdMemberState State, long RecoveryOffset, long IoErrors);
