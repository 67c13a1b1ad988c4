using System.Diagnostics;
using PfnBlock.Exports.Nbd;
using PfnBlock.Namespaces;

namespace PfnBlock.Tests.Nbd;

/// <summary>Writes acknowledged with FUA, or before a FLUSH reply, survive a SIGKILL of the server process.</summary>
public sealed class NbdDurabilityTests
{
    [Fact]
    public unsafe void AcknowledgedFuaAndFlushedWritesSurviveSigkill()
    {
        string nsPath = Path.Combine("/dev/shm", $"pfnblock-nbd-durable-{Guid.NewGuid():N}");
        string dir = Directory.CreateTempSubdirectory("pfnblock-nbd-durable-").FullName;
        string socket = Path.Combine(dir, "nbd.sock");
        try
        {
            PmemNamespace.Create(nsPath, new NamespaceCreateOptions { Size = 16 << 20 }).Dispose();
            string cli = Path.Combine(AppContext.BaseDirectory, "PfnBlock.Cli.dll");
            var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
            // SIGKILLed below, so its control socket stays behind: in this test's directory, not the default data directory.
            foreach (string a in (string[])[cli, "serve", "--export", $"pmem0=pmem:{nsPath}", "--listen", $"unix:{socket}", "--control", Path.Combine(dir, "control.sock")]) psi.ArgumentList.Add(a);
            using Process server = Process.Start(psi)!;
            try
            {
                string? line;
                while ((line = server.StandardOutput.ReadLine()) is not null && !line.StartsWith("serving", StringComparison.Ordinal)) { }
                if (line is null) Assert.Fail("server exited: " + server.StandardError.ReadToEnd());

                using NbdRawClient c = NbdRawClient.Connect(socket);
                c.Negotiate("pmem0");
                Assert.True(c.Flags.HasFlag(NbdTransmissionFlags.SendFlush) && c.Flags.HasFlag(NbdTransmissionFlags.SendFua));
                byte[] a = Pattern(64 << 10, 0xa1);
                byte[] b = Pattern(1 << 20, 0xb2);
                byte[] z = Pattern(8192, 0xc3);
                byte[] scratch = new byte[16];
                c.Request(NbdCommand.Write, NbdCommandFlags.Fua, 1, 0, (uint)a.Length, a);
                Assert.Equal(NbdError.None, c.ReadReply(scratch).Error);
                c.Request(NbdCommand.Write, 0, 2, 1 << 20, (uint)b.Length, b);
                c.Request(NbdCommand.Write, 0, 3, 4 << 20, (uint)z.Length, z);
                Assert.Equal(NbdError.None, c.ReadReply(scratch).Error);
                Assert.Equal(NbdError.None, c.ReadReply(scratch).Error);
                c.Request(NbdCommand.WriteZeroes, NbdCommandFlags.Fua, 4, 4 << 20, 4096);
                Assert.Equal(NbdError.None, c.ReadReply(scratch).Error);
                c.Request(NbdCommand.Flush, 0, 5, 0, 0);
                Assert.Equal(NbdError.None, c.ReadReply(scratch).Error);
            }
            finally
            {
                server.Kill(); // SIGKILL: no drain, no flush, no unmap
                server.WaitForExit();
            }

            using PmemNamespace ns = PmemNamespace.Open(nsPath);
            var data = new ReadOnlySpan<byte>(ns.DataAddress, 8 << 20);
            Assert.True(data[..(64 << 10)].SequenceEqual(Pattern(64 << 10, 0xa1)), "FUA write lost");
            Assert.True(data.Slice(1 << 20, 1 << 20).SequenceEqual(Pattern(1 << 20, 0xb2)), "flushed write lost");
            Assert.True(data.Slice(4 << 20, 4096).IndexOfAnyExcept((byte)0) < 0, "FUA write-zeroes lost");
            Assert.True(data.Slice((4 << 20) + 4096, 4096).SequenceEqual(Pattern(8192, 0xc3).AsSpan(4096)), "flushed write lost");
        }
        finally
        {
            File.Delete(nsPath);
            Directory.Delete(dir, recursive: true);
        }
    }

    private static byte[] Pattern(int length, byte seed)
    {
        byte[] p = new byte[length];
        for (int i = 0; i < length; i++) p[i] = (byte)(seed + i * 31 + (i >> 9));
        return p;
    }
}
