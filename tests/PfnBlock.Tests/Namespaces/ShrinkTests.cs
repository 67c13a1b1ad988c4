using System.Diagnostics;
using System.Security.Cryptography;
using PfnBlock.Namespaces;

namespace PfnBlock.Tests.Namespaces;

/// <summary>
/// Shrinking a namespace keeps every data byte below the cut and is refused while the namespace
/// is open — in this process with frames in the cut range pinned, or held by another process —
/// and for layouts that cannot shrink; a refused shrink changes nothing.
/// </summary>
public sealed unsafe class ShrinkTests : IDisposable
{
    private readonly Scratch _scratch = new();
    public void Dispose() => _scratch.Dispose();

    private static byte[] Fill(string path)
    {
        using PmemNamespace ns = PmemNamespace.Open(path);
        var data = new byte[ns.DataSize];
        new Random(4).NextBytes(data);
        data.CopyTo(new Span<byte>(ns.DataAddress, data.Length));
        ns.Flush();
        return data;
    }

    [Fact]
    public void ShrinkKeepsTheDataBelowTheCutAndTheFileGivesTheRestBack()
    {
        string path = _scratch.NewNamespace(16 << 20);
        byte[] before = Fill(path);
        NamespaceInfoBlock info = PmemNamespace.Shrink(path, 8 << 20);
        Assert.Equal(8L << 20, info.NamespaceSize);
        Assert.Equal(8L << 20, new FileInfo(path).Length);
        using PmemNamespace ns = PmemNamespace.Open(path);
        Assert.False(ns.RecoveredFromBackup);
        Assert.Equal(info.DataSize, ns.DataSize);
        Assert.True(new ReadOnlySpan<byte>(ns.DataAddress, (int)ns.DataSize).SequenceEqual(before.AsSpan(0, (int)ns.DataSize)));
        // The backup copy at the new end is valid too: with the primary gone, open falls back to it.
        ns.Dispose();
        using (var f = new FileStream(path, FileMode.Open, FileAccess.Write)) f.Write(new byte[4096]);
        using PmemNamespace again = PmemNamespace.Open(path);
        Assert.True(again.RecoveredFromBackup);
        Assert.Equal(8L << 20, again.Info.NamespaceSize);
    }

    [Fact]
    public void ShrinkIsRefusedWhileFramesArePinnedOrAnotherProcessHoldsTheNamespace()
    {
        string path = _scratch.NewNamespace(16 << 20);
        Fill(path);
        byte[] hash = SHA256.HashData(File.ReadAllBytes(path));
        using (PmemNamespace ns = PmemNamespace.Open(path))
        {
            // A pin on a frame past the new end (a DAX range, an NBD reply in flight).
            Assert.True(ns.Region.Pins.TryPin(ns.Region.FrameCount - 1, 1, out long token));
            Assert.Throws<NamespaceInUseException>(() => PmemNamespace.Shrink(path, 8 << 20));
            ns.Region.Pins.Unpin(ns.Region.FrameCount - 1, 1, token);
        }
        using (Process child = ChildProcess.Start(ChildProcess.CrashChildDll, "hold", path))
        {
            Assert.Equal("held", child.StandardOutput.ReadLine());
            (int exit, _, string err) = ChildProcess.Run(ChildProcess.CliDll, ["namespace", "resize", "--path", path, "--size", "8M"]);
            Assert.Equal(1, exit);
            Assert.Contains("in use by another process", err);
            child.StandardInput.Close();
            Assert.True(child.WaitForExit(30_000));
        }
        Assert.Equal(hash, SHA256.HashData(File.ReadAllBytes(path)));
    }

    [Fact]
    public void WhatCannotShrinkIsRefusedAndLeftAsItWas()
    {
        string raw = _scratch.NewNamespace(16 << 20);
        string sector = _scratch.NewPath();
        PmemNamespace.Create(sector, new NamespaceCreateOptions { Size = 32 << 20, Mode = NamespaceMode.Sector }).Dispose();
        string device = _scratch.NewPath();
        PmemNamespace.Create(device, new NamespaceCreateOptions { Size = 16 << 20, MapKind = PfnBlock.Memory.DescriptorMapKind.Device }).Dispose();
        string bad = _scratch.NewNamespace(16 << 20);
        MediaErrors.Inject(bad, (12 << 20) >> 9, 8);
        var hashes = new[] { raw, sector, device, bad }.ToDictionary(p => p, p => SHA256.HashData(File.ReadAllBytes(p)));

        Assert.Contains("only shrinking", Assert.Throws<ArgumentException>(() => PmemNamespace.Shrink(raw, 32 << 20)).Message);
        Assert.Contains("leaves no data", Assert.Throws<ArgumentException>(() => PmemNamespace.Shrink(raw, 8192)).Message);
        Assert.Contains("not a multiple", Assert.Throws<ArgumentException>(() => PmemNamespace.Shrink(raw, (8 << 20) + 512)).Message);
        Assert.Contains("sector namespace", Assert.Throws<NotSupportedException>(() => PmemNamespace.Shrink(sector, 24 << 20)).Message);
        Assert.Contains("--map device", Assert.Throws<NotSupportedException>(() => PmemNamespace.Shrink(device, 8 << 20)).Message);
        Assert.Contains("bad blocks beyond", Assert.Throws<ArgumentException>(() => PmemNamespace.Shrink(bad, 8 << 20)).Message);
        foreach ((string p, byte[] h) in hashes) Assert.Equal(h, SHA256.HashData(File.ReadAllBytes(p)));
        // Bad blocks below the cut stay listed.
        PmemNamespace.Shrink(bad, 14 << 20);
        Assert.Equal(8, PmemNamespace.ReadInfo(bad, out _).BadBlocks.TotalBlocks);
    }
}
