using PfnBlock.Tests.Nbd;

namespace PfnBlock.Tests.Devices.Rbd;

/// <summary>
/// The throwaway Ceph cluster the RBD tests run against: the one test.sh started (its ceph.conf in
/// <c>$PFNBLOCK_CEPH_CONF</c>), or else one this fixture starts with scripts/ceph-cluster.sh (which
/// installs Ceph when missing) and stops on dispose. Shared by every class of the "ceph" collection.
/// </summary>
public sealed class CephCluster : IDisposable
{
    private readonly string? _ownedDirectory;
    private int _images;

    /// <summary>Uses the cluster of <c>$PFNBLOCK_CEPH_CONF</c>, or starts one.</summary>
    public CephCluster()
    {
        if (Environment.GetEnvironmentVariable("PFNBLOCK_CEPH_CONF") is { Length: > 0 } conf && File.Exists(conf))
        {
            ConfPath = conf;
            return;
        }
        _ownedDirectory = Path.Combine("/dev/shm", $"pfnblock-ceph-test-{Guid.NewGuid():N}"[..32]);
        ConfPath = Script("start", _ownedDirectory).Trim().Split('\n')[^1];
    }

    /// <summary>The cluster's ceph.conf.</summary>
    public string ConfPath { get; }

    /// <summary>scripts/ceph-cluster.sh of this source tree.</summary>
    public static string ScriptPath
    {
        get
        {
            for (DirectoryInfo? d = new(AppContext.BaseDirectory); d is not null; d = d.Parent)
            {
                string p = Path.Combine(d.FullName, "scripts", "ceph-cluster.sh");
                if (File.Exists(p)) return p;
            }
            throw new FileNotFoundException("scripts/ceph-cluster.sh not found above " + AppContext.BaseDirectory);
        }
    }

    /// <summary>Runs the cluster script; fails the test when it fails.</summary>
    public static string Script(params string[] args) => Tool.Run(ScriptPath, args);

    /// <summary>A fresh image of <paramref name="bytes"/> in pool rbd (created with the real rbd CLI); its name.</summary>
    public string NewImage(long bytes = 16 << 20)
    {
        string name = $"t{Environment.ProcessId}-{Interlocked.Increment(ref _images)}-{Guid.NewGuid():N}"[..24];
        Rbd("create", "--size", $"{bytes >> 20}M", "rbd/" + name);
        return name;
    }

    /// <summary>The <c>rbd:</c> spec of <paramref name="image"/> on this cluster, with <paramref name="options"/> appended.</summary>
    public string Spec(string image, string options = "") => $"rbd:rbd/{image},conf={ConfPath}{(options.Length == 0 ? "" : "," + options)}";

    /// <summary>Runs the real rbd CLI against this cluster and returns its output.</summary>
    public string Rbd(params string[] args) => Tool.Run("rbd", ["--conf", ConfPath, .. args]);

    /// <summary>The image's bytes as the rbd CLI exports them (not through PfnBlock).</summary>
    public byte[] Export(string image, string directory)
    {
        string path = Path.Combine(directory, image + ".export");
        File.Delete(path);
        Rbd("export", "--no-progress", "rbd/" + image, path);
        byte[] bytes = File.ReadAllBytes(path);
        File.Delete(path);
        return bytes;
    }

    /// <summary>Stops the cluster if this fixture started it.</summary>
    public void Dispose()
    {
        if (_ownedDirectory is not null) Script("stop", _ownedDirectory);
    }
}

/// <summary>The test classes that share one <see cref="CephCluster"/>.</summary>
[CollectionDefinition(Name)]
public sealed class CephCollection : ICollectionFixture<CephCluster>
{
    /// <summary>The collection's name.</summary>
    public const string Name = "ceph";
}
