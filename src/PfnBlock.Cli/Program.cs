using System.CommandLine;
using PfnBlock.Cli.Commands;

namespace PfnBlock.Cli;

/// <summary>Entry point of the <c>pfnblock</c> command.</summary>
public static class Program
{
    /// <summary>Parses the command line and runs the chosen command.</summary>
    public static int Main(string[] args)
    {
        var root = new RootCommand("PfnBlock: a user-space storage stack for persistent memory whose block layer carries page frame numbers.")
        {
            NamespaceCommands.Create(),
            BenchCommand.Create(),
            CheckCommand.Create(),
        };
        ParseResult result = root.Parse(args);
        if (result.Errors.Count > 0)
        {
            // One clear line per problem and a usage exit code, not a page of help.
            foreach (System.CommandLine.Parsing.ParseError error in result.Errors)
                Console.Error.WriteLine($"pfnblock: error: {error.Message}");
            Console.Error.WriteLine("Run 'pfnblock --help' (or the command with --help) for usage.");
            return Commands.Cli.ExitUsage;
        }
        return result.Invoke();
    }
}
