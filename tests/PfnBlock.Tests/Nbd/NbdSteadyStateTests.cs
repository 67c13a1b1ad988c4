using PfnBlock.Block;
using PfnBlock.Exports.Nbd;

namespace PfnBlock.Tests.Nbd;

/// <summary>Tests that measure the whole process and so must not run beside other tests.</summary>
[CollectionDefinition(nameof(NbdSerialCollection), DisableParallelization = true)]
public sealed class NbdSerialCollection;

/// <summary>The transmission loop allocates nothing per request once warm.</summary>
[Collection(nameof(NbdSerialCollection))]
public sealed class NbdSteadyStateTests
{
    [Theory]
    [InlineData("pmem")] // reads straight from the device's frames
    [InlineData("pmem spliced")] // the same, handed to the socket by reference (every read is at least 4 KiB)
    [InlineData("ram")]  // reads through bios into chunk frames
    public void RequestsAllocateNothingInSteadyState(string kind)
    {
        string? path = null;
        IBlockDevice dev;
        if (kind.StartsWith("pmem", StringComparison.Ordinal)) (dev, path) = NbdTestServer.Pmem(16 << 20);
        else dev = NbdTestServer.Ram(16 << 20);
        using var server = new NbdTestServer(new NbdServerOptions { SpliceReadBytes = kind == "pmem spliced" ? 4096 : 0 }, ("disk", dev, false));
        if (path is not null) server.DeleteOnDispose(path);
        using NbdRawClient c = NbdRawClient.Connect(server.SocketPath);
        c.Negotiate("disk", structured: true);
        byte[] data = new byte[65536];
        byte[] back = new byte[65536];

        void Run(int rounds)
        {
            // Bounded so that requests and replies in flight fit the socket buffers (the client does not read while it sends).
            const int depth = 8;
            for (int r = 0; r < rounds; r++)
            {
                for (int i = 0; i < depth; i++)
                {
                    ulong offset = (ulong)((r * depth + i) % 256) * 65536;
                    uint length = (uint)(4096 << (i % 3));
                    if ((i & 1) == 0) c.Request(NbdCommand.Write, (i & 2) != 0 ? NbdCommandFlags.Fua : 0, (ulong)i, offset, length, data.AsSpan(0, (int)length));
                    else c.Request(NbdCommand.Read, 0, (ulong)i, offset, length);
                }
                for (int i = 0; i < depth; i++)
                    if (c.ReadReply(back).Error != NbdError.None) throw new InvalidOperationException("request failed");
            }
        }

        Run(500); // warm up: JIT, pools, thread caches
        // The count is process-wide, so the test runner's own work (reporting earlier results) can
        // land in a window; an allocation per request lands in every one. Best of three windows.
        var windows = new List<long>();
        for (int attempt = 0; attempt < 3; attempt++)
        {
            long before = GC.GetTotalAllocatedBytes(precise: true);
            long clientBefore = GC.GetAllocatedBytesForCurrentThread();
            Run(1000);
            long client = GC.GetAllocatedBytesForCurrentThread() - clientBefore;
            // The test's own socket calls allocate on this thread; everything else is the server.
            windows.Add(GC.GetTotalAllocatedBytes(precise: true) - before - client);
            if (windows[^1] < 8000) break;
        }
        // 8000 requests; a single allocation per request would be at least 24 bytes each.
        Assert.True(windows.Min() < 8000, $"{string.Join(", ", windows)} bytes allocated in windows of 8000 requests");
    }
}
