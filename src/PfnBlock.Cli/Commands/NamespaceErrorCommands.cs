using System.CommandLine;
using PfnBlock.Namespaces;

namespace PfnBlock.Cli.Commands;

/// <summary><c>pfnblock namespace inject-error|clear-errors</c>: media errors, as ndctl injects and clears them.</summary>
internal static class NamespaceErrorCommands
{
    private const string BlockHelp = "a 512-byte block of the namespace's data area, as ndctl counts badblocks (of a sector namespace: of its sectors, so a multiple of the sector size in blocks)";

    public static Command InjectCommand()
    {
        var path = new Option<string>("--path") { Description = "The namespace (not in use by another process).", Required = true };
        var block = new Option<long>("--block") { Description = $"First bad block: {BlockHelp}.", Required = true };
        var count = new Option<long>("--count") { Description = "Blocks from there (default 1).", DefaultValueFactory = _ => 1 };
        var cmd = new Command("inject-error", "Mark blocks bad (a media error): reads touching them fail with EIO until they are written whole or cleared.") { path, block, count };
        cmd.SetAction(r => Cli.Run(() =>
        {
            string p = r.GetValue(path)!;
            long b = r.GetValue(block), n = r.GetValue(count);
            BadBlockList list = MediaErrors.Inject(p, b, n);
            Console.WriteLine($"{p}: blocks {b}+{n} marked bad; bad blocks now: {Describe(list)}");
            return 0;
        }));
        return cmd;
    }

    public static Command ClearCommand()
    {
        var path = new Option<string>("--path") { Description = "The namespace (not in use by another process).", Required = true };
        var block = new Option<long?>("--block") { Description = $"First block to clear: {BlockHelp}. Default: every bad block." };
        var count = new Option<long?>("--count") { Description = "Blocks from --block (default 1)." };
        var cmd = new Command("clear-errors", "Clear bad blocks: they read as zeros afterwards (their data was lost with the error).") { path, block, count };
        cmd.SetAction(r => Cli.Run(() =>
        {
            string p = r.GetValue(path)!;
            long? b = r.GetValue(block);
            long? n = r.GetValue(count);
            if (b is null && n is not null) throw new ArgumentException("--count needs --block (without both, every bad block is cleared)");
            BadBlockList before = MediaErrors.List(p);
            BadBlockList after = MediaErrors.Clear(p, b, n ?? 1);
            long cleared = before.TotalBlocks - after.TotalBlocks;
            Console.WriteLine($"{p}: {cleared} bad block(s) cleared{(b is long s ? $" in {s}+{n ?? 1}" : "")}; bad blocks now: {Describe(after)}");
            return 0;
        }));
        return cmd;
    }

    /// <summary>"none", or the total and the runs (START+COUNT).</summary>
    public static string Describe(BadBlockList list) =>
        list.IsEmpty ? "none" : $"{list.TotalBlocks} in {list.Ranges.Count} run(s): {list}";
}
