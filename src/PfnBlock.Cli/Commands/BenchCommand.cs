using System.CommandLine;

namespace PfnBlock.Cli.Commands;

/// <summary><c>pfnblock bench</c>: placeholder until the runner lands.</summary>
internal static class BenchCommand
{
    public static Command Create()
    {
        var cmd = new Command("bench", "Run a fio-like benchmark on a device.");
        cmd.SetAction(_ => 0);
        return cmd;
    }
}
