using System.Diagnostics;
using PfnBlock.Namespaces;

namespace PfnBlock.Tests.Namespaces;

/// <summary>
/// devdax namespaces: 2 MiB-aligned data mapped by any number of processes at once (a shared
/// flock), no block I/O (a block open is refused, with a clear error whether or not it is mapped),
/// and exclusive openers (destroy, create --force) refused while a mapping exists.
/// </summary>
public sealed unsafe class DevDaxTests : IDisposable
{
    private readonly Scratch _scratch = new();
    public void Dispose() => _scratch.Dispose();

    private string NewDevDax(long size = 8 << 20)
    {
        string path = _scratch.NewPath("devdax");
        PmemNamespace.Create(path, new NamespaceCreateOptions { Size = size, Mode = NamespaceMode.DevDax }).Dispose();
        return path;
    }

    /// <summary>A child process mapping the namespace, driven line by line over stdin.</summary>
    private sealed class Mapper : IDisposable
    {
        private readonly Process _child;

        public Mapper(string path)
        {
            _child = ChildProcess.Start(ChildProcess.CrashChildDll, "dax", path);
            string? first = _child.StandardOutput.ReadLine();
            Assert.True(first is not null && first.StartsWith("mapped ", StringComparison.Ordinal), $"child said '{first}', stderr: {(first is null ? _child.StandardError.ReadToEnd() : "")}");
        }

        public string Ask(string command)
        {
            _child.StandardInput.WriteLine(command);
            _child.StandardInput.Flush();
            return _child.StandardOutput.ReadLine() ?? throw new InvalidOperationException($"the mapper exited: {_child.StandardError.ReadToEnd()}");
        }

        public void Dispose()
        {
            // Closing stdin ends the child; kill it only if it does not go (it is ours).
            _child.StandardInput.Close();
            if (!_child.WaitForExit(30_000)) _child.Kill();
            _child.Dispose();
        }
    }

    [Fact]
    public void TwoProcessesMapTheSameDataAndSeeEachOthersStores()
    {
        string path = NewDevDax();
        NamespaceInfoBlock info = PmemNamespace.ReadInfo(path, out _);
        Assert.Equal(NamespaceMode.DevDax, info.Mode);
        Assert.Equal(0, info.DataOffset % (2 << 20));

        using var child = new Mapper(path);
        using DaxNamespace mine = DaxNamespace.Map(path); // shared with the child
        Assert.Equal(0, (long)mine.Address % (2 << 20));
        Assert.Equal(info.DataSize, mine.Size);

        Assert.Equal("filled", child.Ask("fill 4096 8192 7"));
        Assert.True(new ReadOnlySpan<byte>(mine.Address + 4096, 8192).IndexOfAnyExcept((byte)7) < 0);
        Assert.Equal(0, mine.Address[4095]);

        new Span<byte>(mine.Address + (3 << 20), 4096).Fill(3);
        mine.Persist(3 << 20, 4096);
        Assert.Equal($"sum {3 * 4096}", child.Ask($"sum {3 << 20} 4096"));
        Assert.Equal("sum 0", child.Ask($"sum {(3 << 20) + 4096} 4096"));
    }

    [Fact]
    public void BlockOpensAndExclusiveOpenersAreRefusedWhileMappedAndBlockOpensAfterwardsToo()
    {
        string path = NewDevDax();
        using (var child = new Mapper(path))
        {
            Assert.Equal("filled", child.Ask("fill 0 4096 9"));
            Assert.Throws<NamespaceInUseException>(() => PmemNamespace.Open(path));
            Assert.Throws<NamespaceInUseException>(() => PmemNamespace.Destroy(path, force: false));
            Assert.Throws<NamespaceInUseException>(() => PmemNamespace.Create(path, new NamespaceCreateOptions { Size = 8 << 20, Force = true }));
            (int exit, _, string err) = ChildProcess.Run(ChildProcess.CliDll, ["bench", "--device", $"pmem:{path}", "--rw", "randread", "--runtime", "0.2"]);
            Assert.Equal(1, exit);
            Assert.Contains("in use by another process", err);
        }
        // Unmapped: a block open is still refused, for what the namespace is.
        var e = Assert.Throws<InvalidNamespaceException>(() => PmemNamespace.Open(path));
        Assert.Contains("devdax namespace", e.Message);
        Assert.Throws<InvalidNamespaceException>(() => PmemNamespace.Open(path, readOnly: true));
        // The data survived all of it.
        using (DaxNamespace dax = DaxNamespace.Map(path))
            Assert.True(new ReadOnlySpan<byte>(dax.Address, 4096).IndexOfAnyExcept((byte)9) < 0);
        PmemNamespace.Destroy(path, force: false);
        Assert.False(File.Exists(path));
    }

    [Fact]
    public void OnlyDevDaxNamespacesMapAndTheirDataIsAlwaysTwoMiBAligned()
    {
        string raw = _scratch.NewNamespace(4 << 20);
        Assert.Contains("not devdax", Assert.Throws<InvalidNamespaceException>(() => DaxNamespace.Map(raw)).Message);
        Assert.Contains("devdax data is 2M-aligned", Assert.Throws<ArgumentException>(() =>
            PmemNamespace.Create(_scratch.NewPath(), new NamespaceCreateOptions { Size = 8 << 20, Mode = NamespaceMode.DevDax, Align = 4096 })).Message);

        string path = _scratch.NewPath();
        (int exit, string output, string err) = ChildProcess.Run(ChildProcess.CliDll, ["namespace", "create", "--path", path, "--size", "8M", "--mode", "devdax"]);
        Assert.True(exit == 0, err);
        Assert.Contains("devdax namespace", output);
        (exit, output, err) = ChildProcess.Run(ChildProcess.CliDll, ["namespace", "info", "--path", path]);
        Assert.True(exit == 0, err);
        Assert.Contains("align 2097152", output);
    }
}
