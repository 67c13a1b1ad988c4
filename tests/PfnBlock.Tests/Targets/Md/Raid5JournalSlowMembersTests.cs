using CsCheck;
using PfnBlock.Block;
using PfnBlock.Devices;
using PfnBlock.Targets.Md;

namespace PfnBlock.Tests.Targets.Md;

/// <summary>
/// The write-back journal over members that do not complete on the submitting thread (files
/// through the file device, as disks would be): many write-out workers, each running its stripe
/// writes on its own thread and buffers, so several stripes are written out at once — and each
/// stripe's records still reach the members in log order. (Before, over such members every
/// write-out and every append ran on the target's one worker thread: an append waiting there for
/// room in a full log kept the write-outs that would make room from ever running, and the array
/// hung. This test's 1 MiB log fills many times over in every sample.)
/// </summary>
public sealed class Raid5JournalSlowMembersTests : IDisposable
{
    private const long Chunk = 16 << 10;
    private const int StripeBytes = 3 * (int)Chunk; // four members: three data chunks a stripe
    private readonly MdHarness _h = new();

    public void Dispose() => _h.Dispose();

    /// <summary>Four file members (16 MiB each) and a pmem journal of <paramref name="journalBytes"/>, formatted as a write-back journalled RAID5.</summary>
    private (string[] Members, string Journal) NewArray(long journalBytes)
    {
        string[] m = [.. Enumerable.Range(0, 4).Select(i => "file:" + _h.Scratch.NewSizedFile(Support.Scratch.Directory, 16 << 20, $"slow{i}"))];
        string j = "pmem:" + _h.Scratch.NewNamespace(journalBytes);
        using var set = new DeviceSet();
        MdCreate.Create(m, new MdCreateOptions { Level = 5, ChunkBytes = Chunk, BitmapChunkBytes = 256 << 10, Name = "slow", Journal = j, JournalMode = Raid5JournalMode.WriteBack }, set);
        return (m, j);
    }

    private static void WaitWrittenOut(Raid5Journal j)
    {
        j.PauseWriteOut = false;
        j.WakeWriteOut();
        Assert.True(SpinWait.SpinUntil(() => j.Pending == 0 || j.Failed, TimeSpan.FromSeconds(60)), $"{j.Pending} record(s) were never written out");
    }

    /// <summary>
    /// Any writes over sixteen stripes with a log small enough that the workers write out while
    /// the writes go on: reads equal the model all along; the workers are
    /// <see cref="Raid5Journal.SlowMemberWriteOutWorkers"/>, and more than one stripe write-out
    /// ran at once; in the log each stripe's parity records cover its data records in order (each
    /// covers more than the one before it); a crash with the log as it is replays to the model,
    /// and the parity checks clean once everything is written out.
    /// </summary>
    [Fact]
    public void ManyStripesInFlightKeepEachStripesLogOrder()
    {
        (string[] m, string j) = NewArray(1 << 20);
        const int Stripes = 16, Area = Stripes * StripeBytes;
        int maxInFlight = 0;
        var writes = Gen.Select(Gen.Int[0, Area / 512 - 1], Gen.Int[1, 24]).Array[200, 400];
        Gen.Select(writes, Gen.Int[1, 1000]).Sample((ops, seed) =>
        {
            _h.Reopen();
            IBlockDevice md = _h.Open(MdHarness.JournalSpec(m, j));
            MdArray array = MdArray.Of(md)!;
            Raid5Journal journal = array.Journal!;
            Raid5Target target = (Raid5Target)((MappedDevice)md).Table[0].Target;
            Assert.Equal(Raid5Journal.SlowMemberWriteOutWorkers, journal.WriteOutWorkers);
            var model = _h.Read(md, 0, Area); // the array starts from what the last sample left
            for (int i = 0; i < ops.Length; i++)
            {
                (int sector, int sectors) = ops[i];
                _h.WriteToModel(md, model, sector * 512, Math.Min(sectors, Area / 512 - sector) * 512, seed + i);
                if (i % 50 == 0) _h.AssertModel(md, model, 0, Area, array);
            }
            _h.AssertModel(md, model, 0, Area, array);
            Assert.False(journal.Failed);
            maxInFlight = Math.Max(maxInFlight, target.MaxWriteOutsInFlight);

            // The crash: the log as it is, the array dirty.
            journal.LeaveLogOnStop = true;
            _h.Reopen();
            _h.AssertParityRecordsInLogOrder(j);
            _h.MarkDirty(m);
            _h.Reopen();
            md = _h.Open(MdHarness.JournalSpec(m, j));
            array = MdArray.Of(md)!;
            _h.AssertModel(md, model, 0, Area, array);
            WaitWrittenOut(array.Journal!);
            _h.AssertModel(md, model, 0, Area, array);
            array.StartCheck();
            Assert.True(array.WaitForSync(TimeSpan.FromSeconds(60)));
            Assert.Equal(0, array.MismatchCount);
        }, iter: 4, threads: 1);
        Assert.True(maxInFlight > 1, $"no two stripe write-outs ever ran at once (at most {maxInFlight})");
    }
}
