using System.Globalization;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using PfnBlock.Management.Control;
using PfnBlock.Tests.Nbd;

namespace PfnBlock.Tests.Management;

/// <summary>
/// <c>pfnblock stat</c> and <c>pfnblock ctl</c> against a real <c>pfnblock serve</c> child process,
/// with real NBD I/O from nbdcopy; and serve's metrics endpoint scraped from outside the process.
/// </summary>
public sealed partial class StatAndCtlCommandTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("pfnblock-stat-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private static (int Exit, string Out, string Err) Cli(params string[] args) => ChildProcess.Run(ChildProcess.CliDll, args);

    private ServeProcess StartServer(out string control)
    {
        control = Path.Combine(_dir, "control.sock");
        return ServeProcess.Start("--export", "r=ram:16M", "--listen", $"unix:{_dir}/nbd.sock", "--control", control, "--metrics", "tcp:127.0.0.1:0");
    }

    [Fact]
    public void StatReportsRatesSinceStartThenPerIntervalAsJson()
    {
        using ServeProcess server = StartServer(out string control);
        Assert.Contains($"control socket {control}", server.Output);
        Tool.Run("nbdcopy", Tool.RandomFile(_dir, 4 << 20, seed: 5), $"nbd+unix:///r?socket={_dir}/nbd.sock");

        (int exit, string stdout, string stderr) = Cli("stat", "--control", control, "--count", "2", "--json", "--interval", "0.3");
        Assert.True(exit == 0, stderr);
        string[] lines = stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal(2, lines.Length);
        JsonObject first = JsonNode.Parse(lines[0])!.AsObject(), second = JsonNode.Parse(lines[1])!.AsObject();
        JsonObject ram = first["devices"]!.AsArray().Single()!.AsObject();
        Assert.Equal("ram:16M", ram["device"]!.GetValue<string>());
        // The first report covers the time since the server started: all 4 MiB, at some rate.
        double since = first["interval_s"]!.GetValue<double>();
        Assert.Equal(first["uptime_s"]!.GetValue<double>(), since, 6);
        Assert.Equal(4.0, ram["wMB_s"]!.GetValue<double>() * since, 6);
        Assert.True(ram["w_s"]!.GetValue<double>() > 0);
        Assert.True(ram["w_await_ms"]!.GetValue<double>() > 0);
        Assert.Equal(0, ram["in_flight"]!.GetValue<long>());
        // The second covers the interval before it, with no I/O in it.
        double interval = second["interval_s"]!.GetValue<double>();
        Assert.InRange(interval, 0.2, 10);
        JsonObject idle = second["devices"]!.AsArray().Single()!.AsObject();
        Assert.Equal(0, idle["w_s"]!.GetValue<double>());
        Assert.Equal(0, idle["aqu_sz"]!.GetValue<double>());
        Assert.Equal(0, idle["util_pct"]!.GetValue<double>());

        (exit, stdout, stderr) = Cli("stat", "--control", control, "--count", "1");
        Assert.True(exit == 0, stderr);
        string[] table = stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Matches(@"^Device\s+r/s\s+w/s\s+rMB/s\s+wMB/s\s+r_await\s+w_await\s+aqu-sz\s+%util\s+inflight$", table[0]);
        Assert.StartsWith("ram:16M ", table[1]);
    }

    /// <summary>
    /// stat stops on SIGINT with exit code 0, also when it was started with SIGINT ignored (as a
    /// shell without job control starts background commands: a CI job or a suite run with
    /// <c>&amp;</c> passes that on to every child). The disposition is set with env(1), so the test
    /// does not depend on how the suite itself was started.
    /// </summary>
    [Theory]
    [InlineData("--default-signal=INT")]
    [InlineData("--ignore-signal=INT")]
    public void StatRunsUntilInterrupted(string disposition)
    {
        using ServeProcess server = StartServer(out string control);
        using System.Diagnostics.Process stat = StartStat(disposition, "stat", "--control", control, "--interval", "0.2", "--json");
        // Three reports, then Ctrl-C: it stops at once, successfully.
        for (int i = 0; i < 3; i++) Assert.StartsWith("{\"uptime_s\"", stat.StandardOutput.ReadLine());
        Tool.Run("kill", "-INT", stat.Id.ToString(CultureInfo.InvariantCulture));
        Assert.True(stat.WaitForExit(30_000), "stat did not stop on SIGINT");
        Assert.Equal(0, stat.ExitCode);
    }

    /// <summary>
    /// A SIGINT sent right after stat starts, before it installs its handler, still stops it: by
    /// the default action while the runtime starts (exit 130) or through the handler (exit 0).
    /// </summary>
    [Fact]
    public void StatStopsOnASigintSentRightAfterItStarts()
    {
        using ServeProcess server = StartServer(out string control);
        for (int round = 0; round < 3; round++)
        {
            using System.Diagnostics.Process stat = StartStat("--default-signal=INT", "stat", "--control", control, "--interval", "0.2", "--json");
            // Once env has exec'd the dotnet host, SIGINT is at its default (env set it); before, it
            // may still be ignored as inherited from this process. The runtime starts after the exec.
            WaitForExec(stat.Id, ChildProcess.DotnetHost);
            Tool.Run("kill", "-INT", stat.Id.ToString(CultureInfo.InvariantCulture));
            Assert.True(stat.WaitForExit(30_000), $"stat did not stop on a SIGINT sent as it started (round {round})");
            Assert.Contains(stat.ExitCode, new[] { 0, 130 });
            // Whatever it printed before the signal are whole reports (a few lines: the pipe never filled).
            Assert.All(stat.StandardOutput.ReadToEnd().Split('\n', StringSplitOptions.RemoveEmptyEntries), l => Assert.StartsWith("{\"uptime_s\"", l));
        }
    }

    /// <summary>Waits until process <paramref name="pid"/> runs <paramref name="program"/> (its argv[0]: env's own command line names it too), or has exited.</summary>
    private static void WaitForExec(int pid, string program)
    {
        for (int i = 0; i < 30_000; i++)
        {
            string cmdline;
            try { cmdline = File.ReadAllText($"/proc/{pid}/cmdline"); }
            catch (IOException) { return; } // gone already
            if (cmdline.Split('\0')[0] == program) return;
            Thread.Sleep(1);
        }
        Assert.Fail($"process {pid} did not exec {program}");
    }

    /// <summary>The CLI through env(1) with <paramref name="disposition"/> (<c>--default-signal=INT</c>, <c>--ignore-signal=INT</c>); env execs, so the pid is the CLI's.</summary>
    private static System.Diagnostics.Process StartStat(string disposition, params string[] args)
    {
        var psi = new System.Diagnostics.ProcessStartInfo("env") { RedirectStandardInput = true, RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (string a in (string[])[disposition, ChildProcess.DotnetHost, ChildProcess.CliDll, .. args]) psi.ArgumentList.Add(a);
        psi.Environment["PFNBLOCK_DATA_DIR"] = ChildProcess.DataDirectory;
        System.Diagnostics.Process p = System.Diagnostics.Process.Start(psi)!;
        p.StandardInput.Close();
        return p;
    }

    [Fact]
    public void CtlSendsAnyCommandAndPrintsTheResult()
    {
        using ServeProcess server = StartServer(out string control);
        (int exit, string stdout, string stderr) = Cli("ctl", "devices", "--control", control, "--json");
        Assert.True(exit == 0, stderr);
        JsonArray devices = JsonNode.Parse(stdout)!.AsArray();
        Assert.Equal("ram:16M", devices.Single()!["device"]!.GetValue<string>());

        (exit, stdout, stderr) = Cli("ctl", "exports", "--control", control);
        Assert.True(exit == 0, stderr);
        Assert.Contains("exports:\n  - name: r\n    device: ram:16M\n", stdout);
        Assert.Contains($"listening:\n  - unix:{_dir}/nbd.sock\n", stdout);

        (exit, stdout, stderr) = Cli("ctl", "help", "--control", control);
        Assert.True(exit == 0, stderr);
        Assert.Contains("- command: stats", stdout);

        (exit, _, stderr) = Cli("ctl", "nosuch", "--control", control);
        Assert.Equal(1, exit);
        Assert.StartsWith("pfnblock: error: unknown command 'nosuch' (known: devices, exports, help, md, stats", stderr);
        Assert.Single(stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries));

        (exit, _, stderr) = Cli("ctl", "stats", "extra", "--control", control);
        Assert.Equal(1, exit);
        Assert.Equal("pfnblock: error: stats: expected 0 arguments, got 1", stderr.Trim());
    }

    [Fact]
    public void TheMetricsOfAServeProcessCountItsNbdTraffic()
    {
        using ServeProcess server = StartServer(out _);
        Match m = MetricsLine().Match(server.Output);
        Assert.True(m.Success, server.Output);
        Tool.Run("nbdcopy", Tool.RandomFile(_dir, 2 << 20, seed: 6), $"nbd+unix:///r?socket={_dir}/nbd.sock");
        using var http = new HttpClient { Timeout = TimeSpan.FromSeconds(30) };
        using HttpResponseMessage response = http.Send(new HttpRequestMessage(HttpMethod.Get, m.Groups[1].Value));
        using var reader = new StreamReader(response.Content.ReadAsStream());
        PrometheusText metrics = PrometheusText.Parse(reader.ReadToEnd());
        Assert.Equal(2 << 20, metrics.Value("pfnblock_nbd_written_bytes_total", ("export", "r")));
        Assert.Equal((2 << 20) / 512, metrics.Value("pfnblock_device_sectors_total", ("device", "ram:16M"), ("op", "write")));
    }

    [Fact]
    public void TheDefaultControlSocketIsInTheDataDirectoryAndASecondServerGoesWithoutOne()
    {
        var env = new Dictionary<string, string> { ["PFNBLOCK_DATA_DIR"] = _dir };
        string control = Path.Combine(_dir, "control.sock");
        using ServeProcess first = ServeProcess.Start(env, "--export", "one=ram:16M", "--listen", $"unix:{_dir}/one.sock");
        Assert.Contains($"control socket {control}", first.Output);
        using ServeProcess second = ServeProcess.Start(env, "--export", "two=ram:8M", "--listen", $"unix:{_dir}/two.sock");
        Assert.Contains($"pfnblock: warning: no control socket: cannot listen on unix:{control}: in use by another server", second.Error);
        Assert.DoesNotContain("control socket", second.Output);
        // stat and ctl find the default socket through the same data directory: the first server's.
        (int exit, string stdout, string stderr) = ChildProcess.Run(ChildProcess.CliDll, ["ctl", "exports", "--json"], environment: env);
        Assert.True(exit == 0, stderr);
        Assert.Equal("one", JsonNode.Parse(stdout)!["exports"]![0]!["name"]!.GetValue<string>());
        second.Terminate();
        Assert.True(File.Exists(control), "the second server removed the first one's control socket");
        first.Terminate();
        Assert.False(File.Exists(control));
    }

    [Fact]
    public void AServerTakesOverTheControlSocketAKilledOneLeftAndRemovesItsOwnAtExit()
    {
        var env = new Dictionary<string, string> { ["PFNBLOCK_DATA_DIR"] = _dir };
        string control = Path.Combine(_dir, "control.sock");
        using (ServeProcess killed = ServeProcess.Start(env, "--export", "one=ram:8M", "--listen", $"unix:{_dir}/one.sock"))
        {
            Assert.Contains($"control socket {control}", killed.Output);
            killed.Kill();
        }
        Assert.True(File.Exists(control), "SIGKILL left no stale control socket to take over");
        Assert.True(File.Exists(control + ControlServer.LockSuffix), "SIGKILL left no lock file (nobody holds it now)");
        // Nothing accepts on it: the next server replaces it, and answers on it.
        using ServeProcess next = ServeProcess.Start(env, "--export", "two=ram:8M", "--listen", $"unix:{_dir}/two.sock");
        Assert.Contains($"control socket {control}", next.Output);
        Assert.DoesNotContain("warning", next.Error);
        (int exit, string stdout, string stderr) = ChildProcess.Run(ChildProcess.CliDll, ["ctl", "exports", "--json"], environment: env);
        Assert.True(exit == 0, stderr);
        Assert.Equal("two", JsonNode.Parse(stdout)!["exports"]![0]!["name"]!.GetValue<string>());
        next.Terminate();
        Assert.Equal(0, next.Process.ExitCode);
        Assert.False(File.Exists(control), "a clean exit left the control socket behind");
        Assert.False(File.Exists(control + ControlServer.LockSuffix), "a clean exit left the control socket's lock file behind");
    }

    /// <summary>CLI children of the tests never touch the machine's default data directory (a SIGKILLed serve would leave its control.sock there).</summary>
    [Fact]
    public void TheTestsCliChildrenGetAPrivateDataDirectory()
    {
        using ServeProcess server = ServeProcess.Start("--export", "r=ram:8M", "--listen", $"unix:{_dir}/nbd.sock");
        string expected = Path.Combine(ChildProcess.DataDirectory, "control.sock");
        Assert.NotEqual("/dev/shm/pfnblock", ChildProcess.DataDirectory.TrimEnd('/'));
        // Another test's server may hold the socket in that directory at the moment: then this one warns about it.
        Assert.True(server.Output.Contains($"control socket {expected} ", StringComparison.Ordinal)
            || server.Error.Contains($"cannot listen on unix:{expected}: in use by another server", StringComparison.Ordinal), server.Output + "\n" + server.Error);
    }

    [Fact]
    public void BadUseIsOneLineAndTheRightExitCode()
    {
        (int exit, _, string stderr) = Cli("stat", "--control", Path.Combine(_dir, "nothing.sock"), "--count", "1");
        Assert.Equal(1, exit);
        Assert.Equal($"pfnblock: error: cannot connect to the control socket {_dir}/nothing.sock: no such socket (is 'pfnblock serve' running with this --control?)", stderr.Trim());
        (exit, _, stderr) = Cli("stat", "--control", Path.Combine(_dir, "nothing.sock"), "--count", "0");
        Assert.Equal(2, exit);
        Assert.Equal("pfnblock: error: --count must be positive", stderr.Trim());
        (exit, _, stderr) = Cli("stat", "--interval", "0");
        Assert.Equal(2, exit);
        Assert.Single(stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        (exit, _, stderr) = Cli("serve", "--metrics", "unix:/tmp/m.sock", "--control", "none");
        Assert.Equal(2, exit);
        Assert.StartsWith("pfnblock: error: invalid metrics address 'unix:/tmp/m.sock'", stderr);
        // "@NAME" is a device (a config's named device, a ctl label), not a response file to expand.
        (exit, _, stderr) = Cli("ctl", "writecache", "@vm1", "writeback", "--control", Path.Combine(_dir, "nothing.sock"));
        Assert.Equal(1, exit);
        Assert.StartsWith("pfnblock: error: cannot connect to the control socket", stderr.Trim());
    }

    [GeneratedRegex(@"metrics at (http://127\.0\.0\.1:\d+/metrics)")]
    private static partial Regex MetricsLine();
}
