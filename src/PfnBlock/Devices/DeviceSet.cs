using PfnBlock.Block;
using PfnBlock.Memory;

namespace PfnBlock.Devices;

/// <summary>
/// The devices one process (a server, a benchmark, a test) has open, by spec: opening a spec
/// equal to one already open hands out the same device again (<c>dm_get_device</c>), so two
/// lines of a table may name one namespace without tripping its exclusive claim. Devices may be
/// defined under names and referred to as <c>@NAME</c>. A device is disposed when its last handle
/// is released; disposing the set releases what is left, newest first (stacks before the devices
/// under them).
/// </summary>
public sealed class DeviceSet : IDisposable
{
    private readonly Lock _lock = new();
    private readonly Dictionary<string, Entry> _open = new(StringComparer.Ordinal);
    private readonly Dictionary<string, string> _names = new(StringComparer.Ordinal);
    private readonly Dictionary<string, Func<DeviceOpenContext, IBlockDevice>> _openers = new(StringComparer.Ordinal);
    private readonly List<DeviceHandle> _handles = [];
    private bool _disposed;

    /// <summary>Creates an empty set.</summary>
    /// <param name="addressSpace">The address space devices number their frames in (default: the shared one).</param>
    /// <param name="readOnly">Open every device read-only.</param>
    public DeviceSet(PhysicalAddressSpace? addressSpace = null, bool readOnly = false)
    {
        AddressSpace = addressSpace;
        ReadOnly = readOnly;
    }

    /// <summary>The address space devices of this set number their frames in (null: the shared one).</summary>
    public PhysicalAddressSpace? AddressSpace { get; }
    /// <summary>Every device is opened read-only.</summary>
    public bool ReadOnly { get; }

    /// <summary>True for a name <c>@NAME</c> may refer to: letters, digits, '-', '_' and '.', not empty.</summary>
    public static bool IsValidName(string name) =>
        name.Length > 0 && name.All(c => char.IsAsciiLetterOrDigit(c) || c is '-' or '_' or '.');

    /// <summary>Defines <paramref name="name"/> as <paramref name="spec"/>, for later <c>@NAME</c> references.</summary>
    /// <exception cref="ArgumentException">The name is invalid or defined already.</exception>
    /// <exception cref="FormatException">The spec does not parse.</exception>
    public void Define(string name, string spec)
    {
        if (!IsValidName(name)) throw new ArgumentException($"invalid device name '{name}': use letters, digits, '-', '_' and '.'");
        _ = DeviceSpec.Parse(spec);
        lock (_lock)
        {
            if (_openers.ContainsKey(name) || !_names.TryAdd(name, spec)) throw new ArgumentException($"device '{name}' is defined twice");
        }
    }

    /// <summary>
    /// Defines <paramref name="name"/> as a device that <paramref name="open"/> builds (an inline
    /// table of a stack configuration): opened on first use of <c>@NAME</c>, shared afterwards, its
    /// lower devices acquired through the context it is given.
    /// </summary>
    /// <exception cref="ArgumentException">The name is invalid or defined already.</exception>
    public void Define(string name, Func<DeviceOpenContext, IBlockDevice> open)
    {
        ArgumentNullException.ThrowIfNull(open);
        if (!IsValidName(name)) throw new ArgumentException($"invalid device name '{name}': use letters, digits, '-', '_' and '.'");
        lock (_lock)
        {
            if (_names.ContainsKey(name) || !_openers.TryAdd(name, open)) throw new ArgumentException($"device '{name}' is defined twice");
        }
    }

    /// <summary>Opens (or shares) the device <paramref name="spec"/> names; dispose the handle to release it.</summary>
    /// <exception cref="FormatException">The spec does not parse.</exception>
    /// <exception cref="ArgumentException">An unknown name, or a device stacked on itself.</exception>
    /// <exception cref="IOException">The device cannot be opened (the message says why).</exception>
    public DeviceHandle Acquire(string spec) => Acquire(DeviceSpec.Parse(spec));

    /// <summary>Opens (or shares) the device a parsed spec names.</summary>
    public DeviceHandle Acquire(DeviceSpec spec) => Acquire(spec, []);

    /// <summary>Opens a device on behalf of the devices being opened above it (<paramref name="opening"/>, outermost first), to detect cycles.</summary>
    internal DeviceHandle Acquire(DeviceSpec spec, IReadOnlyList<string> opening)
    {
        List<string> chain = [];
        Func<DeviceOpenContext, IBlockDevice>? opener = null;
        while (spec.Reference is string name)
        {
            string? text;
            lock (_lock)
            {
                text = _names.GetValueOrDefault(name);
                opener = text is null ? _openers.GetValueOrDefault(name) : null;
            }
            if (opener is not null) break;
            if (text is null) throw new ArgumentException($"unknown device '@{name}' (define it first)");
            if (chain.Contains(name)) throw new ArgumentException($"device names refer to each other in a circle: @{string.Join(" → @", chain)} → @{name}");
            chain.Add(name);
            spec = DeviceSpec.Parse(text);
        }
        string key = spec.Key;
        lock (_lock)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            if (opening.Contains(key))
                throw new ArgumentException($"device stacked on itself: {string.Join(" → ", opening.SkipWhile(k => k != key))} → {key}");
            if (_open.TryGetValue(key, out Entry? shared))
            {
                shared.References++;
                return Track(new DeviceHandle(this, shared));
            }
        }
        var context = new DeviceOpenContext(this, key, [.. opening, key]);
        try
        {
            IBlockDevice device = opener is not null ? opener(context) : spec.Type!.Open(spec, context);
            var entry = new Entry(key, device);
            lock (_lock) _open.Add(key, entry);
            return Track(new DeviceHandle(this, entry));
        }
        catch
        {
            context.ReleaseAcquired();
            throw;
        }
    }

    /// <summary>Opens a device for the caller alone to use, kept until the set is disposed (a convenience for commands that open one device).</summary>
    public IBlockDevice Open(string spec) => Acquire(spec).Device;

    /// <summary>The devices open now, with the spec that opened each.</summary>
    public IReadOnlyList<(string Spec, IBlockDevice Device)> OpenDevices
    {
        get { lock (_lock) return [.. _open.Values.Select(e => (e.Key, e.Device))]; }
    }

    private DeviceHandle Track(DeviceHandle h)
    {
        lock (_lock) _handles.Add(h);
        return h;
    }

    internal void Release(DeviceHandle handle, Entry entry)
    {
        bool last;
        lock (_lock)
        {
            _handles.Remove(handle);
            last = --entry.References == 0;
            if (last) _open.Remove(entry.Key);
        }
        if (last) entry.Device.Dispose();
    }

    /// <summary>Releases every handle still held, newest first (handles a device owns with that device); the devices go with their last handle.</summary>
    public void Dispose()
    {
        List<DeviceHandle> handles;
        lock (_lock)
        {
            if (_disposed) return;
            _disposed = true;
            handles = [.. _handles];
        }
        // Handles a device owns go with that device, after it (a lower device acquired later than its
        // upper one, say an array's replacement member, must still outlive the array); then any left.
        for (int i = handles.Count - 1; i >= 0; i--)
            if (!handles[i].OwnedByDevice) handles[i].Dispose();
        for (int i = handles.Count - 1; i >= 0; i--) handles[i].Dispose();
    }

    internal sealed class Entry(string key, IBlockDevice device)
    {
        public readonly string Key = key;
        public readonly IBlockDevice Device = device;
        public int References = 1;
    }
}

/// <summary>One user's hold on a device of a <see cref="DeviceSet"/>; disposing it releases the hold (idempotent).</summary>
public sealed class DeviceHandle : IDisposable
{
    private readonly DeviceSet _set;
    private readonly DeviceSet.Entry _entry;
    private int _released;

    internal DeviceHandle(DeviceSet set, DeviceSet.Entry entry)
    {
        _set = set;
        _entry = entry;
    }

    /// <summary>The device (shared with every other holder of the same spec).</summary>
    public IBlockDevice Device => _entry.Device;
    /// <summary>The canonical spec the device was opened by.</summary>
    public string Spec => _entry.Key;

    /// <summary>True once a device took this handle (<see cref="DeviceOpenContext.TakeAcquired"/>): that device releases it, not the set.</summary>
    internal bool OwnedByDevice { get; set; }

    /// <summary>Releases this hold; the device is disposed with its last one.</summary>
    public void Dispose()
    {
        if (Interlocked.Exchange(ref _released, 1) == 0) _set.Release(this, _entry);
    }
}
