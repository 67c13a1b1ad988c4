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

    private static readonly Lazy<string> s_dataDirectory = new(CreateDataDirectory);

    /// <summary>
    /// The data directory (<c>$PFNBLOCK_DATA_DIR</c>) of every CLI child that is not given one: private
    /// to this test process, so a child never uses the machine's default one (/dev/shm/pfnblock) and
    /// what it leaves there (a <c>serve</c> SIGKILLed with its default <c>control.sock</c>, a
    /// namespace) neither outlives the run nor meets another run's server. Removed when the tests exit.
    /// </summary>
    public static string DataDirectory => s_dataDirectory.Value;

    private static string CreateDataDirectory()
    {
        string root = Directory.Exists("/dev/shm") ? "/dev/shm" : Path.GetTempPath();
        string dir = Path.Combine(root, $"pfnblock-test-data-{Environment.ProcessId}-{Guid.NewGuid():N}"[..48]);
        Directory.CreateDirectory(dir);
        AppDomain.CurrentDomain.ProcessExit += (_, _) =>
        {
            try { Directory.Delete(dir, recursive: true); }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException) { } // best effort: a child still running may hold a file
        };
        return dir;
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

    /// <summary>
    /// Starts <paramref name="dll"/> with redirected stdin, stdout and stderr and <paramref name="environment"/>
    /// added to the environment (which may name another <c>PFNBLOCK_DATA_DIR</c> than <see cref="DataDirectory"/>).
    /// </summary>
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
        psi.Environment["PFNBLOCK_DATA_DIR"] = DataDirectory;
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

    /// <summary>Runs the program <paramref name="tool"/> (a peer such as qemu-io or nbdinfo, found on PATH) to completion: its exit code, stdout and stderr.</summary>
    public static (int Exit, string Out, string Err) RunTool(string tool, params string[] args)
    {
        var psi = new ProcessStartInfo(tool) { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (string arg in args) psi.ArgumentList.Add(arg);
        using Process p = Process.Start(psi)!;
        Task<string> error = p.StandardError.ReadToEndAsync();
        string output = p.StandardOutput.ReadToEnd();
        p.WaitForExit();
        return (p.ExitCode, output, error.Result);
    }
}
