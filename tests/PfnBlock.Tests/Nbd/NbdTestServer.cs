using System.Diagnostics;
using PfnBlock.Block;
using PfnBlock.Devices.Pmem;
using PfnBlock.Devices.Ram;
using PfnBlock.Exports.Nbd;
using PfnBlock.Namespaces;

namespace PfnBlock.Tests.Nbd;

/// <summary>An in-process NBD server on a Unix socket in a private temporary directory.</summary>
internal sealed class NbdTestServer : IDisposable
{
    private readonly List<IBlockDevice> _devices = [];
    private readonly List<string> _files = [];

    public NbdTestServer(params (string Name, IBlockDevice Device, bool ReadOnly)[] exports)
        : this(null, exports) { }

    public NbdTestServer(NbdServerOptions? options, params (string Name, IBlockDevice Device, bool ReadOnly)[] exports)
    {
        Directory = System.IO.Directory.CreateTempSubdirectory("pfnblock-nbd-").FullName;
        SocketPath = Path.Combine(Directory, "nbd.sock");
        Registry = new NbdExportRegistry();
        foreach ((string name, IBlockDevice device, bool ro) in exports)
        {
            _devices.Add(device);
            Registry.Add(new NbdExport(name, device, ro));
        }
        Server = new NbdServer(Registry, options);
        Server.Start([NbdListenAddress.Parse("unix:" + SocketPath)]);
    }

    public string Directory { get; }
    public string SocketPath { get; }
    public NbdExportRegistry Registry { get; }
    public NbdServer Server { get; }

    /// <summary>The libnbd/qemu URI of an export.</summary>
    public string Uri(string export) => $"nbd+unix:///{export}?socket={SocketPath}";

    public static IBlockDevice Ram(long bytes) => RamDevice.Create(bytes);

    /// <summary>A pmem namespace device on /dev/shm, deleted with the server.</summary>
    public static (IBlockDevice Device, string Path) Pmem(long bytes)
    {
        string path = Path.Combine("/dev/shm", $"pfnblock-nbd-{Guid.NewGuid():N}");
        return (new PmemDevice(PmemNamespace.Create(path, new NamespaceCreateOptions { Size = bytes })), path);
    }

    public void DeleteOnDispose(string path) => _files.Add(path);

    public void Dispose()
    {
        Server.Dispose();
        foreach (IBlockDevice d in _devices) d.Dispose();
        foreach (string f in _files) File.Delete(f);
        System.IO.Directory.Delete(Directory, recursive: true);
    }
}

/// <summary>Runs the peer programs the interop tests drive.</summary>
internal static class Tool
{
    /// <summary>Runs <paramref name="program"/> and returns its stdout; fails the test on a non-zero exit or timeout.</summary>
    public static string Run(string program, params string[] args)
    {
        (int code, string output, string error) = RunAllowingFailure(program, args);
        if (code != 0) throw new Xunit.Sdk.XunitException($"{program} {string.Join(' ', args)} exited with {code}:\n{error}\n{output}");
        return output;
    }

    /// <summary>Runs a program and returns exit code, stdout and stderr.</summary>
    public static (int ExitCode, string Output, string Error) RunAllowingFailure(string program, params string[] args)
    {
        var psi = new ProcessStartInfo(program) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (string a in args) psi.ArgumentList.Add(a);
        using Process p = Process.Start(psi)!;
        Task<string> stdout = p.StandardOutput.ReadToEndAsync();
        Task<string> stderr = p.StandardError.ReadToEndAsync();
        if (!p.WaitForExit(TimeSpan.FromMinutes(3)))
        {
            p.Kill(entireProcessTree: true);
            throw new Xunit.Sdk.XunitException($"{program} {string.Join(' ', args)} timed out");
        }
        return (p.ExitCode, stdout.Result, stderr.Result);
    }

    /// <summary>SHA-256 of the first <paramref name="length"/> bytes of a file, as hex.</summary>
    public static string Sha256(string path, long length)
    {
        using FileStream f = File.OpenRead(path);
        using var sha = System.Security.Cryptography.IncrementalHash.CreateHash(System.Security.Cryptography.HashAlgorithmName.SHA256);
        byte[] buf = new byte[1 << 20];
        long left = length;
        while (left > 0)
        {
            int n = f.Read(buf, 0, (int)Math.Min(buf.Length, left));
            if (n == 0) break;
            sha.AppendData(buf, 0, n);
            left -= n;
        }
        return Convert.ToHexString(sha.GetHashAndReset());
    }

    /// <summary>A file of <paramref name="bytes"/> random bytes.</summary>
    public static string RandomFile(string directory, long bytes, int seed)
    {
        string path = Path.Combine(directory, $"random-{seed}.img");
        var rng = new Random(seed);
        byte[] buf = new byte[1 << 20];
        using FileStream f = File.Create(path);
        for (long done = 0; done < bytes; done += buf.Length)
        {
            rng.NextBytes(buf);
            f.Write(buf, 0, (int)Math.Min(buf.Length, bytes - done));
        }
        return path;
    }
}
