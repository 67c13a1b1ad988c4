using System.CommandLine;
using PfnBlock.Devices;

namespace PfnBlock.Cli.Commands;

/// <summary><c>pfnblock devices</c>: the device kinds and table targets this build knows, from the registry.</summary>
internal static class DevicesCommand
{
    public static Command Create()
    {
        var cmd = new Command("devices", "List the device specs and table targets, with their arguments and options.");
        cmd.SetAction(_ => Cli.Run(() =>
        {
            Console.Write(DeviceTypes.HelpText());
            return 0;
        }));
        return cmd;
    }
}
