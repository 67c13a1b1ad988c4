using PfnBlock.Tests.Nbd;

namespace PfnBlock.Tests.Devices.Rbd;

/// <summary>
/// <c>pfnblock serve rbd:…</c> as a separate process, driven by real NBD clients (qemu-img,
/// nbdcopy) and checked with the real rbd CLI; a second serve of the same image is refused; and
/// SIGKILLs of the server mid-write never lose an acknowledged flushed write.
/// </summary>
[Collection(CephCollection.Name)]
public sealed class RbdServeTests(CephCluster cluster) : IDisposable
{
    private const int BlockSize = FlushedWriteWriter.BlockSize;
    private readonly string _dir = Directory.CreateTempSubdirectory("pfnblock-rbd-serve-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private static string Uri(ServeProcess s) => $"nbd://127.0.0.1:{s.TcpPort}/disk";

    [Fact]
    public void QemuImgAndNbdcopyRoundTripAndRbdExportAgrees()
    {
        const long size = 16 << 20;
        string image = cluster.NewImage(size);
        string src = Tool.RandomFile(_dir, size, seed: 3);
        string back = Path.Combine(_dir, "back.img");
        using (ServeProcess server = ServeProcess.Start("--export", "disk=" + cluster.Spec(image), "--listen", "tcp:127.0.0.1:0"))
        {
            string uri = Uri(server);
            Assert.Contains("\"virtual-size\": " + size, Tool.Run("qemu-img", "info", "--output=json", uri));
            Tool.Run("qemu-img", "convert", "-n", "-f", "raw", "-O", "raw", src, uri);
            Tool.Run("qemu-img", "compare", "-f", "raw", "-F", "raw", src, uri);
            Tool.Run("nbdcopy", uri, back);
            server.Terminate();
        }
        Assert.Equal(Tool.Sha256(src, size), Tool.Sha256(back, size));
        // Read back by Ceph's own client, not through PfnBlock.
        string exported = Path.Combine(_dir, "exported.img");
        cluster.Rbd("export", "--no-progress", "rbd/" + image, exported);
        Assert.Equal(Tool.Sha256(src, size), Tool.Sha256(exported, size));
    }

    [Fact]
    public void ASecondServeOfTheSameImageIsRefusedWhileTheFirstKeepsServing()
    {
        string image = cluster.NewImage();
        using ServeProcess first = ServeProcess.Start("--export", "disk=" + cluster.Spec(image), "--listen", "tcp:127.0.0.1:0");
        using ServeProcess second = ServeProcess.Launch("--export", "disk=" + cluster.Spec(image, "lock-wait=2"), "--listen", "tcp:127.0.0.1:0");
        Assert.True(second.WaitForExit(TimeSpan.FromSeconds(60)), "the second serve did not give up");
        Assert.NotEqual(0, second.Process.ExitCode);
        Assert.Contains("locked by another client", second.Error);
        // The first still writes and reads: its lock was not broken.
        string src = Tool.RandomFile(_dir, 1 << 20, seed: 4);
        Tool.Run("qemu-img", "convert", "-n", "-f", "raw", "-O", "raw", src, Uri(first));
        Tool.Run("nbdcopy", Uri(first), Path.Combine(_dir, "head.img"));
        Assert.True(File.ReadAllBytes(Path.Combine(_dir, "head.img")).AsSpan(0, 1 << 20).SequenceEqual(File.ReadAllBytes(src)));
    }

    /// <summary>
    /// ≥ 10 SIGKILLs of <c>serve rbd:</c> while a client writes and flushes (PFNBLOCK_RBD_KILLS
    /// raises it; scripts/rbd-crash-soak.sh runs 50): after each, <c>rbd export</c> must hold every
    /// write acknowledged before an acknowledged flush, and every other written block must hold
    /// either its old or its new contents. Three images rotate, so each restart on an image takes
    /// over the lock of a holder that was killed: librbd breaks it once the dead holder's watch expired.
    /// </summary>
    [Fact]
    public void SigkillMidWriteNeverLosesAnAcknowledgedFlushedWrite()
    {
        int kills = int.TryParse(Environment.GetEnvironmentVariable("PFNBLOCK_RBD_KILLS"), out int k) && k > 0 ? k : 10;
        const long size = 16 << 20;
        const int blocks = (int)(size / BlockSize);
        string[] images = [cluster.NewImage(size), cluster.NewImage(size), cluster.NewImage(size)];
        var generation = new int[images.Length][];
        for (int i = 0; i < images.Length; i++) generation[i] = new int[blocks];
        var rng = new Random(7);
        int totalFlushed = 0;
        for (int round = 1; round <= kills; round++)
        {
            int img = round % images.Length;
            int[] durable = generation[img];
            using ServeProcess server = ServeProcess.Start("--export", "disk=" + cluster.Spec(images[img], "lock-wait=30"), "--listen", "tcp:127.0.0.1:0");
            var writer = new FlushedWriteWriter(server.TcpPort, round, rng.Next(), blocks);
            var thread = new Thread(writer.Run) { IsBackground = true, Name = "rbd-crash-writer" };
            thread.Start();
            // Kill at a random moment once writes flow (a flush acknowledged at least once).
            SpinWait.SpinUntil(() => Volatile.Read(ref writer.FlushedCount) > 0 || writer.Failure is not null, TimeSpan.FromSeconds(60));
            Assert.Null(writer.Failure);
            Thread.Sleep(rng.Next(100, 800));
            server.Kill();
            thread.Join();

            totalFlushed += writer.Check(cluster.Export(images[img], _dir), durable, $"kill {round}");
        }
        Assert.True(totalFlushed >= kills * 8, "the writers barely wrote");
    }
}
