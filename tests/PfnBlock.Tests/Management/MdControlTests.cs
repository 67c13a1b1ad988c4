using System.Text.Json.Nodes;
using PfnBlock.Tests.Nbd;

namespace PfnBlock.Tests.Management;

/// <summary>
/// The control socket's <c>md</c> command and <c>pfnblock ctl md … --watch</c> against a real
/// <c>pfnblock serve</c> child serving a RAID5 over four pmem namespaces and a mirror, with NBD
/// I/O from nbdcopy: status, failing a member (data still right), a replacement rebuilt to
/// [UUUU], a clean check, speed limits, and the errors of bad requests.
/// </summary>
public sealed class MdControlTests : IDisposable
{
    private const long MemberBytes = 8 << 20;
    private readonly Scratch _scratch = new();
    private readonly string _dir = Directory.CreateTempSubdirectory("pfnblock-md-").FullName;

    public void Dispose()
    {
        _scratch.Dispose();
        Directory.Delete(_dir, recursive: true);
    }

    private static (int Exit, string Out, string Err) Cli(params string[] args) => ChildProcess.Run(ChildProcess.CliDll, args);

    private sealed record Served(ServeProcess Server, string Control, string Nbd, string[] Raid5, string[] Mirror) : IDisposable
    {
        public void Dispose() => Server.Dispose();
    }

    private Served Serve()
    {
        string[] raid5 = [.. Enumerable.Range(0, 4).Select(_ => "pmem:" + _scratch.NewNamespace(MemberBytes))];
        string[] mirror = [.. Enumerable.Range(0, 2).Select(_ => "pmem:" + _scratch.NewNamespace(MemberBytes))];
        string control = Path.Combine(_dir, "control.sock"), nbd = Path.Combine(_dir, "nbd.sock");
        ServeProcess server = ServeProcess.Start(
            "--export", $"parity=raid5:[{string.Join('+', raid5)}],chunk=64K,bitmap_chunk=256K,name=parity",
            "--export", $"mirrored=mirror:[{string.Join('+', mirror)}],bitmap_chunk=256K,name=mirrored",
            "--listen", $"unix:{nbd}", "--control", control);
        return new Served(server, control, nbd, raid5, mirror);
    }

    private static JsonObject Md(Served s, params string[] args)
    {
        (int exit, string stdout, string stderr) = Cli(["ctl", "md", .. args, "--control", s.Control, "--json"]);
        Assert.True(exit == 0, stderr);
        return JsonNode.Parse(stdout)!.AsObject();
    }

    private static string MdError(Served s, params string[] args)
    {
        (int exit, _, string stderr) = Cli(["ctl", "md", .. args, "--control", s.Control]);
        Assert.Equal(1, exit);
        return stderr;
    }

    private string Uri(Served s, string export) => $"nbd+unix:///{export}?socket={s.Nbd}";

    /// <summary>Reads <paramref name="bytes"/> of the export through NBD and returns their hash.</summary>
    private string ReadBack(Served s, string export, long bytes)
    {
        string copy = Path.Combine(_dir, $"{export}.read");
        Tool.Run("nbdcopy", Uri(s, export), copy);
        string sha = Tool.Sha256(copy, bytes);
        File.Delete(copy);
        return sha;
    }

    private static string[] States(JsonObject array) => [.. array["members"]!.AsArray().Select(m => m!["state"]!.GetValue<string>())];

    [Fact]
    public void StatusListsEveryArrayWithMembersAndAnMdstatSummary()
    {
        using Served s = Serve();
        JsonObject all = Md(s);
        JsonArray arrays = all["arrays"]!.AsArray();
        Assert.Equal(["parity", "mirrored"], arrays.Select(a => a!["name"]!.GetValue<string>()));
        JsonObject parity = arrays[0]!.AsObject(), mirrored = arrays[1]!.AsObject();
        Assert.Equal("raid5", parity["level"]!.GetValue<string>());
        Assert.Equal("raid1", mirrored["level"]!.GetValue<string>());
        Assert.Equal(65536, parity["chunk_bytes"]!.GetValue<long>());
        Assert.Equal(s.Raid5, parity["members"]!.AsArray().Select(m => m!["spec"]!.GetValue<string>()));
        Assert.Equal(["in_sync", "in_sync", "in_sync", "in_sync"], States(parity));
        Assert.Equal("active", parity["state"]!.GetValue<string>());
        Assert.Equal(0, parity["degraded"]!.GetValue<int>());
        Assert.Equal(0, parity["mismatch_cnt"]!.GetValue<long>());
        string summary = all["summary"]!.GetValue<string>();
        Assert.Contains("parity : active raid5 [4/4] [UUUU]", summary);
        Assert.Contains("mirrored : active raid1 [2/2] [UU]", summary);
        Assert.Contains($"{s.Raid5[3]}[3]", summary);

        // The text form is the same reply as key: value lines.
        (int exit, string text, string err) = Cli("ctl", "md", "parity", "--control", s.Control);
        Assert.True(exit == 0, err);
        Assert.Contains("summary: parity : active raid5 [4/4] [UUUU]", text);
    }

    [Fact]
    public void AFailedMemberDegradesTheArrayDataStaysRightAndAReplacementIsRebuiltAndChecksClean()
    {
        using Served s = Serve();
        long bytes = Md(s, "parity")["sectors"]!.GetValue<long>() * 512;
        string data = Tool.RandomFile(_dir, bytes, seed: 9);
        Tool.Run("nbdcopy", data, Uri(s, "parity"));
        string sha = Tool.Sha256(data, bytes);

        JsonObject failed = Md(s, "parity", "fail", "1");
        Assert.Equal(["in_sync", "faulty", "in_sync", "in_sync"], States(failed));
        Assert.Equal("degraded", failed["state"]!.GetValue<string>());
        Assert.Contains("[4/3] [U_UU] degraded", failed["summary"]!.GetValue<string>());
        Assert.Equal(sha, ReadBack(s, "parity", bytes));
        Assert.Contains("slot 1", MdError(s, "parity", "fail", "1")); // already faulty
        Assert.Contains("degraded array cannot be checked", MdError(s, "parity", "check"));

        // Written degraded (reconstruct-writes), then rebuilt onto a replacement: --watch returns when idle.
        string data2 = Tool.RandomFile(_dir, bytes, seed: 10);
        Tool.Run("nbdcopy", data2, Uri(s, "parity"));
        sha = Tool.Sha256(data2, bytes);
        string spare = "pmem:" + _scratch.NewNamespace(MemberBytes);
        (int exit, string watched, string err) = Cli("ctl", "md", "parity", "add", spare, "--watch", "--control", s.Control);
        Assert.True(exit == 0, err);
        Assert.EndsWith("parity : active raid5 [4/4] [UUUU]", watched.TrimEnd());
        JsonObject rebuilt = Md(s, "parity");
        Assert.Equal(["in_sync", "in_sync", "in_sync", "in_sync"], States(rebuilt));
        Assert.Equal(spare, rebuilt["members"]![1]!["spec"]!.GetValue<string>());
        Assert.Equal("idle", rebuilt["sync_action"]!.GetValue<string>());
        Assert.Equal(sha, ReadBack(s, "parity", bytes));

        // Fail another member: the rebuilt one now carries its share, so the data is still right.
        Md(s, "parity", "fail", s.Raid5[2]);
        Assert.Equal(sha, ReadBack(s, "parity", bytes));
    }

    [Fact]
    public void ACheckOfAConsistentArrayFindsNoMismatchesAndSpeedLimitsAreSet()
    {
        using Served s = Serve();
        Tool.Run("nbdcopy", Tool.RandomFile(_dir, MemberBytes / 2, seed: 3), Uri(s, "mirrored"));
        JsonObject limited = Md(s, "mirrored", "speed", "2000", "500000");
        Assert.Equal(2000, limited["speed_limit_min"]!.GetValue<int>());
        Assert.Equal(500000, limited["speed_limit_max"]!.GetValue<int>());
        (int exit, string watched, string err) = Cli("ctl", "md", "mirrored", "check", "--watch", "--control", s.Control);
        Assert.True(exit == 0, err);
        Assert.EndsWith("mirrored : active raid1 [2/2] [UU]", watched.TrimEnd());
        JsonObject done = Md(s, "mirrored");
        Assert.Equal("idle", done["sync_action"]!.GetValue<string>());
        Assert.Equal(0, done["mismatch_cnt"]!.GetValue<long>());
        // The other array was left alone.
        Assert.Equal(200000, Md(s, "parity")["speed_limit_max"]!.GetValue<int>());
    }

    [Fact]
    public void BadRequestsGetClearErrors()
    {
        using Served s = Serve();
        Assert.Contains("no md array 'nope' (served: parity, mirrored)", MdError(s, "nope"));
        Assert.Contains("md parity has slots 0 to 3, not 4", MdError(s, "parity", "fail", "4"));
        Assert.Contains("md mirrored has no member 'pmem:/nowhere'", MdError(s, "mirrored", "fail", "pmem:/nowhere"));
        Assert.Contains("no slot needs a replacement", MdError(s, "parity", "add", "pmem:" + _scratch.NewNamespace(MemberBytes)));
        Assert.Contains("MIN must be a positive whole number of KiB/s, not 'fast'", MdError(s, "parity", "speed", "fast", "10"));
        Assert.Contains("the minimum sync speed 10 KiB/s exceeds the maximum 5 KiB/s", MdError(s, "parity", "speed", "10", "5"));
        Assert.Contains("unknown action 'rebuild'", MdError(s, "parity", "rebuild"));
        Assert.Contains("unknown action 'fail'", MdError(s, "parity", "fail"));

        // A replacement that is too small is refused and the array stays degraded.
        Md(s, "mirrored", "fail", "0");
        Assert.Contains("the array needs", MdError(s, "mirrored", "add", "pmem:" + _scratch.NewNamespace(2 << 20)));
        Assert.Equal(["faulty", "in_sync"], States(Md(s, "mirrored")));
        // So is a device the server uses elsewhere (a member of the other array): rebuilding onto it would overwrite it.
        Assert.Contains($"replacement {s.Raid5[0]} is in use by this server", MdError(s, "mirrored", "add", s.Raid5[0]));
        Assert.Equal(["faulty", "in_sync"], States(Md(s, "mirrored")));

        (int exit, _, string err) = Cli("ctl", "stats", "--watch", "--control", s.Control);
        Assert.Equal(2, exit);
        Assert.Contains("--watch follows md arrays only", err);
    }
}
