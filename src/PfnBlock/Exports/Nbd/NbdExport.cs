using PfnBlock.Block;
using PfnBlock.Common;

namespace PfnBlock.Exports.Nbd;

/// <summary>
/// A device offered under a name, with the transmission flags its real capabilities allow.
/// The export does not own the device.
/// </summary>
public sealed class NbdExport
{
    /// <summary>Creates an export of <paramref name="device"/> named <paramref name="name"/>.</summary>
    /// <exception cref="ArgumentException">The name is empty, too long, or the device is not byte-addressable in 512-byte units.</exception>
    public NbdExport(string name, IBlockDevice device, bool readOnly = false, string? description = null)
    {
        ArgumentNullException.ThrowIfNull(device);
        if (string.IsNullOrEmpty(name)) throw new ArgumentException("export name must not be empty", nameof(name));
        if (System.Text.Encoding.UTF8.GetByteCount(name) > NbdProtocol.MaxStringLength || name.Contains('\0'))
            throw new ArgumentException($"invalid export name '{name}'", nameof(name));
        Name = name;
        Device = device;
        ReadOnly = readOnly || (device.Features & DeviceFeatures.ReadOnly) != 0;
        Description = description ?? $"{device.Name} ({SizeParser.Format(device.CapacityBytes)})";
        Dax = (device.Features & DeviceFeatures.Dax) != 0 ? device as IDaxDevice : null;
        Synchronous = (device.Features & DeviceFeatures.Synchronous) != 0;
        Allocation = (device.Features & DeviceFeatures.AllocationMap) != 0 ? device as IAllocationMap : null;
        MinBlockSize = Math.Max(1, device.Limits.LogicalBlockSize);
    }

    /// <summary>The name clients ask for.</summary>
    public string Name { get; }
    /// <summary>A description for people (INFO_DESCRIPTION, LIST).</summary>
    public string Description { get; }
    /// <summary>The device behind the export; its features decide the transmission flags. Not owned: whoever created it disposes it.</summary>
    public IBlockDevice Device { get; }
    /// <summary>Writes are refused with EPERM.</summary>
    public bool ReadOnly { get; }
    /// <summary>Size in bytes.</summary>
    public long Size => Device.CapacityBytes;
    /// <summary>Smallest unit of offsets and lengths (the device's logical block size).</summary>
    public int MinBlockSize { get; }
    /// <summary>Direct access for zero-copy reads, or null.</summary>
    internal IDaxDevice? Dax { get; }
    /// <summary>The device's allocation map (holes and zeros for block status and direct reads), or null: then everything is data.</summary>
    internal IAllocationMap? Allocation { get; }
    /// <summary>The device completes bios before Submit returns, so bio memory can be reused at once.</summary>
    internal bool Synchronous { get; }
    /// <summary>Counters of this export.</summary>
    public NbdExportStats Stats { get; } = new();
    /// <summary>Serialises read-modify-write against every other write to the export, on all its connections.</summary>
    internal NbdWriteGate WriteGate { get; } = new();

    /// <summary>Test hook: runs in every read-modify-write between reading the old blocks and writing them back.</summary>
    internal Action? ReadModifyWriteHook { get; set; }

    /// <summary>True when offset and length are multiples of <see cref="MinBlockSize"/>.</summary>
    public bool IsAligned(ulong offset, uint length) => ((offset | length) & (ulong)(MinBlockSize - 1)) == 0;

    /// <summary>
    /// The transmission flags: flush and FUA only with a volatile cache, trim and zeroing only when
    /// the device has them and the export is writable. Multi-connection is safe because a flush
    /// covers the whole device, whichever connection sent it.
    /// </summary>
    public NbdTransmissionFlags TransmissionFlags(bool structuredReplies)
    {
        DeviceFeatures f = Device.Features;
        var flags = NbdTransmissionFlags.HasFlags | NbdTransmissionFlags.CanMultiConn | NbdTransmissionFlags.SendCache;
        if (structuredReplies) flags |= NbdTransmissionFlags.SendDf;
        if (ReadOnly) return flags | NbdTransmissionFlags.ReadOnly;
        if ((f & DeviceFeatures.WriteCache) != 0) flags |= NbdTransmissionFlags.SendFlush | NbdTransmissionFlags.SendFua;
        if ((f & DeviceFeatures.Discard) != 0) flags |= NbdTransmissionFlags.SendTrim;
        if ((f & DeviceFeatures.WriteZeroes) != 0) flags |= NbdTransmissionFlags.SendWriteZeroes | NbdTransmissionFlags.SendFastZero;
        return flags;
    }
}

/// <summary>The exports a server offers, by name; the first one is the default (empty name).</summary>
public sealed class NbdExportRegistry
{
    private readonly List<NbdExport> _exports = [];

    /// <summary>Adds an export.</summary>
    /// <exception cref="ArgumentException">The name is taken.</exception>
    public void Add(NbdExport export)
    {
        ArgumentNullException.ThrowIfNull(export);
        if (Find(export.Name) is not null) throw new ArgumentException($"export '{export.Name}' is defined twice");
        _exports.Add(export);
    }

    /// <summary>All exports in the order added.</summary>
    public IReadOnlyList<NbdExport> All => _exports;

    /// <summary>The export called <paramref name="name"/>; the empty name means the first export.</summary>
    public NbdExport? Find(string name)
    {
        if (name.Length == 0) return _exports.Count > 0 ? _exports[0] : null;
        foreach (NbdExport e in _exports)
            if (e.Name == name) return e;
        return null;
    }
}
