using System.Diagnostics;

namespace PfnBlock.Tests.Support;

/// <summary>
/// Runs the programs built next to the test assembly (the pfnblock CLI, the crash child) as
/// separate processes through the same dotnet host that runs the tests.
/// </summary>
public static class ChildProcess
{
    /// <summary>The pfnblock CLI, copied next to the tests by the project reference.</summary>
    public static string CliDll => Locate("PfnBlock.Cli.dll");
    /// <summary>The crash/claim helper program.</summary>
    public static string CrashChildDll => Locate("PfnBlock.CrashChild.dll");

    private static string Locate(string file)
    {
        string path = Path.Combine(AppContext.BaseDirectory, file);
        if (!File.Exists(path)) throw new FileNotFoundException($"{file} is not next to the test assembly ({AppContext.BaseDirectory}); build the solution", path);
        return path;
    }

    /// <summary>The dotnet host running the tests (to run the built DLLs with).</summary>
    public static string DotnetHost
    {
        get
        {
            string? self = Environment.ProcessPath;
            if (self is not null && Path.GetFileNameWithoutExtension(self) == "dotnet") return self;
            return Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") is { Length: > 0 } host ? host : "dotnet";
        }
    }

    /// <summary>Starts <paramref name="dll"/> with redirected stdin, stdout and stderr.</summary>
    public static Process Start(string dll, params string[] args) => Start(dll, args, null);

    /// <summary>Starts <paramref name="dll"/> with redirected stdin, stdout and stderr and <paramref name="environment"/> added to the environment.</summary>
    public static Process Start(string dll, string[] args, IReadOnlyDictionary<string, string>? environment)
    {
        var psi = new ProcessStartInfo(DotnetHost)
        {
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        psi.ArgumentList.Add(dll);
        foreach (string a in args) psi.ArgumentList.Add(a);
        psi.Environment["DOTNET_CLI_TELEMETRY_OPTOUT"] = "1";
        psi.Environment["DOTNET_NOLOGO"] = "1";
        foreach ((string name, string value) in environment ?? new Dictionary<string, string>()) psi.Environment[name] = value;
        return Process.Start(psi) ?? throw new InvalidOperationException($"could not start {dll}");
    }

    /// <summary>Runs <paramref name="dll"/> to completion (killing it after <paramref name="timeoutSeconds"/>).</summary>
    public static (int Exit, string Out, string Err) Run(string dll, string[] args, int timeoutSeconds = 60, IReadOnlyDictionary<string, string>? environment = null)
    {
        using Process p = Start(dll, args, environment);
        p.StandardInput.Close();
        Task<string> stdout = p.StandardOutput.ReadToEndAsync();
        Task<string> stderr = p.StandardError.ReadToEndAsync();
        if (!p.WaitForExit(timeoutSeconds * 1000))
        {
            p.Kill(entireProcessTree: true);
            throw new TimeoutException($"{Path.GetFileName(dll)} {string.Join(' ', args)} did not finish in {timeoutSeconds} s");
        }
        p.WaitForExit();
        return (p.ExitCode, stdout.Result, stderr.Result);
    }

    /// <summary>
    /// Starts <paramref name="dll"/>, waits for its first line of output, lets it run
    /// <paramref name="runMs"/> more, SIGKILLs it and returns every line it printed (the first
    /// included). Its output is read on a thread of its own, not the thread pool: other tests may
    /// keep every pool thread blocked for seconds, and the lines must be read while it runs.
    /// </summary>
    public static List<string> RunUntilKilled(string dll, string[] args, int runMs, string ctx)
    {
        using Process child = Start(dll, args);
        Task<string> stderr = child.StandardError.ReadToEndAsync();
        var lines = new System.Collections.Concurrent.BlockingCollection<string>();
        var reader = new Thread(() =>
        {
            while (child.StandardOutput.ReadLine() is string line) lines.Add(line);
            lines.CompleteAdding();
        }) { IsBackground = true };
        reader.Start();
        try
        {
            if (!lines.TryTake(out string? firstLine, TimeSpan.FromSeconds(30)))
                Assert.Fail($"the child printed nothing ({ctx}); exited: {child.HasExited} {(child.HasExited ? stderr.Result : "")}");
            var all = new List<string> { firstLine! };
            Thread.Sleep(runMs);
            Assert.False(child.HasExited, $"the child stopped by itself ({ctx}): {(child.HasExited ? stderr.Result : "")}");
            child.Kill(); // SIGKILL
            child.WaitForExit();
            reader.Join();
            all.AddRange(lines);
            Assert.Equal(137, child.ExitCode); // 128 + SIGKILL: it did not exit on its own
            return all;
        }
        finally
        {
            if (!child.HasExited) { child.Kill(); child.WaitForExit(); }
        }
    }

    /// <summary>Parses the crash child's "ack VERSION BLOCK." lines; a line without its final '.' would be a torn write(2) and fails.</summary>
    public static List<(long Version, int Block)> Acks(IEnumerable<string> lines, string ctx) =>
        [.. lines.Select(l =>
        {
            Assert.True(l.StartsWith("ack ", StringComparison.Ordinal) && l.EndsWith('.'), $"bad ack line '{l}' ({ctx})");
            string[] f = l[4..^1].Split(' ');
            return (long.Parse(f[0]), int.Parse(f[1]));
        })];
}
