using PfnBlock.Block;
using PfnBlock.Devices;
using PfnBlock.Tests.Nbd;

namespace PfnBlock.Tests.Devices.Rbd;

/// <summary>
/// On a three-OSD cluster with a pool replicated three times (min_size 2), one OSD is SIGKILLed
/// while the <c>rbd:</c> device writes: every request still completes without error (librbd
/// resends to the new primary once the monitor marks the OSD down), and the image the real rbd
/// CLI exports afterwards holds exactly what was written.
/// </summary>
[Collection(CephCollection.Name)]
public sealed class RbdOsdFailureTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("pfnblock-rbd-osd-").FullName;
    private readonly string _clusterDir = Path.Combine("/dev/shm", $"pfnblock-ceph-3osd-{Guid.NewGuid():N}"[..32]);

    public void Dispose()
    {
        try { CephCluster.Script("stop", _clusterDir); }
        finally { Directory.Delete(_dir, recursive: true); }
    }

    [Fact]
    public void KillingAnOsdMidWorkloadLosesNothingAndFailsNothing()
    {
        string conf = CephCluster.Script("start", _clusterDir, "3").Trim().Split('\n')[^1];
        const int size = 8 << 20;
        Tool.Run("rbd", "--conf", conf, "create", "--size", "8M", "rbd/osdkill");
        byte[] model = new byte[size];
        var rng = new Random(21);
        using (var set = new DeviceSet())
        {
            IBlockDevice dev = set.Open($"rbd:rbd/osdkill,conf={conf}");
            using var buffers = new IoBuffers(dev.AddressSpace);
            int killAt = 150, after = 0;
            for (int i = 0; after < 300; i++)
            {
                if (i == killAt) CephCluster.Script("kill-osd", _clusterDir, "1");
                if (i > killAt) after++;
                int sectors = rng.Next(1, 65);
                long sector = rng.NextInt64(0, (size >> 9) - sectors + 1);
                using IoBuffers.Layout layout = buffers.NewLayout(rng, sectors << 9);
                byte[] data = Stamp.Make(sector << 9, sectors << 9, i + 1);
                layout.Write(data);
                Bio bio = layout.AddTo(new Bio().Init(BioOp.Write, sector, i % 10 == 0 ? BioFlags.Fua : BioFlags.None));
                Assert.Equal(BlockStatus.Ok, dev.SubmitAndWait(bio));
                data.CopyTo(model.AsSpan((int)(sector << 9)));
            }
            Assert.Equal(BlockStatus.Ok, dev.SubmitAndWait(new Bio().Init(BioOp.Flush, 0)));
        }
        // The writes after the kill went on while the cluster saw osd.1 down.
        Assert.DoesNotContain("osd.1", Tool.Run(CephCluster.ScriptPath, "status", _clusterDir));
        Assert.Matches(@"osd\.1 down", Tool.Run("ceph", "--conf", conf, "osd", "dump"));
        string exported = Path.Combine(_dir, "osdkill.img");
        Tool.Run("rbd", "--conf", conf, "export", "--no-progress", "rbd/osdkill", exported);
        Assert.True(File.ReadAllBytes(exported).AsSpan().SequenceEqual(model), "rbd export after the OSD kill differs from what was written");
    }
}
