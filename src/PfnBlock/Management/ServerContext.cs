using System.Diagnostics;
using PfnBlock.Devices;
using PfnBlock.Exports.Nbd;

namespace PfnBlock.Management;

/// <summary>
/// What a running server shows its operators: the devices it has open, the exports it serves and
/// the NBD server that serves them. The metrics endpoint and the control socket's commands read
/// it (and commands that change the server, such as adding a RAID member, act on it); it owns
/// nothing.
/// </summary>
public sealed class ServerContext
{
    private readonly long _startedTicks = Stopwatch.GetTimestamp();

    /// <summary>Describes a server.</summary>
    /// <param name="devices">The devices the server opened (its exports' stacks and whatever they stack on).</param>
    /// <param name="exports">The exports served.</param>
    /// <param name="server">The NBD server, for its connection counters; null when there is none yet.</param>
    public ServerContext(DeviceSet devices, NbdExportRegistry exports, NbdServer? server = null)
    {
        ArgumentNullException.ThrowIfNull(devices);
        ArgumentNullException.ThrowIfNull(exports);
        Devices = devices;
        Exports = exports;
        Server = server;
    }

    /// <summary>The devices the server opened, by spec.</summary>
    public DeviceSet Devices { get; }
    /// <summary>The exports served.</summary>
    public NbdExportRegistry Exports { get; }
    /// <summary>The NBD server, or null.</summary>
    public NbdServer? Server { get; }
    /// <summary>Where the NBD server listens, as addresses are written (<c>tcp:127.0.0.1:10809</c>, <c>unix:/run/nbd.sock</c>).</summary>
    public IReadOnlyList<string> Listening { get; init; } = [];
    /// <summary>Time since this context was made (the server's start), from the monotonic clock.</summary>
    public TimeSpan Uptime => Stopwatch.GetElapsedTime(_startedTicks);

    /// <summary>Every device of every exported stack, lower devices too, each once (see <see cref="ServedDevices"/>).</summary>
    public IReadOnlyList<ServedDevice> ServedDevices() => Management.ServedDevices.Walk(this);
}
