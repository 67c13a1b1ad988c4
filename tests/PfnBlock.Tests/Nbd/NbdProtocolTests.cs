using System.Buffers.Binary;
using PfnBlock.Block;
using PfnBlock.Exports.Nbd;
using PfnBlock.Memory;

namespace PfnBlock.Tests.Nbd;

/// <summary>Option haggling, request validation and the transmission loop, byte by byte.</summary>
public sealed class NbdProtocolTests
{
    private const long Size = 16 << 20;

    [Fact]
    public void UnknownOptionsGetErrUnsupAndHagglingGoesOn()
    {
        using var server = new NbdTestServer(("disk", NbdTestServer.Ram(Size), false));
        using NbdRawClient c = NbdRawClient.Connect(server.SocketPath);
        c.Greet();
        c.SendOption(4242, [1, 2, 3]);
        Assert.Equal(NbdReply.ErrUnsup, c.ReadOptionReply().Type);
        c.SendOption((uint)NbdOption.StartTls, []);
        Assert.Equal(NbdReply.ErrPolicy, c.ReadOptionReply().Type);
        c.SendOption((uint)NbdOption.Info, NbdRawClient.InfoRequest("nope"));
        Assert.Equal(NbdReply.ErrUnknown, c.ReadOptionReply().Type);
        c.SendOption((uint)NbdOption.List, [0]);
        Assert.Equal(NbdReply.ErrInvalid, c.ReadOptionReply().Type);
        // Metadata contexts need structured replies first.
        c.SendOption((uint)NbdOption.SetMetaContext, NbdRawClient.MetaRequest("disk", NbdProtocol.BaseAllocation));
        Assert.Equal(NbdReply.ErrInvalid, c.ReadOptionReply().Type);
        c.SendOption((uint)NbdOption.StructuredReply, []);
        Assert.Equal(NbdReply.Ack, c.ReadOptionReply().Type);
        c.SendOption((uint)NbdOption.ListMetaContext, NbdRawClient.MetaRequest("disk"));
        (_, NbdReply type, byte[] data) = c.ReadOptionReply();
        Assert.Equal(NbdReply.MetaContext, type);
        Assert.Equal(NbdProtocol.BaseAllocation, System.Text.Encoding.UTF8.GetString(data, 4, data.Length - 4));
        Assert.Equal(NbdReply.Ack, c.ReadOptionReply().Type);
        c.SendOption((uint)NbdOption.Info, NbdRawClient.InfoRequest("disk", NbdInfo.Name, NbdInfo.Description));
        var infos = new List<NbdInfo>();
        while (true)
        {
            (_, type, data) = c.ReadOptionReply();
            if (type == NbdReply.Ack) break;
            infos.Add((NbdInfo)BinaryPrimitives.ReadUInt16BigEndian(data));
        }
        Assert.Equal([NbdInfo.Export, NbdInfo.Name, NbdInfo.Description, NbdInfo.BlockSize], infos);
        c.SendOption((uint)NbdOption.Abort, []);
        Assert.Equal(NbdReply.Ack, c.ReadOptionReply().Type);
        Assert.True(c.ServerClosed());
    }

    [Fact]
    public void ExportNameEntersTransmissionWithOldStyleReply()
    {
        using var server = new NbdTestServer(("disk", NbdTestServer.Ram(Size), false));
        using NbdRawClient c = NbdRawClient.Connect(server.SocketPath);
        c.Greet(NbdClientFlags.FixedNewstyle);
        c.SendOption((uint)NbdOption.ExportName, "disk"u8);
        byte[] reply = new byte[10 + 124];
        c.ReadExactly(reply);
        Assert.Equal((ulong)Size, BinaryPrimitives.ReadUInt64BigEndian(reply));
        Assert.All(reply[10..], b => Assert.Equal(0, b));
        c.Request(NbdCommand.Read, 0, 7, 0, 512);
        Assert.Equal((7UL, NbdError.None, NbdChunkType.None, 512), c.ReadReply(new byte[512], 512));
    }

    [Fact]
    public void BadRequestsGetTheErrorsTheSpecPrescribes()
    {
        using var server = new NbdTestServer(("disk", NbdTestServer.Ram(Size), false));
        using NbdRawClient c = NbdRawClient.Connect(server.SocketPath);
        c.Negotiate("disk", structured: true);
        byte[] buf = new byte[8192];
        NbdError Ask(NbdCommand cmd, NbdCommandFlags flags, ulong offset, uint length, int payload = 0)
        {
            c.Request(cmd, flags, 99, offset, length, buf.AsSpan(0, payload));
            (ulong cookie, NbdError error, _, _) = c.ReadReply(buf);
            Assert.Equal(99UL, cookie);
            return error;
        }
        Assert.Equal(NbdError.NoSpc, Ask(NbdCommand.Write, 0, Size - 512, 1024, 1024));
        Assert.Equal(NbdError.NoSpc, Ask(NbdCommand.WriteZeroes, 0, Size, 512));
        Assert.Equal(NbdError.Inval, Ask(NbdCommand.Read, 0, Size, 512));
        Assert.Equal(NbdError.Inval, Ask(NbdCommand.Read, 0, ulong.MaxValue - 100, 512));
        Assert.Equal(NbdError.Inval, Ask(NbdCommand.Trim, 0, Size - 512, 4096));
        Assert.Equal(NbdError.Inval, Ask(NbdCommand.Read, 0, 100, 512));
        Assert.Equal(NbdError.Inval, Ask(NbdCommand.Write, 0, 0, 100, 100));
        Assert.Equal(NbdError.Inval, Ask(NbdCommand.Read, 0, 0, 64 << 20));
        Assert.Equal(NbdError.Inval, Ask(NbdCommand.Read, 0, 0, 0));
        Assert.Equal(NbdError.Inval, Ask((NbdCommand)42, 0, 0, 512));
        Assert.Equal(NbdError.Inval, Ask(NbdCommand.Read, NbdCommandFlags.Fua, 0, 512));
        Assert.Equal(NbdError.Inval, Ask(NbdCommand.Write, (NbdCommandFlags)0x100, 0, 512, 512));
        Assert.Equal(NbdError.Inval, Ask(NbdCommand.Flush, 0, 0, 512));
        Assert.Equal(NbdError.Inval, Ask(NbdCommand.BlockStatus, 0, 0, 512)); // no meta context selected
        // The connection still works after all that.
        Assert.Equal(NbdError.None, Ask(NbdCommand.Write, NbdCommandFlags.Fua, 4096, 4096, 4096));
        Assert.Equal(NbdError.None, Ask(NbdCommand.WriteZeroes, NbdCommandFlags.NoHole | NbdCommandFlags.FastZero, 0, 4096));
        Assert.Equal(NbdError.None, Ask(NbdCommand.Trim, 0, 8192, 4096));
        Assert.Equal(NbdError.None, Ask(NbdCommand.Cache, 0, 0, 1 << 20));
        Assert.Equal(NbdError.None, Ask(NbdCommand.Flush, 0, 0, 0));
    }

    [Fact]
    public void ReadOnlyExportsRefuseWritesWithEperm()
    {
        using var server = new NbdTestServer(("ro", NbdTestServer.Ram(Size), true));
        using NbdRawClient c = NbdRawClient.Connect(server.SocketPath);
        c.Negotiate("ro");
        Assert.True(c.Flags.HasFlag(NbdTransmissionFlags.ReadOnly));
        byte[] buf = new byte[512];
        c.Request(NbdCommand.Write, 0, 1, 0, 512, buf);
        Assert.Equal(NbdError.Perm, c.ReadReply(buf).Error);
        c.Request(NbdCommand.Trim, 0, 2, 0, 512);
        Assert.Equal(NbdError.Perm, c.ReadReply(buf).Error);
        c.Request(NbdCommand.WriteZeroes, 0, 3, 0, 512);
        Assert.Equal(NbdError.Perm, c.ReadReply(buf).Error);
        c.Request(NbdCommand.Read, 0, 4, 0, 512);
        Assert.Equal(NbdError.None, c.ReadReply(buf, 512).Error);
    }

    [Fact]
    public void BlockStatusReportsOneDataExtentWithoutAnAllocationMap()
    {
        using var server = new NbdTestServer(("disk", new PfnBlock.Devices.Null.NullDevice(Size), false));
        using NbdRawClient c = NbdRawClient.Connect(server.SocketPath);
        c.Negotiate("disk", structured: true, baseAllocation: true);
        byte[] buf = new byte[64];
        c.Request(NbdCommand.BlockStatus, NbdCommandFlags.ReqOne, 5, 4096, 1 << 20);
        (ulong cookie, NbdError error, NbdChunkType chunk, int n) = c.ReadReply(buf);
        Assert.Equal((5UL, NbdError.None, NbdChunkType.BlockStatus, 12), (cookie, error, chunk, n));
        Assert.Equal(NbdProtocol.BaseAllocationId, BinaryPrimitives.ReadUInt32BigEndian(buf));
        Assert.Equal(1u << 20, BinaryPrimitives.ReadUInt32BigEndian(buf.AsSpan(4)));
        Assert.Equal(0u, BinaryPrimitives.ReadUInt32BigEndian(buf.AsSpan(8)));
    }

    [Fact]
    public void BadMagicDisconnectsThatClientOnly()
    {
        using var server = new NbdTestServer(("disk", NbdTestServer.Ram(Size), false));
        using NbdRawClient good = NbdRawClient.Connect(server.SocketPath);
        good.Negotiate("disk");
        using NbdRawClient bad = NbdRawClient.Connect(server.SocketPath);
        bad.Negotiate("disk");
        bad.Send(new byte[28]);
        Assert.True(bad.ServerClosed());
        byte[] buf = new byte[4096];
        good.Request(NbdCommand.Read, 0, 1, 0, 4096);
        Assert.Equal(NbdError.None, good.ReadReply(buf, 4096).Error);
    }

    [Fact]
    public void TooManyConnectionsAreRefusedAtAccept()
    {
        using var server = new NbdTestServer(new NbdServerOptions { MaxConnections = 1 }, ("disk", NbdTestServer.Ram(Size), false));
        using NbdRawClient first = NbdRawClient.Connect(server.SocketPath);
        first.Negotiate("disk");
        using NbdRawClient second = NbdRawClient.Connect(server.SocketPath);
        Assert.True(second.ServerClosed());
    }

    [Fact]
    public void PipelinedRequestsOnAnAsynchronousDeviceAllGetTheirReplies()
    {
        using var server = new NbdTestServer(("slow", new DelayedDevice(NbdTestServer.Ram(Size)), false));
        using NbdRawClient c = NbdRawClient.Connect(server.SocketPath);
        c.Negotiate("slow", structured: true);
        const int n = 200; // more than the 128 slots: the reader must wait for completions
        byte[] data = new byte[4096];
        for (int i = 0; i < n; i++)
        {
            data.AsSpan().Fill((byte)i);
            c.Request(NbdCommand.Write, 0, (ulong)i, (ulong)i * 4096, 4096, data);
        }
        var seen = new HashSet<ulong>();
        for (int i = 0; i < n; i++)
        {
            (ulong cookie, NbdError error, _, _) = c.ReadReply(data);
            Assert.Equal(NbdError.None, error);
            Assert.True(seen.Add(cookie));
        }
        for (int i = 0; i < n; i++) c.Request(NbdCommand.Read, 0, (ulong)(1000 + i), (ulong)i * 4096, 4096);
        bool outOfOrder = false;
        for (int i = 0; i < n; i++)
        {
            (ulong cookie, NbdError error, _, int len) = c.ReadReply(data);
            Assert.Equal(NbdError.None, error);
            Assert.Equal(4096, len);
            int index = (int)cookie - 1000;
            outOfOrder |= index != i;
            Assert.All(data, b => Assert.Equal((byte)index, b));
        }
        Assert.True(outOfOrder, "replies of an asynchronous device should not all arrive in request order");
    }

    [Fact]
    public void StopDrainsConnectionsAndCountsRequests()
    {
        var server = new NbdTestServer(("disk", NbdTestServer.Ram(Size), false));
        try
        {
            using NbdRawClient c = NbdRawClient.Connect(server.SocketPath);
            c.Negotiate("disk");
            byte[] buf = new byte[4096];
            c.Request(NbdCommand.Write, 0, 1, 0, 4096, buf);
            Assert.Equal(NbdError.None, c.ReadReply(buf).Error);
            Assert.True(server.Server.Stop(TimeSpan.FromSeconds(10)));
            Assert.True(c.ServerClosed());
            Assert.Equal(0, server.Server.ActiveConnections);
            NbdStatsSnapshot stats = server.Registry.Find("disk")!.Stats.Snapshot();
            Assert.Equal(1, stats.Count(NbdCommand.Write));
            Assert.Equal(4096, stats.BytesWritten);
            Assert.Contains("write 1", stats.ToString());
        }
        finally { server.Dispose(); }
    }

    /// <summary>Completes every bio on the thread pool after a random short delay, in no particular order.</summary>
    private sealed class DelayedDevice(IBlockDevice inner) : IBlockDevice
    {
        public string Name => "delayed";
        public long CapacitySectors => inner.CapacitySectors;
        public DeviceLimits Limits => inner.Limits;
        public DeviceFeatures Features => inner.Features & ~DeviceFeatures.Synchronous;
        public DiskStats Stats => inner.Stats;
        public PhysicalAddressSpace AddressSpace => inner.AddressSpace;
        public string Description => "delays every bio on the thread pool";
        public void Submit(Bio bio) => ThreadPool.UnsafeQueueUserWorkItem(_ =>
        {
            Thread.Sleep(Random.Shared.Next(3));
            inner.Submit(bio);
        }, null);
        public void Dispose() => inner.Dispose();
    }
}
