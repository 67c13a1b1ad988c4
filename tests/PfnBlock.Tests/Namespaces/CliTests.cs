using System.Security.Cryptography;
using System.Text.Json;
using PfnBlock.Memory;
using PfnBlock.Namespaces;

namespace PfnBlock.Tests.Namespaces;

/// <summary>
/// The built pfnblock CLI as a user runs it: bad input of every kind exits non-zero with one
/// "pfnblock: error: ..." line on stderr, and leaves the file it was pointed at byte-identical.
/// </summary>
public sealed class CliTests : IDisposable
{
    private readonly Scratch _scratch = new();
    public void Dispose() => _scratch.Dispose();

    private static (int Exit, string Out, string Err) Cli(params string[] args) => ChildProcess.Run(ChildProcess.CliDll, args);

    private static byte[]? Hash(string path) => File.Exists(path) ? SHA256.HashData(File.ReadAllBytes(path)) : null;

    /// <summary>Asserts a non-zero exit and exactly one line on stderr, the error, no stack trace, nothing on stdout.</summary>
    private static void AssertOneLineError((int Exit, string Out, string Err) r, string expected, int exitCode)
    {
        string[] lines = r.Err.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.True(lines.Length == 1 && lines[0].StartsWith("pfnblock: error: ", StringComparison.Ordinal), $"expected one error line, got stderr:\n{r.Err}");
        Assert.Contains(expected, lines[0]);
        Assert.DoesNotContain("Exception", r.Err);
        Assert.DoesNotContain("   at ", r.Err);
        Assert.Equal("", r.Out);
        Assert.Equal(exitCode, r.Exit);
    }

    private string NewNamespace() => _scratch.NewNamespace();

    public static TheoryData<string[], string> WrongArguments => new()
    {
        { ["namespace", "create", "--path", "{P}", "--size", "banana"], "invalid size 'banana'" },
        { ["namespace", "create", "--path", "{P}", "--size", "0"], "invalid size '0'" },
        { ["namespace", "create", "--path", "{P}", "--size", "99999999999T"], "too large" },
        { ["namespace", "create", "--path", "{P}"], "--size" },
        { ["namespace", "create", "--path", "{P}", "--size", "2M", "--bogus"], "--bogus" },
        { ["namespace", "create", "--path", "{P}", "--size", "2M", "--sector-size", "1000"], "1000" },
        { ["namespace", "create", "--path", "{P}", "--size", "2M", "--mode", "fancy"], "fancy" },
        { ["namespace", "create", "--path", "{P}", "--size", "100k"], "below the minimum" },
        { ["namespace", "create", "--path", "{P}", "--size", "2M", "--align", "3000"], "power of two" },
        { ["namespace", "frobnicate", "--path", "{P}"], "frobnicate" },
        { ["namespace", "create", "--name", "{P}"], "'--path' is required" },
        { ["namespace", "create", "--path", "{P}", "--size", "2M", "--align", "8G"], "alignment" },
        { ["namespace", "create", "--path", "{P}", "--size", "2M", "--map", "sparse"], "Must be one of: 'none' 'dense' 'device' 'huge' 'temporary' 'on-demand'" },
        { ["namespace", "create", "--path", "{P}", "--size", "2M", "--align", "2M", "--map", "device"], "too small for --map device" },
        { ["namespace", "create", "--path", "{P}", "--size", "32M", "--mode", "sector", "--map", "device"], "use another map for sector mode" },
        { ["namespace", "create", "--path", "{P}", "--size", "2M", "--name", new string('n', 65)], "longer than 64 bytes" },
    };

    [Theory]
    [MemberData(nameof(WrongArguments))]
    public void WrongArgumentsAreOneLineUsageErrorsAndCreateNothing(string[] args, string expected)
    {
        string path = _scratch.NewPath();
        AssertOneLineError(Cli([.. args.Select(a => a.Replace("{P}", path))]), expected, exitCode: 2);
        Assert.False(File.Exists(path));
    }

    [Fact]
    public void AHugeSizeFailsCleanlyAndLeavesNoFile()
    {
        string path = _scratch.NewPath();
        AssertOneLineError(Cli("namespace", "create", "--path", path, "--size", "4194304T"), "No space left", 1); // 2^62 bytes
        Assert.False(File.Exists(path));
    }

    [Fact]
    public void AMissingFileIsNamed()
    {
        string path = _scratch.NewPath();
        AssertOneLineError(Cli("namespace", "info", "--path", path), "no such file", 1);
        AssertOneLineError(Cli("namespace", "destroy", "--path", path), "no such file", 1);
        Assert.False(File.Exists(path));
    }

    [Fact]
    public void ADirectoryIsNamedAsADirectory()
    {
        string dir = Directory.CreateTempSubdirectory("pfnblock-cli-dir-").FullName;
        try
        {
            AssertOneLineError(Cli("namespace", "info", "--path", dir), $"'{dir}' is a directory", 1);
            AssertOneLineError(Cli("namespace", "create", "--path", dir, "--size", "2M"), $"'{dir}' is a directory", 1);
            AssertOneLineError(Cli("serve", "--export", $"d=pmem:{dir}", "--listen", $"unix:{dir}/nbd.sock"), $"'{dir}' is a directory", 1);
            Assert.Empty(Directory.GetFileSystemEntries(dir));
        }
        finally { Directory.Delete(dir, recursive: true); }
    }

    [Fact]
    public void CreateInAMissingDirectoryNamesTheDirectory()
    {
        string dir = _scratch.NewPath("missing-dir");
        string path = Path.Combine(dir, "pmem0");
        AssertOneLineError(Cli("namespace", "create", "--path", path, "--size", "2M"), $"cannot create '{path}': directory '{dir}' does not exist", 1);
        Assert.False(Directory.Exists(dir));
    }

    [Fact]
    public void ACorruptNamespaceIsReportedAndLeftAlone()
    {
        string path = NewNamespace();
        byte[] bytes = File.ReadAllBytes(path);
        bytes[300] ^= 0xFF;                       // primary info block
        bytes[bytes.Length - 4096 + 300] ^= 0xFF; // backup info block
        File.WriteAllBytes(path, bytes);
        byte[]? before = Hash(path);
        AssertOneLineError(Cli("namespace", "info", "--path", path), "corrupt namespace info block", 1);
        AssertOneLineError(Cli("namespace", "info", "--path", path, "--json"), "corrupt namespace info block", 1);
        AssertOneLineError(Cli("namespace", "destroy", "--path", path), "corrupt namespace info block", 1);
        AssertOneLineError(Cli("namespace", "create", "--path", path, "--size", "2M"), "already a PfnBlock namespace", 1);
        Assert.Equal(before, Hash(path));
    }

    [Fact]
    public void AForeignFileIsReportedAndLeftAlone()
    {
        byte[] content = new byte[1 << 20];
        new Random(11).NextBytes(content);
        string path = _scratch.NewFile(content);
        AssertOneLineError(Cli("namespace", "info", "--path", path), "not a PfnBlock namespace", 1);
        AssertOneLineError(Cli("namespace", "destroy", "--path", path), "not a PfnBlock namespace", 1);
        AssertOneLineError(Cli("namespace", "create", "--path", path, "--size", "2M"), "other data", 1);
        Assert.Equal(content, File.ReadAllBytes(path));
    }

    [Fact]
    public void APmdkPoolOrADirectoryIsNamedAsSuch()
    {
        byte[] content = new byte[64 << 10];
        "PMEMOBJ\0"u8.CopyTo(content);
        string pool = _scratch.NewFile(content);
        AssertOneLineError(Cli("namespace", "info", "--path", pool), "is a PMDK pmemobj pool", 1);
        AssertOneLineError(Cli("check", "--path", pool), "is a PMDK pmemobj pool", 1);
        AssertOneLineError(Cli("namespace", "create", "--path", pool, "--size", "2M"), "already holds a PMDK pmemobj pool", 1);
        Assert.Equal(content, File.ReadAllBytes(pool));
        string dir = _scratch.NewPath("dir");
        Directory.CreateDirectory(dir);
        try { AssertOneLineError(Cli("check", "--path", dir), "is a directory", 1); }
        finally { Directory.Delete(dir); }
    }

    [Fact]
    public void ANamespaceInUseIsRefusedButCanBeDescribed()
    {
        string path = NewNamespace();
        byte[]? before = Hash(path);
        using (PmemNamespace.Open(path))
        {
            AssertOneLineError(Cli("namespace", "destroy", "--path", path), "in use", 1);
            AssertOneLineError(Cli("namespace", "create", "--path", path, "--size", "2M", "--force"), "in use", 1);
            (int exit, string stdout, string stderr) = Cli("namespace", "info", "--path", path);
            Assert.True(exit == 0, stderr);
            Assert.Contains("raw namespace, 2M", stdout);
        }
        Assert.Equal(before, Hash(path));
    }

    [Fact]
    public void CreateInfoDestroyRoundTrip()
    {
        string path = _scratch.NewPath();
        (int exit, string stdout, string stderr) = Cli("namespace", "create", "--path", path, "--size", "4M", "--sector-size", "4096", "--name", "cli");
        Assert.True(exit == 0, stderr);
        Assert.Contains("created", stdout);
        Assert.Contains("persistence:", stdout);

        (exit, stdout, stderr) = Cli("namespace", "info", "--path", path, "--json");
        Assert.True(exit == 0, stderr);
        using JsonDocument doc = JsonDocument.Parse(stdout);
        JsonElement root = doc.RootElement;
        NamespaceInfoBlock info = PmemNamespace.ReadInfo(path, out _);
        Assert.Equal(4L << 20, root.GetProperty("size").GetInt64());
        Assert.Equal(4096, root.GetProperty("sector_size").GetInt32());
        Assert.Equal("cli", root.GetProperty("name").GetString());
        Assert.Equal("raw", root.GetProperty("mode").GetString());
        Assert.Equal("primary", root.GetProperty("info_block").GetString());
        Assert.Equal(info.Uuid, root.GetProperty("uuid").GetGuid());
        Assert.Equal(info.DataSize, root.GetProperty("data_size").GetInt64());

        // A second create without --force refuses and changes nothing.
        byte[]? before = Hash(path);
        AssertOneLineError(Cli("namespace", "create", "--path", path, "--size", "2M"), "already a PfnBlock namespace", 1);
        Assert.Equal(before, Hash(path));

        (exit, stdout, stderr) = Cli("namespace", "destroy", "--path", path);
        Assert.True(exit == 0, stderr);
        Assert.False(File.Exists(path));
    }

    [Fact]
    public void InfoSaysWhenItReadTheBackupCopy()
    {
        string path = NewNamespace();
        byte[] bytes = File.ReadAllBytes(path);
        bytes[10] ^= 0x01; // signature of the primary
        File.WriteAllBytes(path, bytes);
        (int exit, string stdout, string stderr) = Cli("namespace", "info", "--path", path, "--json");
        Assert.True(exit == 0, stderr);
        using JsonDocument doc = JsonDocument.Parse(stdout);
        Assert.Equal("backup", doc.RootElement.GetProperty("info_block").GetString());
        (exit, stdout, _) = Cli("namespace", "info", "--path", path);
        Assert.Equal(0, exit);
        Assert.Contains("backup copy", stdout);
        Assert.Equal(bytes, File.ReadAllBytes(path)); // info only describes; repair is left to open
    }

    [Theory]
    [InlineData("none")]
    [InlineData("dense")]
    [InlineData("device")]
    [InlineData("huge")]
    [InlineData("temporary")]
    [InlineData("on-demand")]
    public void TheMapChosenAtCreateIsRecordedAndDescribed(string map)
    {
        string path = _scratch.NewPath();
        (int exit, string stdout, string stderr) = Cli("namespace", "create", "--path", path, "--size", "8M", "--map", map);
        Assert.True(exit == 0, stderr);
        Assert.Equal(map == "device", stdout.Contains("descriptors: device", StringComparison.Ordinal));
        (exit, stdout, stderr) = Cli("namespace", "info", "--path", path, "--json");
        Assert.True(exit == 0, stderr);
        using JsonDocument doc = JsonDocument.Parse(stdout);
        NamespaceInfoBlock info = PmemNamespace.ReadInfo(path, out _);
        Assert.Equal(map, doc.RootElement.GetProperty("map").GetString());
        Assert.Equal(DescriptorMaps.Parse(map), info.MapKind);
        Assert.Equal(info.MapSize, doc.RootElement.GetProperty("map_size").GetInt64());
        // Only the device map takes capacity: 64 B per data frame, in front of the data.
        Assert.Equal(map == "device", info.MapSize >= info.DataSize / 4096 * 64);
        Assert.Equal(map == "device" ? 4096 : 0, doc.RootElement.GetProperty("map_offset").GetInt64());
    }
}
