using System.Text.Json;

namespace PfnBlock.Tests.CrashTest;

/// <summary><c>pfnblock crashtest</c> as a user runs it: counts in text and JSON, exit codes, bad arguments.</summary>
public sealed class CrashTestCommandTests
{
    private static (int Exit, string Out, string Err) Cli(params string[] args) => ChildProcess.Run(ChildProcess.CliDll, args);

    [Fact]
    public void JsonCarriesTheCounts()
    {
        (int exit, string stdout, string stderr) = Cli("crashtest", "--structure", "btt", "--ops", "8", "--states", "300", "--seed", "5", "--json");
        Assert.True(exit == 0, stderr);
        using JsonDocument doc = JsonDocument.Parse(stdout);
        JsonElement root = doc.RootElement;
        Assert.Equal("btt", root.GetProperty("structure").GetString());
        Assert.Equal(300, root.GetProperty("states_explored").GetInt64());
        Assert.Equal(0, root.GetProperty("inconsistent_states").GetInt64());
        Assert.Equal(5, root.GetProperty("seed").GetInt32());
        Assert.True(root.GetProperty("crash_points").GetInt32() > 8);
        Assert.Equal(0, root.GetProperty("reproducers").GetArrayLength());
    }

    [Fact]
    public void TextNamesTheStatesExploredAndInconsistentStates()
    {
        (int exit, string stdout, string stderr) = Cli("crashtest", "--structure", "namespace", "--ops", "2", "--states", "200");
        Assert.True(exit == 0, stderr);
        Assert.Contains("states explored: 200 of", stdout);
        Assert.Contains("inconsistent states: 0", stdout);
    }

    [Fact]
    public void ReplayRebuildsOneState()
    {
        (int exit, string stdout, string stderr) = Cli("crashtest", "--structure", "btt", "--ops", "3", "--states", "0", "--json");
        Assert.True(exit == 0, stderr);
        int end = JsonDocument.Parse(stdout).RootElement.GetProperty("trace_events").GetInt32();
        (exit, stdout, stderr) = Cli("crashtest", "--structure", "btt", "--ops", "3", "--replay", $"{end}:");
        Assert.True(exit == 0, stderr);
        Assert.Equal($"crash point {end}: consistent", stdout.Trim());
    }

    [Theory]
    [InlineData("journal", "not in the tree")]
    [InlineData("nonsense", "nonsense")]
    public void StructuresWithoutATargetAreUsageErrors(string structure, string expected)
    {
        (int exit, string stdout, string stderr) = Cli("crashtest", "--structure", structure);
        Assert.Equal(2, exit);
        Assert.Equal("", stdout);
        Assert.Contains(expected, stderr);
        Assert.DoesNotContain("   at ", stderr);
    }

    [Theory]
    [InlineData("--replay", "banana")]
    [InlineData("--ops", "0")]
    [InlineData("--replay", "1:")]
    public void BadArgumentsAreUsageErrors(string option, string value)
    {
        (int exit, _, string stderr) = Cli("crashtest", "--structure", "btt", "--ops", "2", option, value);
        Assert.Equal(2, exit);
        Assert.StartsWith("pfnblock: error: ", stderr);
    }
}
