using System.Runtime.InteropServices;
using PfnBlock.Block;
using PfnBlock.Memory;
using PfnBlock.Namespaces;
using PfnBlock.Namespaces.Btt;

namespace PfnBlock.Tests.Btt;

/// <summary>A BTT media in native memory, for tests that crash and reopen without files.</summary>
internal sealed unsafe class MemoryMedia : IDisposable
{
    private byte* _p;

    public MemoryMedia(long length)
    {
        _p = (byte*)NativeMemory.AlignedAlloc((nuint)length, 4096);
        NativeMemory.Clear(_p, (nuint)length);
        Length = length;
        Media = new BttMedia(_p, length, PersistenceMode.Volatile, (_, _) => { }, () => { });
    }

    public long Length { get; }
    public BttMedia Media { get; }
    public byte* Address => _p;

    public void Dispose()
    {
        if (_p != null) NativeMemory.AlignedFree(_p);
        _p = null;
    }
}

/// <summary>Temporary files on /dev/shm and bios over DRAM frames.</summary>
internal sealed unsafe class BttScratch : IDisposable
{
    private readonly List<string> _files = [];

    public BttScratch(int frames = 64)
    {
        Arena = DramArena.Create((long)frames * Pfn.PageSize);
    }

    public DramArena Arena { get; }

    public string File(string tag)
    {
        string path = Path.Combine("/dev/shm", $"pfnblock-test-{tag}-{Guid.NewGuid():N}");
        _files.Add(path);
        return path;
    }

    public string SectorNamespace(string tag, long size = 20 << 20, uint sectorSize = 4096)
    {
        string path = File(tag);
        PmemNamespace.Create(path, new NamespaceCreateOptions { Size = size, Mode = NamespaceMode.Sector, SectorSize = sectorSize }).Dispose();
        return path;
    }

    public FrameRun Frames(int n) => Arena.Allocator.Allocate(n);

    public Span<byte> Span(FrameRun run, int length) => Arena.AddressSpace!.KmapSpan(run.First, 0, length);

    public static BlockStatus Io(IBlockDevice dev, BioOp op, long byteOffset, FrameRun buf, int length, BioFlags flags = BioFlags.None)
    {
        var bio = new Bio().Init(op, byteOffset >> Bio.SectorShift, flags);
        if (op is BioOp.Read or BioOp.Write) bio.AddVec(buf.First, 0, (uint)length);
        else bio.Iter.Size = (uint)length;
        return dev.SubmitAndWait(bio);
    }

    /// <summary>Runs a program to completion, returning its exit code, stdout and stderr.</summary>
    public static (int Exit, string Out, string Err) RunProcess(string file, params string[] args)
    {
        var psi = new System.Diagnostics.ProcessStartInfo(file) { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (string a in args) psi.ArgumentList.Add(a);
        using System.Diagnostics.Process p = System.Diagnostics.Process.Start(psi)!;
        Task<string> err = p.StandardError.ReadToEndAsync();
        string output = p.StandardOutput.ReadToEnd();
        p.WaitForExit();
        return (p.ExitCode, output, err.Result);
    }

    public void Dispose()
    {
        foreach (string f in _files) System.IO.File.Delete(f);
        Arena.Dispose();
    }
}
