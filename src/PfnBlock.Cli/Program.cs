using System.CommandLine;
using PfnBlock.Cli.Commands;

namespace PfnBlock.Cli;

/// <summary>Entry point of the <c>pfnblock</c> command.</summary>
public static class Program
{
    /// <summary>Parses the command line and runs the chosen command.</summary>
    public static int Main(string[] args)
    {
        // Persistence tracing is fixed at start-up (so that it folds away elsewhere): on only for crashtest.
        if (args.Length > 0 && args[0] == CrashTestCommand.Name) AppContext.SetSwitch(Memory.PmemTrace.SwitchName, true);
        // SIGINT is stat's stop even if this process inherited it ignored; only possible before anything touches Console.
        if (args.Length > 0 && args[0] == StatCommand.Name) StatCommand.TakeInterrupts();
        // A Command named "pfnblock" rather than a RootCommand, whose name (and usage lines) would be the
        // assembly's, PfnBlock.Cli; help and version are added as RootCommand would.
        var root = new Command("pfnblock", "PfnBlock: a user-space storage stack for persistent memory whose block layer carries page frame numbers.")
        {
            new System.CommandLine.Help.HelpOption(),
            new VersionOption(),
            NamespaceCommands.Create(),
            BenchCommand.Create(),
            ServeCommand.Create(),
            CheckCommand.Create(),
            RaidCommands.Create(),
            DevicesCommand.Create(),
            StatCommand.Create(),
            CtlCommand.Create(),
            CrashTestCommand.Create(),
            CopyCommand.Create(),
            MemmapCommand.Create(),
        };
        // No response files: "@NAME" names a device (config devices, ctl's device labels), and
        // System.CommandLine would otherwise read it as a file of more arguments.
        ParseResult result = root.Parse(args, new ParserConfiguration { ResponseFileTokenReplacer = null });
        if (result.Errors.Count > 0)
        {
            // One clear line and a usage exit code, not a page of help. An unknown word explains the
            // errors it causes ("Required command was not provided", the words after it), so it alone
            // is shown; System.CommandLine's multi-line messages (lists of allowed values) are folded.
            System.CommandLine.Parsing.ParseError? unknown = result.Errors.FirstOrDefault(e => e.Message.StartsWith("Unrecognized", StringComparison.Ordinal));
            IEnumerable<string> messages = unknown is not null ? [unknown.Message] : result.Errors.Select(e => e.Message).Distinct();
            string line = string.Join(' ', messages.SelectMany(m => m.Split(['\r', '\n', '\t'], StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)));
            Console.Error.WriteLine($"pfnblock: error: {line.TrimEnd('.')} (see 'pfnblock --help')");
            return Commands.Cli.ExitUsage;
        }
        return result.Invoke();
    }
}
