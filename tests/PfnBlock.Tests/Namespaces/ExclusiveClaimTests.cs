using System.Diagnostics;
using PfnBlock.Namespaces;

namespace PfnBlock.Tests.Namespaces;

/// <summary>The exclusive claim (flock, the seed's FMODE_EXCL): one opener at a time, in this process or another; released when the holder dies.</summary>
public sealed class ExclusiveClaimTests : IDisposable
{
    private readonly Scratch _scratch = new();
    public void Dispose() => _scratch.Dispose();

    private string NewNamespace() => _scratch.NewNamespace();

    [Fact]
    public void ASecondOpenInTheSameProcessIsInUse()
    {
        string path = NewNamespace();
        using (PmemNamespace first = PmemNamespace.Open(path))
        {
            var e = Assert.Throws<NamespaceInUseException>(() => PmemNamespace.Open(path));
            Assert.Contains("in use", e.Message);
            Assert.Contains(path, e.Message);
            Assert.Throws<NamespaceInUseException>(() => PmemNamespace.Create(path, new() { Size = 2 << 20, Force = true }));
            Assert.Throws<NamespaceInUseException>(() => PmemNamespace.Destroy(path, force: true));
            Assert.True(File.Exists(path));
            // Describing needs no claim.
            Assert.Equal(first.Info, PmemNamespace.ReadInfo(path, out _));
        }
        using PmemNamespace again = PmemNamespace.Open(path);
    }

    [Fact]
    public void AnotherProcessHoldingTheNamespaceMakesItInUseUntilItIsKilled()
    {
        string path = NewNamespace();
        using Process child = ChildProcess.Start(ChildProcess.CrashChildDll, "hold", path);
        try
        {
            Assert.Equal("held", child.StandardOutput.ReadLine());
            var e = Assert.Throws<NamespaceInUseException>(() => PmemNamespace.Open(path));
            Assert.Contains("in use", e.Message);
            Assert.Throws<NamespaceInUseException>(() => PmemNamespace.Destroy(path, force: false));
            Assert.True(File.Exists(path));
        }
        finally
        {
            child.Kill(); // SIGKILL: no cleanup runs in the child
            child.WaitForExit();
        }
        // The claim died with the process.
        using PmemNamespace ns = PmemNamespace.Open(path);
        Assert.False(ns.RecoveredFromBackup);
    }

    [Fact]
    public void AnotherProcessCannotOpenWhatThisProcessHolds()
    {
        string path = NewNamespace();
        using (PmemNamespace held = PmemNamespace.Open(path))
        {
            (int exit, string stdout, _) = ChildProcess.Run(ChildProcess.CrashChildDll, ["open", path]);
            Assert.Equal(3, exit);
            Assert.StartsWith("in-use:", stdout);
            Assert.Contains("in use", stdout);
        }
        (int exit2, string stdout2, _) = ChildProcess.Run(ChildProcess.CrashChildDll, ["open", path]);
        Assert.Equal(0, exit2);
        Assert.Equal("opened", stdout2.Trim());
    }
}
