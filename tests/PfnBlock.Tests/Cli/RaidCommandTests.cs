using System.Text.Json.Nodes;

namespace PfnBlock.Tests.Cli;

/// <summary><c>pfnblock raid create|examine|assemble</c> as child processes on real pmem namespaces, and their refusals.</summary>
public sealed class RaidCommandTests : IDisposable
{
    private const long MemberBytes = 8 << 20;
    private readonly Scratch _scratch = new();
    public void Dispose() => _scratch.Dispose();

    private static (int Exit, string Out, string Err) Cli(params string[] args) => ChildProcess.Run(ChildProcess.CliDll, args);

    private string[] Members(int n) => [.. Enumerable.Range(0, n).Select(_ => "pmem:" + _scratch.NewNamespace(MemberBytes))];

    [Fact]
    public void CreateWritesSuperblocksThatExamineAndAssembleRead()
    {
        string[] m = Members(4);
        (int exit, string stdout, string stderr) = Cli(["raid", "create", "--level", "5", "--chunk", "64K", "--bitmap-chunk", "256K", "--name", "vol", .. m]);
        Assert.True(exit == 0, stderr);
        Assert.Contains("created raid5 ", stdout);
        Assert.Contains("4 members", stdout);
        Assert.Contains($"Active device 3: {m[3]}", stdout);
        Assert.Contains($"serve it as md:{string.Join('+', m)}", stdout);

        (exit, stdout, stderr) = Cli("raid", "examine", m[2]);
        Assert.True(exit == 0, stderr);
        Assert.Contains("      Raid Level : raid5", stdout);
        Assert.Contains("     Device Role : Active device 2", stdout);
        Assert.Contains("      Chunk Size : 64K", stdout);
        Assert.Contains("     Array State : AAAA", stdout);

        (exit, stdout, stderr) = Cli("raid", "examine", "--json", m[1]);
        Assert.True(exit == 0, stderr);
        JsonObject doc = JsonNode.Parse(stdout)!.AsObject();
        Assert.Equal(5, doc["level"]!.GetValue<int>());
        Assert.Equal(4, doc["raid_disks"]!.GetValue<int>());
        Assert.Equal(65536, doc["chunk_bytes"]!.GetValue<long>());
        Assert.Equal(256 << 10, doc["bitmap"]!["chunk_bytes"]!.GetValue<long>());
        Assert.Equal("Active device 1", doc["role"]!.GetValue<string>());
        Assert.EndsWith(":vol", doc["name"]!.GetValue<string>());
        string uuid = doc["uuid"]!.GetValue<string>();

        (exit, stdout, stderr) = Cli(["raid", "assemble", .. m]);
        Assert.True(exit == 0, stderr);
        Assert.Contains($"active raid5 [4/4] [UUUU] {uuid}", stdout);

        // One member left out: assembled degraded, and said so.
        (exit, stdout, stderr) = Cli("raid", "assemble", m[0], "missing", m[2], m[3]);
        Assert.True(exit == 0, stderr);
        Assert.Contains("active raid5 [4/3] [U_UU] degraded", stdout);
        Assert.Contains("[1] missing: missing", stdout);
        Assert.Contains("slot 1 has no member", stderr);
    }

    [Fact]
    public void BadInputIsRefusedAndNothingIsWritten()
    {
        string[] m = Members(3);
        (int exit, _, string stderr) = Cli("raid", "create", "--level", "5", m[0], m[1]);
        Assert.Equal(2, exit);
        Assert.Contains("RAID5 needs at least 3 members, got 2", stderr);
        (exit, _, stderr) = Cli(["raid", "create", "--level", "6", .. m]);
        Assert.Equal(2, exit);
        Assert.Contains("RAID level 6 is not supported (use 1 or 5)", stderr);
        (exit, _, stderr) = Cli(["raid", "create", "--level", "5", "--chunk", "96K", .. m]);
        Assert.Equal(2, exit);
        Assert.Contains("chunk", stderr);
        // None of those wrote a superblock.
        (exit, _, stderr) = Cli("raid", "examine", m[0]);
        Assert.Equal(1, exit);
        Assert.Contains("no md superblock", stderr);

        (exit, _, stderr) = Cli("raid", "create", "--level", "1", m[0], m[1]);
        Assert.True(exit == 0, stderr);
        // A member of another array is refused without --force, and taken with it.
        (exit, _, stderr) = Cli("raid", "create", "--level", "1", m[1], m[2]);
        Assert.Equal(2, exit);
        Assert.Contains("is already a member of md array", stderr);
        Assert.Contains("--force", stderr);
        // Members of different arrays do not assemble into one.
        (exit, _, stderr) = Cli("raid", "create", "--level", "1", "--force", m[2], "pmem:" + _scratch.NewNamespace(MemberBytes));
        Assert.True(exit == 0, stderr);
        (exit, _, stderr) = Cli("raid", "assemble", m[0], m[2]);
        Assert.NotEqual(0, exit);
        Assert.Contains("pfnblock: error:", stderr);
        (exit, _, _) = Cli("raid", "assemble");
        Assert.Equal(2, exit);
    }
}
