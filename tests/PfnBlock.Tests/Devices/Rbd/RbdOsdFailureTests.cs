using PfnBlock.Block;
using PfnBlock.Devices;
using PfnBlock.Targets.WriteCache;
using PfnBlock.Tests.Nbd;

namespace PfnBlock.Tests.Devices.Rbd;

/// <summary>
/// On a three-OSD cluster with a pool replicated three times (min_size 2), one OSD is SIGKILLed
/// while two stacks write at once: the <c>rbd:</c> device alone, and a <c>writecache</c> over
/// <c>rbd:</c> whose small cache (watermarks 20/5) keeps write-back running, so the kill lands in
/// write-back too. Every request of both still completes without error (librbd resends to the new
/// primary once the monitor marks the OSD down; the cache holds writes meanwhile), write-back goes
/// on after the kill without a failed run, and the images the real rbd CLI exports afterwards hold
/// exactly what was written. One cluster for both stacks: a second kill would leave one replica,
/// below min_size; and all three must be up before the kill (ceph-cluster.sh waits for them, the
/// test checks), or the kill leaves one and every write blocks until librbd's op timeout.
/// </summary>
[Collection(CephCollection.Name)]
public sealed class RbdOsdFailureTests : IDisposable
{
    private const int Size = 8 << 20;
    private readonly string _dir = Directory.CreateTempSubdirectory("pfnblock-rbd-osd-").FullName;
    private readonly string _clusterDir = Path.Combine("/dev/shm", $"pfnblock-ceph-3osd-{Guid.NewGuid():N}"[..32]);
    private readonly Scratch _scratch = new();

    public void Dispose()
    {
        try { CephCluster.Script("stop", _clusterDir); }
        finally
        {
            _scratch.Dispose();
            Directory.Delete(_dir, recursive: true);
        }
    }

    [Fact]
    public void KillingAnOsdMidWorkloadLosesNothingAndFailsNothingAloneOrThroughTheCache()
    {
        string conf = CephCluster.Script("start", _clusterDir, "3").Trim().Split('\n')[^1];
        Assert.Contains("\"num_up_osds\":3,", Tool.Run("ceph", "--conf", conf, "osd", "stat", "-f", "json"));
        Tool.Run("rbd", "--conf", conf, "create", "--size", "8M", "rbd/osdkill");
        Tool.Run("rbd", "--conf", conf, "create", "--size", "8M", "rbd/osdcache");
        var cached = new CachedWriter($"0 {Size >> 9} writecache p rbd:rbd/osdcache,conf={conf} pmem:{_scratch.NewNamespace(1 << 20)} 4096 6 high_watermark 20 low_watermark 5 writeback_jobs 16");
        var cacheThread = new Thread(cached.Run) { IsBackground = true, Name = "osdkill-cache-writer" };
        byte[] model = new byte[Size];
        var rng = new Random(21);
        using (var set = new DeviceSet())
        {
            IBlockDevice dev = set.Open($"rbd:rbd/osdkill,conf={conf}");
            using var buffers = new IoBuffers(dev.AddressSpace);
            cacheThread.Start();
            Assert.True(cached.Started.Wait(TimeSpan.FromSeconds(60)), "the cached stack did not open");
            int killAt = 150, after = 0;
            for (int i = 0; after < 300; i++)
            {
                if (i == killAt)
                {
                    cached.NoteKill();
                    CephCluster.Script("kill-osd", _clusterDir, "1");
                }
                if (i > killAt) after++;
                int sectors = rng.Next(1, 65);
                long sector = rng.NextInt64(0, (Size >> 9) - sectors + 1);
                using IoBuffers.Layout layout = buffers.NewLayout(rng, sectors << 9);
                byte[] data = Stamp.Make(sector << 9, sectors << 9, i + 1);
                layout.Write(data);
                Bio bio = layout.AddTo(new Bio().Init(BioOp.Write, sector, i % 10 == 0 ? BioFlags.Fua : BioFlags.None));
                Assert.Equal(BlockStatus.Ok, dev.SubmitAndWait(bio));
                data.CopyTo(model.AsSpan((int)(sector << 9)));
            }
            Assert.Equal(BlockStatus.Ok, dev.SubmitAndWait(new Bio().Init(BioOp.Flush, 0)));
            cached.Stop();
            cacheThread.Join();
        }
        Assert.Null(cached.Failure);
        // The writes after the kill went on while the cluster saw osd.1 down.
        Assert.DoesNotContain("osd.1", Tool.Run(CephCluster.ScriptPath, "status", _clusterDir));
        Assert.Matches(@"osd\.1 down", Tool.Run("ceph", "--conf", conf, "osd", "dump"));
        Assert.True(Export(conf, "osdkill").AsSpan().SequenceEqual(model), "rbd export after the OSD kill differs from what was written");
        Assert.True(cached.WrittenBackAfterKill > 0, "the cache wrote nothing back between the kill and the end of the workload");
        Assert.True(Export(conf, "osdcache").AsSpan().SequenceEqual(cached.Model), "rbd export of the cached image after the OSD kill differs from what was written");
    }

    private byte[] Export(string conf, string image)
    {
        string exported = Path.Combine(_dir, image + ".img");
        Tool.Run("rbd", "--conf", conf, "export", "--no-progress", "rbd/" + image, exported);
        return File.ReadAllBytes(exported);
    }

    /// <summary>
    /// Writes random 4 KiB-aligned runs through a writecache over rbd: (a FLUSH every eight) until
    /// stopped, then flushes, writes everything back and checks no write-back run failed. Runs on
    /// a dedicated thread; failures are kept for the test thread.
    /// </summary>
    private sealed class CachedWriter(string table)
    {
        private readonly ManualResetEventSlim _stop = new(false);
        private WriteCacheTarget? _cache;
        private long _writtenBackAtKill = -1;

        public readonly ManualResetEventSlim Started = new(false);
        public readonly byte[] Model = new byte[Size];
        public Exception? Failure;
        public long WrittenBackAfterKill;

        public void NoteKill() => Volatile.Write(ref _writtenBackAtKill, _cache?.Status.WrittenBack ?? 0);

        /// <summary>Ends the workload; what was written back between the kill and now was written back during it.</summary>
        public void Stop()
        {
            WrittenBackAfterKill = (_cache?.Status.WrittenBack ?? 0) - Volatile.Read(ref _writtenBackAtKill);
            _stop.Set();
        }

        public void Run()
        {
            try
            {
                string path = Path.Combine(Path.GetTempPath(), $"osdkill-{Guid.NewGuid():N}.table");
                File.WriteAllText(path, table + "\n");
                try
                {
                    using var set = new DeviceSet();
                    var dev = (MappedDevice)set.Open("table:" + path);
                    _cache = (WriteCacheTarget)dev.Table[0].Target;
                    using var buffers = new IoBuffers(dev.AddressSpace);
                    var rng = new Random(22);
                    Started.Set();
                    for (int i = 0; !_stop.IsSet; i++)
                    {
                        int blocks = rng.Next(1, 9);
                        long block = rng.NextInt64(0, (Size >> 12) - blocks + 1);
                        using IoBuffers.Layout layout = buffers.NewLayout(rng, blocks << 12);
                        byte[] data = Stamp.Make(block << 12, blocks << 12, i + 1);
                        layout.Write(data);
                        BlockStatus st = dev.SubmitAndWait(layout.AddTo(new Bio().Init(BioOp.Write, block << 3)));
                        if (st != BlockStatus.Ok) throw new IOException($"cached write {i} failed: {st}");
                        data.CopyTo(Model.AsSpan((int)(block << 12)));
                        if (i % 8 == 7 && dev.SubmitAndWait(new Bio().Init(BioOp.Flush, 0)) is var f && f != BlockStatus.Ok)
                            throw new IOException($"cache flush failed: {f}");
                    }
                    if (dev.SubmitAndWait(new Bio().Init(BioOp.Flush, 0)) is var last && last != BlockStatus.Ok) throw new IOException($"cache flush failed: {last}");
                    if (!_cache.WriteBackAll(TimeSpan.FromSeconds(120))) throw new IOException($"write-back did not finish: {_cache.Status}");
                    WriteCacheStatus s = _cache.Status;
                    if (s.WritebackErrors != 0) throw new IOException($"write-back failed across the OSD kill: {s}");
                }
                finally { File.Delete(path); }
            }
            catch (Exception e) { Failure = e; }
            finally { Started.Set(); }
        }
    }
}
