using PfnBlock.Devices;
using PfnBlock.Exports.Nbd;
using PfnBlock.Management;

namespace PfnBlock.Tests.Management;

/// <summary>
/// An in-process server for the operators' tools: a <see cref="DeviceSet"/> with a two-line
/// dm-linear table over two RAM disks (export <c>stack</c>) and a plain RAM disk (export
/// <c>plain</c>), an NBD server on a Unix socket in a private directory, and the
/// <see cref="ServerContext"/> over them. Everything is undone on dispose.
/// </summary>
internal sealed class ManagedTestServer : IDisposable
{
    public const string TableLine0 = "ram:16M,name=ma", TableLine1 = "ram:16M,name=mb", Plain = "ram:8M,name=mp";

    public ManagedTestServer()
    {
        Directory = System.IO.Directory.CreateTempSubdirectory("pfnblock-mgmt-").FullName;
        TablePath = Path.Combine(Directory, "stack.table");
        File.WriteAllText(TablePath, $"0 32768 linear {TableLine0} 0\n32768 32768 linear {TableLine1} 0\n");
        Devices = new DeviceSet();
        Registry = new NbdExportRegistry();
        Registry.Add(new NbdExport("stack", Devices.Open("table:" + TablePath)));
        Registry.Add(new NbdExport("plain", Devices.Open(Plain)));
        SocketPath = Path.Combine(Directory, "nbd.sock");
        Server = new NbdServer(Registry);
        Server.Start([NbdListenAddress.Parse("unix:" + SocketPath)]);
        Context = new ServerContext(Devices, Registry, Server) { Listening = ["unix:" + SocketPath] };
    }

    public string Directory { get; }
    public string TablePath { get; }
    public string SocketPath { get; }
    public DeviceSet Devices { get; }
    public NbdExportRegistry Registry { get; }
    public NbdServer Server { get; }
    public ServerContext Context { get; }

    /// <summary>The label (canonical spec) of the table device.</summary>
    public string TableLabel => "table:" + TablePath;

    public string Uri(string export) => $"nbd+unix:///{export}?socket={SocketPath}";

    public void Dispose()
    {
        Server.Dispose();
        Devices.Dispose();
        System.IO.Directory.Delete(Directory, recursive: true);
    }
}
