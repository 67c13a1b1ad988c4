using System.Diagnostics;
using System.Text.RegularExpressions;
using PfnBlock.Namespaces;
using PfnBlock.Tests.Nbd;

namespace PfnBlock.Tests.Cli;

/// <summary>The README, --help and the program agree (issue 14, finding 8).</summary>
public sealed partial class HelpAndReadmeTests : IDisposable
{
    private readonly Scratch _scratch = new();
    public void Dispose() => _scratch.Dispose();

    private static (int Exit, string Out, string Err) Cli(params string[] args) => ChildProcess.Run(ChildProcess.CliDll, args);

    /// <summary>The checkout's root (where PfnBlock.slnx is), found upwards from the test binaries.</summary>
    private static string RepoRoot
    {
        get
        {
            for (DirectoryInfo? d = new(AppContext.BaseDirectory); d is not null; d = d.Parent)
                if (File.Exists(Path.Combine(d.FullName, "PfnBlock.slnx"))) return d.FullName;
            throw new InvalidOperationException($"no PfnBlock.slnx above {AppContext.BaseDirectory}");
        }
    }

    public static TheoryData<string> Commands => ["namespace create", "namespace info", "namespace destroy", "namespace inject-error", "namespace clear-errors", "bench", "serve", "check", "stat", "copy", "memmap", "raid create", "raid examine", "raid assemble", "ctl"];

    [Theory]
    [MemberData(nameof(Commands))]
    public void HelpNamesPfnblockAndTheReadmeDocumentsEveryOption(string command)
    {
        string[] words = command.Split(' ');
        (int exit, string help, string err) = Cli([.. words, "--help"]);
        Assert.True(exit == 0, err);
        // Arguments, if any, come between the command and its options ("pfnblock raid create <MEMBER>... [options]").
        Assert.Matches($@"(?m)^  pfnblock {Regex.Escape(command)}( \S+)* \[options\]$", help);
        Assert.DoesNotContain("PfnBlock.Cli", help);
        string readme = File.ReadAllText(Path.Combine(RepoRoot, "README.md"));
        // An option line lists its name and aliases ("--jobs, --numjobs"); the README must use one of them.
        string[][] options = [.. OptionNames().Matches(help)
            .Select(m => m.Groups[1].Value.Split(", ").Where(n => n.StartsWith("--", StringComparison.Ordinal)).ToArray())
            .Where(names => names.Length > 0 && names[0] is not ("--help" or "--version"))];
        Assert.NotEmpty(options);
        string[] missing = [.. options.Where(names => !names.Any(n => readme.Contains(n, StringComparison.Ordinal))).Select(names => names[0])];
        Assert.True(missing.Length == 0, $"README.md does not mention {string.Join(", ", missing)} of '{command}'");
    }

    [Fact]
    public void TheReadmeShowsSectorModeAndCheck()
    {
        string readme = File.ReadAllText(Path.Combine(RepoRoot, "README.md"));
        Assert.Contains("--mode sector", readme);
        Assert.Contains("pfnblock check --path", readme);
    }

    [Fact]
    public void CreateSaysHowMuchOfTheNamespaceIsData()
    {
        string path = _scratch.NewPath();
        (int exit, string stdout, string stderr) = Cli("namespace", "create", "--path", path, "--size", "4M");
        Assert.True(exit == 0, stderr);
        NamespaceInfoBlock info = PmemNamespace.ReadInfo(path, out _);
        Assert.Contains($"raw namespace, 4M: {info.DataSize} bytes of data (4k before it for the info block and alignment, 4k after it for the backup info block)", stdout);
        (_, stdout, _) = Cli("namespace", "info", "--path", path);
        Assert.Contains($"{info.DataSize} bytes of data", stdout);
    }

    [Fact]
    public void CheckOnARawNamespaceSaysThereIsNoBttAndChecksItsInfoBlocks()
    {
        string path = _scratch.NewNamespace(4 << 20);
        (int exit, string stdout, string stderr) = Cli("check", "--path", path);
        Assert.True(exit == 0, stderr);
        Assert.Contains("raw namespace: no BTT to check; checked its info blocks only", stdout);
        Assert.Contains("namespace info blocks valid (primary and backup)", stdout);
        Assert.Contains("result: consistent (info blocks)", stdout);
        Assert.DoesNotContain("arena", stdout);

        using (var f = new FileStream(path, FileMode.Open, FileAccess.Write)) { f.Position = f.Length - 4096 + 300; f.WriteByte(0x77); }
        (exit, stdout, _) = Cli("check", "--path", path);
        Assert.Equal(1, exit);
        Assert.Contains("backup namespace info block is invalid", stdout);
        (exit, stdout, _) = Cli("check", "--path", path, "--repair");
        Assert.Equal(0, exit);
        Assert.Contains("repaired: backup namespace info block restored from the primary", stdout);
        Assert.Equal(0, Cli("check", "--path", path).Exit);
    }

    [Fact]
    public void TheLauncherSaysWhenItBuilds()
    {
        // The real script, in a copy of the checkout's shape with a stand-in dotnet that "publishes" in no time.
        string root = Directory.CreateTempSubdirectory("pfnblock-launcher-").FullName;
        try
        {
            File.Copy(Path.Combine(RepoRoot, "pfnblock"), Path.Combine(root, "pfnblock"));
            Directory.CreateDirectory(Path.Combine(root, "src", "PfnBlock.Cli"));
            File.WriteAllText(Path.Combine(root, "src", "PfnBlock.Cli", "Program.cs"), "// source");
            string fakeBin = Directory.CreateDirectory(Path.Combine(root, "fake-bin")).FullName;
            File.WriteAllText(Path.Combine(fakeBin, "dotnet"),
                "#!/bin/sh\n# dotnet publish SRC -c Release -o OUT ...\nmkdir -p \"$6\" && printf '#!/bin/sh\\necho ran \"$@\"\\n' > \"$6/PfnBlock.Cli\" && chmod +x \"$6/PfnBlock.Cli\"\n");
            Tool.Run("chmod", "+x", Path.Combine(root, "pfnblock"), Path.Combine(fakeBin, "dotnet"));

            (int exit, string stdout, string stderr) = Launch(root, fakeBin, "x");
            Assert.Equal(0, exit);
            Assert.Equal("ran x", stdout.Trim());
            Assert.Equal("building pfnblock (first use)…", stderr.Trim());

            (_, stdout, stderr) = Launch(root, fakeBin, "y");
            Assert.Equal("ran y", stdout.Trim());
            Assert.Equal("", stderr);

            File.SetLastWriteTimeUtc(Path.Combine(root, "src", "PfnBlock.Cli", "Program.cs"), DateTime.UtcNow.AddMinutes(1));
            (_, _, stderr) = Launch(root, fakeBin, "z");
            Assert.Equal("rebuilding pfnblock (sources changed)…", stderr.Trim());
        }
        finally { Directory.Delete(root, recursive: true); }
    }

    private static (int, string, string) Launch(string root, string fakeBin, string arg)
    {
        var psi = new ProcessStartInfo(Path.Combine(root, "pfnblock")) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        psi.ArgumentList.Add(arg);
        psi.Environment["PATH"] = fakeBin + ":" + Environment.GetEnvironmentVariable("PATH");
        using Process p = Process.Start(psi)!;
        string stdout = p.StandardOutput.ReadToEnd(), stderr = p.StandardError.ReadToEnd();
        Assert.True(p.WaitForExit(30_000));
        return (p.ExitCode, stdout, stderr);
    }

    [GeneratedRegex(@"^  (-[^ ,]+(?:, -[^ ,]+)*)", RegexOptions.Multiline)]
    private static partial Regex OptionNames();
}
