using CsCheck;
using PfnBlock.Block;
using PfnBlock.Devices.DirectFile;
using PfnBlock.Devices.Pmem;
using PfnBlock.Exports.Nbd;
using PfnBlock.Namespaces;

namespace PfnBlock.Tests.Nbd;

/// <summary>
/// Clients that never asked for block sizes may send requests of any alignment: they are served
/// by read-modify-write, serialised against every other write to the export (issue 14, finding 6).
/// </summary>
public sealed class NbdReadModifyWriteTests
{
    private const int DeviceBytes = 256 << 10;

    /// <summary>One request of the model run: 0 read, 1 write, 2 write-zeroes, 3 trim.</summary>
    private sealed record Op(int Kind, int Offset, int Length, byte Seed, bool Fua);

    private static readonly Gen<Op> s_op =
        Gen.Select(Gen.Int[0, 3], Gen.Int[0, DeviceBytes - 1], Gen.Frequency((3, Gen.Int[1, 1100]), (1, Gen.Int[1, 20000])), Gen.Byte, Gen.Bool,
            (kind, offset, length, seed, fua) => new Op(kind, offset, Math.Min(length, DeviceBytes - offset), seed, fua));

    public static TheoryData<string, uint> Devices => new() { { "ram", 512 }, { "pmem", 512 }, { "pmem", 4096 }, { "file", 512 } };

    [Theory]
    [MemberData(nameof(Devices))]
    public void AnyAlignmentMatchesAByteModel(string kind, uint sectorSize)
    {
        using var scratch = new Scratch();
        Gen.Select(s_op.Array[40, 120], Gen.Bool).Sample((ops, structured) =>
        {
            // The file device completes asynchronously, on its engine's threads.
            IBlockDevice device = kind switch
            {
                "ram" => NbdTestServer.Ram(DeviceBytes),
                "file" => FileDevice.Open(scratch.NewSizedFile(Scratch.Directory, DeviceBytes), new FileDeviceOptions { Buffered = true }),
                _ => new PmemDevice(PmemNamespace.Open(scratch.NewNamespace(1 << 20, sectorSize))),
            };
            Assert.True(device.CapacityBytes >= DeviceBytes);
            using var server = new NbdTestServer(("disk", device, false));
            using NbdRawClient c = NbdRawClient.Connect(server.SocketPath);
            c.Negotiate("disk", structured, blockSizes: false);
            byte[] model = new byte[DeviceBytes];
            byte[] buf = new byte[20000];
            ulong cookie = 0;
            foreach (Op op in ops)
            {
                var flags = op.Fua && op.Kind != 0 ? NbdCommandFlags.Fua : NbdCommandFlags.None;
                switch (op.Kind)
                {
                    case 0:
                        c.Request(NbdCommand.Read, 0, ++cookie, (ulong)op.Offset, (uint)op.Length);
                        (_, NbdError readError, _, int n) = c.ReadReply(buf, op.Length);
                        Assert.Equal(NbdError.None, readError);
                        Assert.Equal(op.Length, n);
                        Assert.True(buf.AsSpan(0, n).SequenceEqual(model.AsSpan(op.Offset, op.Length)),
                            $"read of {op.Length} at {op.Offset} differs from the model");
                        continue;
                    case 1:
                        new Random(op.Seed).NextBytes(buf.AsSpan(0, op.Length));
                        buf.AsSpan(0, op.Length).CopyTo(model.AsSpan(op.Offset));
                        c.Request(NbdCommand.Write, flags, ++cookie, (ulong)op.Offset, (uint)op.Length, buf.AsSpan(0, op.Length));
                        break;
                    case 2:
                        model.AsSpan(op.Offset, op.Length).Clear();
                        c.Request(NbdCommand.WriteZeroes, flags, ++cookie, (ulong)op.Offset, (uint)op.Length);
                        break;
                    default:
                        // A trim is advisory: the whole blocks inside it read as zeros afterwards (these devices discard by zeroing), the rest is kept.
                        int block = (int)sectorSize, first = (op.Offset + block - 1) / block * block, end = (op.Offset + op.Length) / block * block;
                        if (first < end) model.AsSpan(first, end - first).Clear();
                        c.Request(NbdCommand.Trim, flags, ++cookie, (ulong)op.Offset, (uint)op.Length);
                        break;
                }
                (ulong replyCookie, NbdError error, _, _) = c.ReadReply(buf);
                Assert.Equal(cookie, replyCookie);
                Assert.Equal(NbdError.None, error);
            }
            c.Request(NbdCommand.Read, 0, ++cookie, 0, DeviceBytes / 2);
            byte[] all = new byte[DeviceBytes / 2];
            c.ReadReply(all, all.Length);
            Assert.True(all.AsSpan().SequenceEqual(model.AsSpan(0, all.Length)));
        }, iter: 12, threads: 1);
    }

    [Fact]
    public void AHundredByteWriteAt4096FromAnExportNameClientIsCarriedOut()
    {
        // The finding's case: a client that cannot ask for block sizes (EXPORT_NAME), a 4096-byte-sector namespace.
        using var scratch = new Scratch();
        var device = new PmemDevice(PmemNamespace.Open(scratch.NewNamespace(1 << 20, 4096)));
        using var server = new NbdTestServer(("disk", device, false));
        using NbdRawClient c = NbdRawClient.Connect(server.SocketPath);
        c.Greet(NbdClientFlags.FixedNewstyle | NbdClientFlags.NoZeroes);
        c.SendOption((uint)NbdOption.ExportName, "disk"u8);
        c.ReadExactly(new byte[10]);
        byte[] data = [.. Enumerable.Range(0, 100).Select(i => (byte)(i + 1))];
        c.Request(NbdCommand.Write, 0, 1, 4096, 100, data);
        Assert.Equal(NbdError.None, c.ReadReply([]).Error);
        byte[] back = new byte[4096 + 200];
        c.Request(NbdCommand.Read, 0, 2, 0, (uint)back.Length);
        Assert.Equal(NbdError.None, c.ReadReply(back, back.Length).Error);
        Assert.True(back.AsSpan(4096, 100).SequenceEqual(data));
        Assert.True(back.AsSpan(0, 4096).IndexOfAnyExcept((byte)0) < 0 && back.AsSpan(4196).IndexOfAnyExcept((byte)0) < 0);
    }

    [Fact]
    public void ClientsThatAskedForBlockSizesAreStillHeldToThem()
    {
        using var server = new NbdTestServer(("disk", NbdTestServer.Ram(1 << 20), false));
        using NbdRawClient c = NbdRawClient.Connect(server.SocketPath);
        c.Negotiate("disk");
        c.Request(NbdCommand.Write, 0, 1, 4096, 100, new byte[100]);
        Assert.Equal(NbdError.Inval, c.ReadReply([]).Error);
    }

    [Theory]
    [InlineData("pmem", false)]
    [InlineData("pmem", true)]
    [InlineData("ram", false)]
    public async Task ReadModifyWritesOnDifferentConnectionsNeverLoseEachOthersBytes(string kind, bool otherIsAligned)
    {
        // A client without block sizes keeps patching the lower half of four 512-byte blocks while
        // another connection writes the upper half: a second client without block sizes (also
        // read-modify-write) or an aligned client rewriting the whole blocks. Unserialised, a
        // read-modify-write writes back a stale upper half read before the other's write.
        using var scratch = new Scratch();
        IBlockDevice device = kind == "ram" ? NbdTestServer.Ram(1 << 20) : new PmemDevice(PmemNamespace.Open(scratch.NewNamespace(1 << 20)));
        using var server = new NbdTestServer(("disk", device, false));
        // A read-modify-write takes a microsecond here; stretched, an unserialised one loses writes every time.
        server.Registry.Find("disk")!.ReadModifyWriteHook = () => Thread.SpinWait(10_000);
        const int blocks = 2, writes = 512;
        Task<byte[]> lower = Task.Run(() => Writer(server.SocketPath, blocks, writes, 0, 256, seed: 1, aligned: false, checkOwn: !otherIsAligned ? (0, 256) : null));
        Task<byte[]> upper = Task.Run(() => otherIsAligned
            ? Writer(server.SocketPath, blocks, writes, 0, 512, seed: 2, aligned: true, checkOwn: (256, 256))
            : Writer(server.SocketPath, blocks, writes, 256, 256, seed: 2, aligned: false, checkOwn: (256, 256)));
        byte[][] last = await Task.WhenAll(lower, upper);

        using NbdRawClient check = NbdRawClient.Connect(server.SocketPath);
        check.Negotiate("disk");
        byte[] all = new byte[blocks * 512];
        check.Request(NbdCommand.Read, 0, 1, 0, (uint)all.Length);
        Assert.Equal(NbdError.None, check.ReadReply(all, all.Length).Error);
        for (int i = 0; i < blocks; i++)
        {
            Span<byte> lo = all.AsSpan(i * 512, 256), hi = all.AsSpan(i * 512 + 256, 256);
            Assert.True(hi.IndexOfAnyExcept(last[1][i]) < 0, $"block {i}: the upper half is {hi[0]:x2}, not the last value written there ({last[1][i]:x2}): a write was lost");
            // Against whole-block writes, the lower half is whichever of the two last writes to it came last.
            Assert.True(lo.IndexOfAnyExcept(last[0][i]) < 0 || (otherIsAligned && lo.IndexOfAnyExcept(last[1][i]) < 0),
                $"block {i}: the lower half is {lo[0]:x2}, neither last value written there ({last[0][i]:x2}, {last[1][i]:x2})");
        }
    }

    /// <summary>
    /// Writes <paramref name="writes"/> times <paramref name="length"/> bytes at <paramref name="within"/> of block n % blocks,
    /// each write a different byte value, in windows of 64 pipelined requests; returns the last value written to each block.
    /// After each window it reads back <paramref name="checkOwn"/> (offset, length within each block), bytes no other
    /// client may change: they must still hold this client's last values.
    /// </summary>
    private static byte[] Writer(string socket, int blocks, int writes, int within, int length, int seed, bool aligned, (int Offset, int Length)? checkOwn)
    {
        using NbdRawClient c = NbdRawClient.Connect(socket);
        c.Negotiate("disk", blockSizes: aligned);
        byte[] data = new byte[length];
        byte[] last = new byte[blocks];
        for (int n = 0; n < writes; n += 64)
        {
            int window = Math.Min(64, writes - n);
            for (int k = n; k < n + window; k++)
            {
                byte value = (byte)(seed * 101 + k * 7 + 1);
                data.AsSpan().Fill(value);
                last[k % blocks] = value;
                c.Request(NbdCommand.Write, 0, (ulong)k, (ulong)(k % blocks * 512 + within), (uint)length, data);
            }
            for (int k = 0; k < window; k++) Assert.Equal(NbdError.None, c.ReadReply([]).Error);
            if (checkOwn is not (int offset, int count)) continue;
            byte[] back = new byte[blocks * 512];
            c.Request(NbdCommand.Read, 0, ulong.MaxValue, 0, (uint)back.Length);
            Assert.Equal(NbdError.None, c.ReadReply(back, back.Length).Error);
            for (int i = 0; i < blocks; i++)
                Assert.True(back.AsSpan(i * 512 + offset, count).IndexOfAnyExcept(last[i]) < 0,
                    $"after write {n + window}, block {i}: bytes {offset}..{offset + count} changed under another connection's write ({back[i * 512 + offset]:x2}, wrote {last[i]:x2})");
        }
        return last;
    }
}
