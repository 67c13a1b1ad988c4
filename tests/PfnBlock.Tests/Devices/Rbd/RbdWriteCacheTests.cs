using System.Text.Json.Nodes;
using PfnBlock.Block;
using PfnBlock.Devices;
using PfnBlock.Devices.Rbd;
using PfnBlock.Targets.WriteCache;
using PfnBlock.Tests.Nbd;

namespace PfnBlock.Tests.Devices.Rbd;

/// <summary>
/// A pmem <c>writecache</c> in front of an <c>rbd:</c> image, served by <c>pfnblock serve</c> as a
/// separate process: real NBD clients write through it, the cache is written back on demand
/// (<c>pfnblock ctl writecache … writeback</c>), and Ceph's own <c>rbd export</c> reads the image.
/// The cache holds the image's exclusive lock, records the image's identity (a cache is refused in
/// front of another image) and survives SIGKILLs of the serving process during writes and write-back.
/// </summary>
[Collection(CephCollection.Name)]
public sealed class RbdWriteCacheTests(CephCluster cluster) : IDisposable
{
    private const int BlockSize = FlushedWriteWriter.BlockSize;
    private readonly string _dir = Directory.CreateTempSubdirectory("pfnblock-rbdwc-").FullName;
    private readonly Scratch _scratch = new();

    public void Dispose()
    {
        _scratch.Dispose();
        Directory.Delete(_dir, recursive: true);
    }

    private static string Uri(ServeProcess s) => $"nbd://127.0.0.1:{s.TcpPort}/disk";

    /// <summary>A table file mapping all of <paramref name="image"/> through a writecache on <paramref name="cache"/>; its <c>table:</c> spec.</summary>
    private string Table(string image, long bytes, string cache, string rbdOptions = "lock-wait=30", string cacheArgs = "0")
    {
        string path = Path.Combine(_dir, $"{image}-{Path.GetFileName(cache)}.table");
        File.WriteAllText(path, $"0 {bytes >> 9} writecache p {cluster.Spec(image, rbdOptions)} pmem:{cache} 4096 {cacheArgs}\n");
        return "table:" + path;
    }

    private static ServeProcess Serve(string table, string control) =>
        ServeProcess.Start("--export", "disk=" + table, "--listen", "tcp:127.0.0.1:0", "--control", control);

    /// <summary>Runs <c>pfnblock ctl writecache ARGS --control CONTROL --json</c>; fails the test if it fails.</summary>
    private static JsonNode Ctl(string control, params string[] args)
    {
        (int exit, string stdout, string stderr) = ChildProcess.Run(ChildProcess.CliDll, ["ctl", "writecache", .. args, "--control", control, "--json"]);
        Assert.True(exit == 0, $"ctl writecache {string.Join(' ', args)} failed ({exit}): {stderr}");
        return JsonNode.Parse(stdout)!;
    }

    /// <summary>Writes everything in the served cache back to the image (the reply comes when it is done); its status then.</summary>
    private static JsonNode WriteBackAll(string control)
    {
        string device = Ctl(control).AsArray().Single()!["device"]!.GetValue<string>();
        JsonNode status = Ctl(control, device, "writeback");
        Assert.Equal(0, status["used"]!.GetValue<long>());
        return status;
    }

    [Fact]
    public void QemuImgAndNbdcopyThroughTheCacheThenWritebackAndRbdExportAgrees()
    {
        const long size = 16 << 20;
        string image = cluster.NewImage(size);
        string table = Table(image, size, _scratch.NewNamespace(48 << 20));
        string control = Path.Combine(_dir, "ctl.sock");
        string src = Tool.RandomFile(_dir, size, seed: 5);
        string back = Path.Combine(_dir, "back.img");
        using (ServeProcess server = Serve(table, control))
        {
            string uri = Uri(server);
            Assert.Contains("\"virtual-size\": " + size, Tool.Run("qemu-img", "info", "--output=json", uri));
            Tool.Run("qemu-img", "convert", "-n", "-f", "raw", "-O", "raw", src, uri);
            Tool.Run("qemu-img", "compare", "-f", "raw", "-F", "raw", src, uri);
            Tool.Run("nbdcopy", uri, back);
            // Below the high watermark nothing is written back yet: the cache holds the data.
            Assert.True(Ctl(control).AsArray().Single()!["dirty"]!.GetValue<long>() > 0);
            server.Terminate();
        }
        Assert.Equal(Tool.Sha256(src, size), Tool.Sha256(back, size));

        // A new server replays the cache; writing it back makes the image whole, as Ceph's own client reads it.
        using (ServeProcess server = Serve(table, control))
        {
            Assert.True(WriteBackAll(control)["written_back"]!.GetValue<long>() > 0);
            server.Terminate();
        }
        string exported = Path.Combine(_dir, "exported.img");
        cluster.Rbd("export", "--no-progress", "rbd/" + image, exported);
        Assert.Equal(Tool.Sha256(src, size), Tool.Sha256(exported, size));
    }

    [Fact]
    public void ASecondServeOfTheImageBehindAnotherCacheIsRefused()
    {
        const long size = 16 << 20;
        string image = cluster.NewImage(size);
        string control = Path.Combine(_dir, "first.sock");
        using ServeProcess first = Serve(Table(image, size, _scratch.NewNamespace(8 << 20)), control);
        using ServeProcess second = ServeProcess.Launch("--export", "disk=" + Table(image, size, _scratch.NewNamespace(8 << 20), "lock-wait=2"),
            "--listen", "tcp:127.0.0.1:0", "--control", Path.Combine(_dir, "second.sock"));
        Assert.True(second.WaitForExit(TimeSpan.FromSeconds(60)), "the second serve did not give up");
        Assert.NotEqual(0, second.Process.ExitCode);
        Assert.Contains("locked by another client", second.Error);
        // The first keeps its lock: it still writes through its cache to the image.
        string src = Tool.RandomFile(_dir, 1 << 20, seed: 6);
        Tool.Run("qemu-img", "convert", "-n", "-f", "raw", "-O", "raw", src, Uri(first));
        WriteBackAll(control);
        Assert.True(cluster.Export(image, _dir).AsSpan(0, 1 << 20).SequenceEqual(File.ReadAllBytes(src)));
    }

    [Fact]
    public void TheCacheRecordsTheImageItCachesAndLibrbdsRamCacheIsOff()
    {
        const long size = 8 << 20;
        string a = cluster.NewImage(size), b = cluster.NewImage(size);
        string cache = _scratch.NewNamespace(8 << 20);
        byte[] data = Stamp.Make(0, BlockSize, 3);
        using (var set = new DeviceSet())
        {
            var dev = (MappedDevice)set.Open(Table(a, size, cache));
            var wc = (WriteCacheTarget)dev.Table[0].Target;
            var rbd = Assert.IsType<RbdDevice>(wc.Devices[0]);
            Assert.False(rbd.Options.Cache, "librbd's RAM cache must be off under a pmem cache");
            Assert.True(rbd.HoldsLock);
            Assert.Contains("librbd cache off", rbd.Description);
            wc.PauseWriteback();
            Write(dev, 0, data);
        }

        // Another image of the same size and pool: refused, naming the reason.
        using (var set = new DeviceSet())
        {
            Exception e = Assert.ThrowsAny<Exception>(() => set.Open(Table(b, size, cache)));
            Assert.Contains("another origin", e.ToString());
        }

        // The same image renamed is still the same image (its id did not change): the cache opens
        // and still holds the write the image has not seen.
        cluster.Rbd("rename", "rbd/" + a, "rbd/" + a + "r");
        using (var set = new DeviceSet())
        {
            var dev = (MappedDevice)set.Open(Table(a + "r", size, cache));
            Assert.Equal(data, Read(dev, 0));
        }
    }

    /// <summary>
    /// ≥ 10 SIGKILLs of <c>serve</c> of a writecache over <c>rbd:</c> while a client writes and
    /// flushes (PFNBLOCK_RBDCACHE_KILLS raises it; scripts/rbd-crash-soak.sh cache runs 50). The cache
    /// is small (watermarks 20/5), so write-back to the image runs during most writes and kills land
    /// in it. After each kill the image's next server replays the cache, writes it all back, and
    /// <c>rbd export</c> must hold every write acknowledged before an acknowledged flush, and every
    /// other written block either its old or its new contents. Three images (each with its cache)
    /// rotate, so by a restart the killed holder's watch has expired and its lock can be broken.
    /// </summary>
    [Fact]
    public void SigkillDuringWritesAndWritebackNeverLosesAnAcknowledgedFlushedWrite()
    {
        int kills = int.TryParse(Environment.GetEnvironmentVariable("PFNBLOCK_RBDCACHE_KILLS"), out int k) && k > 0 ? k : 10;
        const long size = 16 << 20;
        const int blocks = (int)(size / BlockSize);
        const int n = 3;
        var tables = new string[n];
        var controls = new string[n];
        var images = new string[n];
        var durable = new int[n][];
        var killed = new FlushedWriteWriter?[n];
        for (int i = 0; i < n; i++)
        {
            images[i] = cluster.NewImage(size);
            tables[i] = Table(images[i], size, _scratch.NewNamespace(1 << 20), cacheArgs: "6 high_watermark 20 low_watermark 5 writeback_jobs 16");
            controls[i] = Path.Combine(_dir, $"ctl{i}.sock");
            durable[i] = new int[blocks];
        }
        var rng = new Random(8);
        int totalFlushed = 0;
        long writtenBack = 0;

        // Replays the image's cache in a new server, writes it back and checks the killed writer's acknowledged writes.
        ServeProcess Restart(int i)
        {
            ServeProcess server = Serve(tables[i], controls[i]);
            if (killed[i] is { } w)
            {
                JsonNode status = WriteBackAll(controls[i]);
                writtenBack += status["written_back"]!.GetValue<long>();
                totalFlushed += w.Check(cluster.Export(images[i], _dir), durable[i], $"kill {w.Round}");
            }
            return server;
        }

        for (int round = 1; round <= kills; round++)
        {
            int i = round % n;
            using ServeProcess server = Restart(i);
            var writer = new FlushedWriteWriter(server.TcpPort, round, rng.Next(), blocks);
            var thread = new Thread(writer.Run) { IsBackground = true, Name = "rbdcache-crash-writer" };
            thread.Start();
            SpinWait.SpinUntil(() => Volatile.Read(ref writer.FlushedCount) > 0 || writer.Failure is not null, TimeSpan.FromSeconds(60));
            Assert.Null(writer.Failure);
            Thread.Sleep(rng.Next(100, 800));
            server.Kill();
            thread.Join();
            killed[i] = writer;
        }
        for (int i = 0; i < n; i++)
        {
            if (killed[i] is null) continue;
            using ServeProcess server = Restart(i);
            server.Terminate();
        }
        Assert.True(totalFlushed >= kills * 8, "the writers barely wrote");
        Assert.True(writtenBack > 0, "the restarted caches had nothing to write back: the kills never left data in a cache");
    }

    /// <summary>
    /// The cluster goes away under a cache (a private one-OSD cluster whose OSD is SIGKILLed): writes
    /// acknowledged into the cache stay readable through it, write-back fails after the OSD request
    /// timeout and is reported (and retried), and the cache keeps every block, as <c>pfnblock check</c>
    /// of the cache device shows after the server is killed.
    /// </summary>
    [Fact]
    public void AClusterThatDiesUnderTheCacheFailsWritebackAndTheCacheKeepsTheData()
    {
        const long size = 4 << 20;
        string dir = Path.Combine("/dev/shm", $"pfnblock-rbdwc-dead-{Guid.NewGuid():N}"[..32]);
        string conf = CephCluster.Script("start", dir).Trim().Split('\n')[^1];
        try
        {
            string image = $"dead{Environment.ProcessId}";
            Tool.Run("rbd", "--conf", conf, "create", "--size", "4M", "rbd/" + image);
            string cache = _scratch.NewNamespace(16 << 20);
            string table = Path.Combine(_dir, "dead.table");
            File.WriteAllText(table, $"0 {size >> 9} writecache p rbd:rbd/{image},conf={conf},op-timeout=2,lock-wait=5 pmem:{cache} 4096 2 max_age 200\n");
            string control = Path.Combine(_dir, "dead.sock");
            string src = Tool.RandomFile(_dir, size, seed: 9);
            using ServeProcess server = Serve("table:" + table, control);
            string device = Ctl(control).AsArray().Single()!["device"]!.GetValue<string>();
            Ctl(control, device, "pause");
            Tool.Run("qemu-img", "convert", "-n", "-f", "raw", "-O", "raw", src, Uri(server)); // ends with a flush: acknowledged as durable
            CephCluster.Script("kill-osd", dir, "0");
            Ctl(control, device, "resume");
            JsonNode status = Ctl(control, device);
            // Data older than max_age is written back: the first attempt fails after op-timeout.
            for (int i = 0; i < 60 && status["writeback_errors"]!.GetValue<long>() == 0; i++)
            {
                Thread.Sleep(500);
                status = Ctl(control, device);
            }
            Assert.True(status["writeback_errors"]!.GetValue<long>() > 0, $"write-back to a dead cluster reported no error: {status}");
            Assert.Equal(size / BlockSize, status["dirty"]!.GetValue<long>());
            // Every block is in the cache, so reads never reach the dead cluster.
            Tool.Run("qemu-img", "compare", "-f", "raw", "-F", "raw", src, Uri(server));
            server.Kill();
            (int exit, string report, string err) = ChildProcess.Run(ChildProcess.CliDll, ["check", "--path", cache]);
            Assert.True(exit == 0, $"check of the cache failed ({exit}): {err}{report}");
            Assert.Contains($"of {size / BlockSize} distinct blocks", report);
        }
        finally
        {
            CephCluster.Script("stop", dir);
        }
    }

    /// <summary>
    /// Another host takes the image over: the cluster blocklists the cache's client (what
    /// <c>rbd lock rm</c> or a failover's lock break does). With write-back paused, so nothing of the
    /// cache's own reaches the cluster, the cache still notices (its owner probe gets EBLOCKLISTED),
    /// says so in <c>ctl writecache</c> status and on stderr, fails the next write with EIO at once (the
    /// cache has room: no stall_timeout involved), keeps serving the cached data, and after a SIGKILL
    /// <c>pfnblock check</c> shows every acknowledged block still in the cache to be replayed.
    /// </summary>
    [Fact]
    public void ABlocklistedCacheFailsNewWritesAtOnceAndKeepsEveryCachedWrite()
    {
        const long size = 1 << 20;
        string image = cluster.NewImage(size);
        string cache = _scratch.NewNamespace(16 << 20);
        string control = Path.Combine(_dir, "bl.sock");
        string src = Tool.RandomFile(_dir, size, seed: 12);
        using ServeProcess server = Serve(Table(image, size, cache), control);
        string device = Ctl(control).AsArray().Single()!["device"]!.GetValue<string>();
        Ctl(control, device, "pause");
        Tool.Run("qemu-img", "convert", "-n", "-f", "raw", "-O", "raw", src, Uri(server)); // ends with an acknowledged flush
        string address = JsonNode.Parse(cluster.Rbd("status", "--format", "json", "rbd/" + image))!["watchers"]![0]!["address"]!.GetValue<string>();
        Tool.Run("ceph", "--conf", cluster.ConfPath, "osd", "blocklist", "add", address);
        try
        {
            JsonNode status = Ctl(control, device);
            for (int i = 0; i < 60 && status["lost"] is null; i++)
            {
                Thread.Sleep(250);
                status = Ctl(control, device);
            }
            Assert.Contains("blocklisted", status["lost"]?.GetValue<string>() ?? $"not lost: {status}");
            Assert.Equal(size / BlockSize, status["dirty"]!.GetValue<long>());
            (int exit, _, string err) = Tool.RunAllowingFailure("qemu-img", "convert", "-n", "-f", "raw", "-O", "raw", src, Uri(server));
            Assert.NotEqual(0, exit);
            Assert.Contains("Input/output error", err);
            // Cached reads never reach the cluster: the client still reads what it wrote.
            Tool.Run("qemu-img", "compare", "-f", "raw", "-F", "raw", src, Uri(server));
            Assert.Equal(size / BlockSize, Ctl(control, device)["dirty"]!.GetValue<long>());
            server.Kill();
            Assert.Contains("is lost to this host", server.Error);
            (int checkExit, string report, string checkErr) = ChildProcess.Run(ChildProcess.CliDll, ["check", "--path", cache]);
            Assert.True(checkExit == 0, $"check of the cache failed ({checkExit}): {checkErr}{report}");
            Assert.Contains($"of {size / BlockSize} distinct blocks", report);
        }
        finally
        {
            Tool.Run("ceph", "--conf", cluster.ConfPath, "osd", "blocklist", "rm", address);
        }
    }

    private static void Write(IBlockDevice dev, long block, byte[] data)
    {
        using var buffers = new IoBuffers(dev.AddressSpace, 1 << 20);
        using IoBuffers.Layout layout = buffers.Single(data.Length);
        layout.Write(data);
        Assert.Equal(BlockStatus.Ok, dev.SubmitAndWait(layout.AddTo(new Bio().Init(BioOp.Write, block * 8, BioFlags.Fua))));
    }

    private static byte[] Read(IBlockDevice dev, long block)
    {
        using var buffers = new IoBuffers(dev.AddressSpace, 1 << 20);
        using IoBuffers.Layout layout = buffers.Single(BlockSize);
        Assert.Equal(BlockStatus.Ok, dev.SubmitAndWait(layout.AddTo(new Bio().Init(BioOp.Read, block * 8))));
        return layout.Read();
    }
}
