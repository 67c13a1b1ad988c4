namespace PfnBlock.Tests.Nbd;

/// <summary>
/// ext4 on an export through nbdfuse and a loop device (the kernel here has no nbd driver):
/// a tree copied and verified, e2fsck clean, verified again after a restart and after a SIGKILL of
/// the server. The shell part is nbd-filesystem.sh; it needs root, loop devices and /dev/fuse and
/// fails, never skips, without them.
/// </summary>
public sealed class NbdFilesystemTests
{
    [Fact]
    public void Ext4OnAnExportSurvivesARestartAndASigkill()
    {
        string script = Path.Combine(AppContext.BaseDirectory, "Nbd", "nbd-filesystem.sh");
        (int code, string output, string error) = Tool.RunAllowingFailure("bash", script, ChildProcess.DotnetHost, ChildProcess.CliDll, "64", "24");
        Assert.True(code == 0, $"nbd-filesystem.sh exited with {code}:\n{error}\n{output}");
        Assert.Contains("verified after copy", output);
        Assert.Contains("verified after restart", output);
        Assert.Contains("verified after SIGKILL", output);
        Assert.EndsWith("filesystem on a pfnblock export: OK", output.Trim());
    }
}
