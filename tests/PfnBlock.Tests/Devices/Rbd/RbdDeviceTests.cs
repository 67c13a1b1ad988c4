using PfnBlock.Block;
using PfnBlock.Devices;
using PfnBlock.Devices.Rbd;
using PfnBlock.Tests.Nbd;

namespace PfnBlock.Tests.Devices.Rbd;

/// <summary>
/// The <c>rbd:</c> device against a real (throwaway) Ceph cluster: data written through it is what
/// the real rbd CLI exports, snapshots open read-only, the exclusive lock keeps a second writer
/// out without breaking a live holder, and bad input gets a clear error.
/// </summary>
[Collection(CephCollection.Name)]
public sealed class RbdDeviceTests(CephCluster cluster) : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("pfnblock-rbd-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private static Bio NoData(BioOp op, long sector, int bytes)
    {
        Bio bio = new Bio().Init(op, sector);
        bio.Iter.Size = (uint)bytes;
        return bio;
    }

    [Fact]
    public void RandomWritesZeroesAndReadsMatchAModelAndTheRbdExport()
    {
        const int size = 8 << 20;
        string image = cluster.NewImage(size);
        byte[] model = new byte[size];
        var rng = new Random(11);
        using (var set = new DeviceSet())
        {
            IBlockDevice dev = set.Open(cluster.Spec(image));
            Assert.Equal(size, dev.CapacityBytes);
            using var buffers = new IoBuffers(dev.AddressSpace);
            for (int i = 0; i < 60; i++)
            {
                int sectors = rng.Next(1, 257);
                long sector = rng.NextInt64(0, (size >> 9) - sectors + 1);
                int bytes = sectors << 9;
                int what = rng.Next(4);
                using IoBuffers.Layout layout = buffers.NewLayout(rng, bytes);
                var bio = new Bio();
                if (what <= 1)
                {
                    byte[] data = Stamp.Make(sector << 9, bytes, i + 1);
                    layout.Write(data);
                    layout.AddTo(bio.Init(BioOp.Write, sector, what == 1 ? BioFlags.Fua | BioFlags.Preflush : BioFlags.None));
                    Assert.Equal(BlockStatus.Ok, dev.SubmitAndWait(bio));
                    data.CopyTo(model.AsSpan((int)(sector << 9)));
                }
                else if (what == 2)
                {
                    Assert.Equal(BlockStatus.Ok, dev.SubmitAndWait(NoData(BioOp.WriteZeroes, sector, bytes)));
                    model.AsSpan((int)(sector << 9), bytes).Clear();
                }
                else
                {
                    layout.AddTo(bio.Init(BioOp.Read, sector));
                    Assert.Equal(BlockStatus.Ok, dev.SubmitAndWait(bio));
                    Assert.True(layout.Read().AsSpan().SequenceEqual(model.AsSpan((int)(sector << 9), bytes)), $"read {i} at sector {sector}");
                }
                bio.Release();
            }
            Assert.Equal(BlockStatus.Ok, dev.SubmitAndWait(new Bio().Init(BioOp.Flush, 0)));
        }
        Assert.True(cluster.Export(image, _dir).AsSpan().SequenceEqual(model), "rbd export differs from what was written through rbd:");
    }

    [Fact]
    public void FeaturesAreTruthful()
    {
        string image = cluster.NewImage();
        using var set = new DeviceSet();
        var dev = (RbdDevice)set.Open(cluster.Spec(image));
        Assert.True(dev.HoldsLock);
        DeviceFeatures f = dev.Features;
        Assert.Equal(DeviceFeatures.WriteCache | DeviceFeatures.Fua | DeviceFeatures.Discard | DeviceFeatures.WriteZeroes, f);
        // rbd_aio_discard may keep old data in partly covered objects: never claimed as zeroing.
        Assert.False(f.HasFlag(DeviceFeatures.DiscardZeroesData));
        Assert.Contains("librbd cache off", dev.Description);
        Assert.Equal(4 << 20, dev.Limits.MaxBytesPerBio);
    }

    [Fact]
    public void SnapshotOpensReadOnlyWithTheSnapshotsData()
    {
        string image = cluster.NewImage(4 << 20);
        string before = Tool.RandomFile(_dir, 4 << 20, seed: 5);
        cluster.Rbd("import", "--no-progress", before, "rbd/" + image + "-src");
        cluster.Rbd("rm", "--no-progress", "rbd/" + image);
        cluster.Rbd("rename", "rbd/" + image + "-src", "rbd/" + image);
        cluster.Rbd("snap", "create", $"rbd/{image}@s1");
        using (var set = new DeviceSet())
        {
            // The head is changed after the snapshot through the device.
            IBlockDevice head = set.Open(cluster.Spec(image));
            Assert.Equal(BlockStatus.Ok, head.SubmitAndWait(NoData(BioOp.WriteZeroes, 0, 1 << 20)));
        }
        using var set2 = new DeviceSet();
        IBlockDevice snap = set2.Open(cluster.Spec(image, "snap=s1"));
        Assert.True(snap.Features.HasFlag(DeviceFeatures.ReadOnly));
        using var buffers = new IoBuffers(snap.AddressSpace);
        using IoBuffers.Layout layout = buffers.Single(1 << 20);
        Assert.Equal(BlockStatus.Ok, snap.SubmitAndWait(layout.AddTo(new Bio().Init(BioOp.Read, 0))));
        Assert.True(layout.Read().AsSpan().SequenceEqual(File.ReadAllBytes(before).AsSpan(0, 1 << 20)));
        Assert.Equal(BlockStatus.ReadOnly, snap.SubmitAndWait(layout.AddTo(new Bio().Init(BioOp.Write, 0))));
    }

    [Fact]
    public void ASecondWriterIsRefusedAndTheLiveHolderKeepsItsLock()
    {
        string image = cluster.NewImage();
        using var set = new DeviceSet();
        IBlockDevice first = set.Open(cluster.Spec(image));
        RbdException e = Assert.Throws<RbdException>(() => RbdDevice.Open(RbdDevice.ParseOptions(DeviceSpec.Parse(cluster.Spec(image, "lock-wait=1")))).Dispose());
        Assert.Contains("locked by another client", e.Message);
        // The holder still writes: the refused opener broke nothing.
        Assert.True(((RbdDevice)first).HoldsLock);
        Assert.Equal(BlockStatus.Ok, first.SubmitAndWait(NoData(BioOp.WriteZeroes, 0, 4096)));
        // A reader needs no lock.
        using var reader = RbdDevice.Open(RbdDevice.ParseOptions(DeviceSpec.Parse(cluster.Spec(image, "ro"))));
        Assert.True(reader.Features.HasFlag(DeviceFeatures.ReadOnly));
        Assert.False(reader.HoldsLock);
    }

    [Fact]
    public void TheLockPassesOnWhenTheHolderCloses()
    {
        string image = cluster.NewImage();
        string spec = cluster.Spec(image, "lock-wait=10");
        RbdDevice.Open(RbdDevice.ParseOptions(DeviceSpec.Parse(spec))).Dispose();
        using RbdDevice second = RbdDevice.Open(RbdDevice.ParseOptions(DeviceSpec.Parse(spec)));
        Assert.True(second.HoldsLock);
    }

    [Fact]
    public void BadInputGetsClearErrors()
    {
        string image = cluster.NewImage();
        RbdException Open(string spec) => Assert.Throws<RbdException>(() => new DeviceSet().Open(spec));

        Assert.Contains("does not exist", Open($"rbd:rbd/{image},conf={_dir}/missing.conf").Message);
        Assert.Contains("pool 'nopool' does not exist", Open($"rbd:nopool/{image},conf={cluster.ConfPath}").Message);
        Assert.Contains("image 'noimage' does not exist in pool 'rbd'", Open($"rbd:rbd/noimage,conf={cluster.ConfPath}").Message);
        Assert.Contains("snapshot 'nosnap'", Open(cluster.Spec(image, "snap=nosnap")).Message);
        Assert.Contains("POOL/IMAGE", Assert.Throws<FormatException>(() => new DeviceSet().Open($"rbd:{image},conf={cluster.ConfPath}")).Message);

        // A table that expects more than the image holds (16 MiB = 32768 sectors).
        string table = Path.Combine(_dir, "big.table");
        File.WriteAllText(table, $"0 65536 linear {cluster.Spec(image)} 0\n");
        FormatException big = Assert.Throws<FormatException>(() => new DeviceSet().Open("table:" + table));
        Assert.Contains("Device too small", big.Message);
        Assert.Contains("has 32768 sectors, the line needs 0 + 65536", big.Message);

        // Monitors nobody answers for: a port nothing listens on, and a 2 s bound.
        string dead = Path.Combine(_dir, "dead.conf");
        File.WriteAllText(dead, "[global]\nmon_host = 127.0.0.1:9\nauth_client_required = none\n");
        RbdException e = Open($"rbd:rbd/{image},conf={dead},timeout=2");
        Assert.Contains("no monitor answered within 2 s", e.Message);
        Assert.Contains("127.0.0.1:9", e.Message);
    }
}
