using System.Security.Cryptography;
using PfnBlock.Block;
using PfnBlock.Devices.DirectFile;
using PfnBlock.Devices.Pmem;
using PfnBlock.Exports.Copy;
using PfnBlock.Memory;

namespace PfnBlock.Tests.Copy;

/// <summary>
/// The copy's polled chunks (<see cref="DeviceCopyOptions.Poll"/>, <c>--poll</c>): with an
/// O_DIRECT file on io_uring the copy's own thread reaps every chunk (a poll queue of its own, no
/// ring-thread completion), both ways, and still round-trips byte for byte; without polling (the default), or
/// with an engine that cannot poll, the file's thread completes them and the copy still finishes;
/// and the copy allocates nothing per chunk.
/// </summary>
public sealed partial class DeviceCopyTests
{
    [Fact]
    public void Poll_TheCopysThreadReapsEveryChunkOfAnIoUringFileBothWays()
    {
        string src = RandomFile(Size, 21);
        string dst = _scratch.NewSizedFile("/var/tmp", Size, "dst");
        FileDevice file = OpenFile(src), back = OpenFile(dst);
        PmemDevice pmem = Namespace(DescriptorMapKind.None);
        var options = new DeviceCopyOptions { Size = Size, BlockSize = Bs, QueueDepth = 3, Poll = true };

        DeviceCopyResult r = new DeviceCopy(file, pmem, options).Run();
        Assert.Equal((Size, Size, Size, 0L), (r.Bytes, r.PinnedBytes, r.PolledBytes, r.CpuCopiedBytes));
        Assert.Equal(1, Engine(file).PollQueueCount);
        r = new DeviceCopy(pmem, back, options).Run();
        Assert.Equal((Size, Size, Size), (r.Bytes, r.PinnedBytes, r.PolledBytes));
        Assert.Equal(1, Engine(back).PollQueueCount);
        Assert.False(BlockPoll.IsPolling);
        Assert.False(pmem.Pins.AnyPinned);
        _set.Dispose();
        Assert.Equal(SHA256.HashData(File.ReadAllBytes(src)), SHA256.HashData(File.ReadAllBytes(dst)));
    }

    [Fact]
    public void Poll_OffByDefaultTheFilesRingThreadCompletesTheChunks()
    {
        string src = RandomFile(Size, 22);
        FileDevice file = OpenFile(src);
        PmemDevice pmem = Namespace(DescriptorMapKind.None);
        DeviceCopyResult r = new DeviceCopy(file, pmem, new DeviceCopyOptions { Size = Size, BlockSize = Bs }).Run();
        Assert.Equal((Size, Size, 0L), (r.Bytes, r.PinnedBytes, r.PolledBytes));
        Assert.Equal(0, Engine(file).PollQueueCount);
        Assert.True(Holds(pmem, File.ReadAllBytes(src)));
    }

    [Fact]
    public void Poll_AnEngineThatCannotPollCompletesTheChunksOnItsOwnThreads()
    {
        // A file on tmpfs takes the thread-pool engine: polled bios complete on its workers, and
        // the copy waits for their events instead of polling.
        string src = _scratch.NewSizedFile("/dev/shm", Size, "src");
        byte[] bytes = new byte[Size];
        new Random(23).NextBytes(bytes);
        File.WriteAllBytes(src, bytes);
        FileDevice file = OpenFile(src);
        Assert.IsType<ThreadPoolEngine>(file.EngineForTests);
        PmemDevice pmem = Namespace(DescriptorMapKind.None);
        DeviceCopyResult r = new DeviceCopy(file, pmem, new DeviceCopyOptions { Size = Size, BlockSize = Bs, Poll = true }).Run();
        Assert.Equal((Size, Size, 0L), (r.Bytes, r.PinnedBytes, r.PolledBytes));
        Assert.False(BlockPoll.IsPolling);
        Assert.True(Holds(pmem, bytes));
    }

    [Fact]
    public void Poll_TheCopyAllocatesNothingPerChunk()
    {
        // Everything per chunk runs on this thread when it polls (pin, submit, reap, persist,
        // unpin), so this thread's allocations are the copy's: the same for 12 chunks as for 48.
        FileDevice file = OpenFile(RandomFile(Size, 24));
        PmemDevice pmem = Namespace(DescriptorMapKind.None);
        long Allocated(int bs)
        {
            var copy = new DeviceCopy(file, pmem, new DeviceCopyOptions { Size = Size, BlockSize = bs, QueueDepth = 4, Poll = true });
            long before = GC.GetAllocatedBytesForCurrentThread();
            DeviceCopyResult r = copy.Run();
            long allocated = GC.GetAllocatedBytesForCurrentThread() - before;
            Assert.Equal(Size, r.PolledBytes);
            return allocated;
        }
        Allocated(Bs); // the first run opens this thread's poll queue and JIT-compiles the loop
        Allocated(Bs / 4);
        // 36 chunks more; the smallest object is 24 bytes, so one allocation per chunk would add
        // at least 864. What the two runs differ by otherwise is a few bytes either way.
        long extra = Allocated(Bs / 4) - Allocated(Bs);
        Assert.InRange(extra, -36 * 8, 36 * 8);
    }
}
