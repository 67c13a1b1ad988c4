using System.Diagnostics;
using System.Globalization;

namespace PfnBlock.Tests.Nbd;

/// <summary>
/// <c>pfnblock serve</c> as a child process: started, waited for until it prints "serving" (or
/// exits), its output collected; disposing kills it if it is still running (by its own pid only).
/// </summary>
internal sealed class ServeProcess : IDisposable
{
    private readonly List<string> _out = [];
    private readonly List<string> _err = [];
    private readonly ManualResetEventSlim _ready = new();

    private ServeProcess(Process process) => Process = process;

    public Process Process { get; }
    public int Pid => Process.Id;

    /// <summary>Stdout so far.</summary>
    public string Output { get { lock (_out) return string.Join('\n', _out); } }
    /// <summary>Stderr so far.</summary>
    public string Error { get { lock (_err) return string.Join('\n', _err); } }

    /// <summary>The port of the first <c>listening on tcp:HOST:PORT</c> line.</summary>
    public int TcpPort
    {
        get
        {
            string line;
            lock (_out) line = _out.First(l => l.StartsWith("listening on tcp:", StringComparison.Ordinal));
            return int.Parse(line[(line.LastIndexOf(':') + 1)..], CultureInfo.InvariantCulture);
        }
    }

    /// <summary>Starts <c>pfnblock serve ARGS</c> and waits until it serves; fails the test if it exits first.</summary>
    public static ServeProcess Start(params string[] args) => Start(null, args);

    /// <summary>Starts <c>pfnblock serve ARGS</c> with <paramref name="environment"/> added and waits until it serves.</summary>
    public static ServeProcess Start(IReadOnlyDictionary<string, string>? environment, params string[] args)
    {
        ServeProcess s = Launch(environment, args);
        if (!s.WaitReady(TimeSpan.FromSeconds(60)) || s.Process.HasExited)
        {
            string why = s.Process.HasExited ? $"exited with {s.Process.ExitCode}" : "did not start serving in 60 s";
            s.Dispose();
            throw new Xunit.Sdk.XunitException($"pfnblock serve {string.Join(' ', args)} {why}:\n{s.Error}\n{s.Output}");
        }
        return s;
    }

    /// <summary>Starts <c>pfnblock serve ARGS</c> without waiting.</summary>
    public static ServeProcess Launch(params string[] args) => Launch(null, args);

    /// <summary>Starts <c>pfnblock serve ARGS</c> with <paramref name="environment"/> added, without waiting.</summary>
    public static ServeProcess Launch(IReadOnlyDictionary<string, string>? environment, params string[] args)
    {
        Process p = ChildProcess.Start(ChildProcess.CliDll, ["serve", .. args], environment);
        var s = new ServeProcess(p);
        p.OutputDataReceived += (_, e) =>
        {
            if (e.Data is null) { s._ready.Set(); return; }
            lock (s._out) s._out.Add(e.Data);
            if (e.Data.StartsWith("serving", StringComparison.Ordinal)) s._ready.Set();
        };
        p.ErrorDataReceived += (_, e) => { if (e.Data is not null) lock (s._err) s._err.Add(e.Data); };
        p.BeginOutputReadLine();
        p.BeginErrorReadLine();
        p.StandardInput.Close();
        return s;
    }

    /// <summary>Waits for the "serving" line (or the end of stdout).</summary>
    public bool WaitReady(TimeSpan timeout) => _ready.Wait(timeout);

    /// <summary>Waits for the process to exit; false on timeout.</summary>
    public bool WaitForExit(TimeSpan timeout)
    {
        if (!Process.WaitForExit(timeout)) return false;
        Process.WaitForExit(); // drains the output readers
        return true;
    }

    /// <summary>SIGTERM (a clean stop: drain, flush, remove its socket files), then waits for the exit.</summary>
    public void Terminate()
    {
        if (Process.HasExited) return;
        Tool.Run("kill", "-TERM", Pid.ToString(CultureInfo.InvariantCulture));
        if (!WaitForExit(TimeSpan.FromSeconds(60))) throw new Xunit.Sdk.XunitException("pfnblock serve did not stop within 60 s of SIGTERM");
    }

    /// <summary>SIGKILL: no drain, no flush.</summary>
    public void Kill()
    {
        if (Process.HasExited) return;
        Process.Kill();
        Process.WaitForExit();
    }

    /// <summary>A field of <c>/proc/PID/status</c> in bytes (e.g. RssAnon).</summary>
    public long StatusBytes(string field)
    {
        foreach (string line in File.ReadLines($"/proc/{Pid}/status"))
            if (line.StartsWith(field + ":", StringComparison.Ordinal))
                return long.Parse(line[(field.Length + 1)..].Trim().Split(' ')[0], CultureInfo.InvariantCulture) * 1024;
        throw new InvalidOperationException($"no {field} in /proc/{Pid}/status");
    }

    public void Dispose()
    {
        Kill();
        Process.Dispose();
        _ready.Dispose();
    }
}
