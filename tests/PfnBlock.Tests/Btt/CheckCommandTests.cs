using System.Text.Json;

namespace PfnBlock.Tests.Btt;

/// <summary><c>pfnblock check</c> as a user runs it: exit codes, text and JSON.</summary>
public sealed class CheckCommandTests : IDisposable
{
    private readonly BttScratch _s = new(frames: 1);

    public void Dispose() => _s.Dispose();

    private static (int Exit, string Out, string Err) Pfnblock(params string[] args) =>
        BttScratch.RunProcess("dotnet", [Path.Combine(AppContext.BaseDirectory, "PfnBlock.Cli.dll"), .. args]);

    [Fact]
    public void CheckReportsRepairsAndExitsByConsistency()
    {
        string path = _s.SectorNamespace("cli");
        (int exit, string output, _) = Pfnblock("check", "--path", path);
        Assert.Equal(0, exit);
        Assert.Contains("result: consistent", output);

        using (var f = new FileStream(path, FileMode.Open, FileAccess.Write)) { f.Position = 4096 + 70; f.WriteByte(0x77); }
        (exit, output, _) = Pfnblock("check", "--path", path, "--json");
        Assert.Equal(1, exit);
        using (JsonDocument doc = JsonDocument.Parse(output))
        {
            Assert.False(doc.RootElement.GetProperty("consistent").GetBoolean());
            Assert.Equal("sector namespace", doc.RootElement.GetProperty("container").GetString());
            Assert.Contains(doc.RootElement.GetProperty("findings").EnumerateArray(),
                f => f.GetProperty("severity").GetString() == "error" && f.GetProperty("message").GetString()!.Contains("primary info block is invalid"));
        }
        (exit, output, _) = Pfnblock("check", "--path", path, "--repair");
        Assert.Equal(0, exit);
        Assert.Contains("repaired: arena 0: primary info block restored from the backup", output);
        Assert.Contains("result: consistent after 1 repair(s)", output);
    }

    [Fact]
    public void CheckRefusesWhatIsNotABttWithOneLine()
    {
        string path = _s.File("junk");
        File.WriteAllBytes(path, new byte[1 << 20]);
        (int exit, string output, string err) = Pfnblock("check", "--path", path);
        Assert.Equal(1, exit);
        Assert.Equal("", output);
        Assert.Single(err.Trim().Split('\n'));
        Assert.StartsWith("pfnblock: error:", err);
    }
}
