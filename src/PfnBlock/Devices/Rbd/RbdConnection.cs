using System.Globalization;
using System.Text;
using PfnBlock.Interop;

namespace PfnBlock.Devices.Rbd;

/// <summary>Where an RBD image is and how to reach it: what an <c>rbd:POOL/IMAGE</c> spec says.</summary>
public sealed record RbdOptions
{
    /// <summary>The default bound on reaching the monitors, and on a monitor request.</summary>
    public static readonly TimeSpan DefaultConnectTimeout = TimeSpan.FromSeconds(10);
    /// <summary>The default bound on one OSD request before the bio fails with an I/O error (0: wait forever).</summary>
    public static readonly TimeSpan DefaultOperationTimeout = TimeSpan.FromSeconds(60);
    /// <summary>
    /// How long opening for writing waits for another client's exclusive lock by default: longer
    /// than Ceph's default <c>osd_client_watch_timeout</c> (30 s), after which a dead holder's
    /// lock may be broken.
    /// </summary>
    public static readonly TimeSpan DefaultLockWait = TimeSpan.FromSeconds(40);

    /// <summary>The pool holding the image.</summary>
    public required string Pool { get; init; }
    /// <summary>The image's name.</summary>
    public required string Image { get; init; }
    /// <summary>ceph.conf to read; null reads librados' default places (<c>/etc/ceph/ceph.conf</c>, <c>$CEPH_CONF</c>).</summary>
    public string? ConfPath { get; init; }
    /// <summary>The client id (<c>client.ID</c>); null is <c>admin</c>.</summary>
    public string? ClientId { get; init; }
    /// <summary>A snapshot to open instead of the head: always read-only.</summary>
    public string? Snapshot { get; init; }
    /// <summary>Open read-only: no lock, writes refused.</summary>
    public bool ReadOnly { get; init; }
    /// <summary>Keep librbd's volatile RAM cache (<c>rbd_cache</c>) on; off by default, so an acknowledged write is on the OSDs.</summary>
    public bool Cache { get; init; }
    /// <summary>Do not take the exclusive lock when opening for writing (other writers are then not kept out).</summary>
    public bool NoLock { get; init; }
    /// <summary>Bound on reaching the monitors (<c>client_mount_timeout</c>, <c>rados_mon_op_timeout</c>).</summary>
    public TimeSpan ConnectTimeout { get; init; } = DefaultConnectTimeout;
    /// <summary>Bound on one OSD request (<c>rados_osd_op_timeout</c>); zero waits forever.</summary>
    public TimeSpan OperationTimeout { get; init; } = DefaultOperationTimeout;
    /// <summary>How long to wait for another client's exclusive lock (a dead holder's lock is broken once its watch expires).</summary>
    public TimeSpan LockWait { get; init; } = DefaultLockWait;

    /// <summary>How the image is named in messages: <c>POOL/IMAGE[@SNAP]</c>.</summary>
    public string Name => Snapshot is null ? $"{Pool}/{Image}" : $"{Pool}/{Image}@{Snapshot}";
}

/// <summary>A failure to reach or open an RBD image, with the reason in words (and the errno Ceph gave).</summary>
/// <param name="message">What went wrong and what to do about it.</param>
/// <param name="errno">The positive errno librados or librbd returned (0 when none).</param>
public sealed class RbdException(string message, int errno) : IOException(message)
{
    /// <summary>The positive errno librados or librbd returned (0 when none).</summary>
    public int Errno { get; } = errno;
}

/// <summary>
/// An open RBD image with the librados cluster handle and pool context under it: connecting with
/// bounded timeouts, opening, locking and closing, each failure turned into an
/// <see cref="RbdException"/> that names the cause. The I/O path is in <see cref="RbdDevice"/>.
/// </summary>
internal sealed unsafe class RbdConnection : IDisposable
{
    private const int ENOENT = 2, EBUSY = 16, EINVAL = 22, EROFS = 30, ETIMEDOUT = 110, EEXIST = 17;

    private nint _cluster, _ioctx, _image;

    private RbdConnection(RbdOptions options) => Options = options;

    public RbdOptions Options { get; }
    public nint Image => _image;
    public bool ReadOnly => Options.ReadOnly || Options.Snapshot is not null;
    /// <summary>True while this client holds the image's exclusive lock through <see cref="AcquireLock"/>.</summary>
    public bool Locked { get; private set; }

    /// <summary>Connects to the cluster and opens the pool (not yet an image).</summary>
    public static RbdConnection ConnectPool(RbdOptions options)
    {
        if (options.ConfPath is not null && !File.Exists(options.ConfPath))
            throw new RbdException($"rbd:{options.Name}: ceph.conf '{options.ConfPath}' does not exist (conf=PATH names the cluster's configuration file)", ENOENT);
        var c = new RbdConnection(options);
        try
        {
            c.Connect();
            int r = Librbd.rados_ioctx_create(c._cluster, options.Pool, out c._ioctx);
            if (r < 0)
                throw Fail(options, r == -ENOENT ? $"pool '{options.Pool}' does not exist" : "opening the pool failed", r);
            return c;
        }
        catch
        {
            c.Dispose();
            throw;
        }
    }

    /// <summary>Connects, opens the image (read-only for snapshots and <see cref="RbdOptions.ReadOnly"/>) and takes the lock when writing.</summary>
    public static RbdConnection Open(RbdOptions options)
    {
        RbdConnection c = ConnectPool(options);
        try
        {
            int r = c.ReadOnly
                ? Librbd.rbd_open_read_only(c._ioctx, options.Image, out c._image, options.Snapshot)
                : Librbd.rbd_open(c._ioctx, options.Image, out c._image, null);
            if (r < 0)
            {
                c._image = 0;
                throw Fail(options, r != -ENOENT ? "opening the image failed"
                    : options.Snapshot is null ? $"image '{options.Image}' does not exist in pool '{options.Pool}'"
                    : $"image '{options.Image}' or its snapshot '{options.Snapshot}' does not exist in pool '{options.Pool}'", r);
            }
            if (!c.ReadOnly && !options.NoLock) c.AcquireLock();
            return c;
        }
        catch
        {
            c.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Who the open image is, independent of how it is named: <c>rbd:FSID/POOL_ID/IMAGE_ID</c> (the
    /// cluster's fsid, the pool's id, the image's id). A renamed image keeps it; an image deleted and
    /// made again under the same name, or one of the same name in another pool or cluster, does not.
    /// </summary>
    public string Identity()
    {
        byte* buf = stackalloc byte[128];
        int n = Librbd.rados_cluster_fsid(_cluster, buf, 128);
        if (n < 0) throw Fail(Options, "reading the cluster's fsid failed", n);
        string fsid = new((sbyte*)buf, 0, n);
        int r = Librbd.rbd_get_id(_image, buf, 128);
        if (r < 0) throw Fail(Options, "reading the image's id failed", r);
        string id = new((sbyte*)buf);
        return string.Create(CultureInfo.InvariantCulture, $"rbd:{fsid}/{Librbd.rados_ioctx_get_id(_ioctx)}/{id}");
    }

    /// <summary>Creates an image of <paramref name="bytes"/> in the pool (4 MiB objects, the pool's default features).</summary>
    public void CreateImage(string name, long bytes)
    {
        int order = 0;
        int r = Librbd.rbd_create(_ioctx, name, (ulong)bytes, ref order);
        if (r < 0) throw Fail(Options, r == -EEXIST ? $"image '{name}' already exists" : $"creating image '{name}' failed", r);
    }

    private void Connect()
    {
        RbdOptions o = Options;
        int r = Librbd.rados_create(out _cluster, o.ClientId);
        if (r < 0) { _cluster = 0; throw Fail(o, $"creating a librados handle for client '{o.ClientId ?? "admin"}' failed", r); }
        r = Librbd.rados_conf_read_file(_cluster, o.ConfPath);
        if (r < 0)
            throw Fail(o, o.ConfPath is null ? "no ceph.conf found in the default places (/etc/ceph/ceph.conf, $CEPH_CONF); name one with conf=PATH"
                : $"reading ceph.conf '{o.ConfPath}' failed", r);
        string connect = Seconds(o.ConnectTimeout);
        Set("client_mount_timeout", connect);
        Set("rados_mon_op_timeout", connect);
        Set("rados_osd_op_timeout", Seconds(o.OperationTimeout));
        // librbd's RAM cache acknowledges writes before they reach an OSD; a pmem cache in front
        // (or an NBD client that flushes) must see each acknowledged write on the cluster.
        Set("rbd_cache", o.Cache ? "true" : "false");
        r = Librbd.rados_connect(_cluster);
        if (r < 0)
        {
            string mons = Get("mon_host");
            throw Fail(o, r == -ETIMEDOUT
                ? $"no monitor answered within {connect} s (mon_host = {(mons.Length == 0 ? "unset" : mons)}); is the cluster up and reachable?"
                : $"connecting to the cluster failed (mon_host = {mons})", r);
        }
    }

    /// <summary>
    /// Takes the image's exclusive lock and keeps it: another client's request to hand it over is
    /// refused. librbd breaks (and blocklists) a holder only once the holder's watch on the image
    /// header has expired, i.e. the holder is dead; a live holder keeps its lock and this waits
    /// up to <see cref="RbdOptions.LockWait"/>, then fails naming the holder.
    /// </summary>
    private void AcquireLock()
    {
        long deadline = Environment.TickCount64 + (long)Options.LockWait.TotalMilliseconds;
        while (true)
        {
            int r = Librbd.rbd_lock_acquire(_image, Librbd.RBD_LOCK_MODE_EXCLUSIVE);
            if (r == 0) { Locked = true; return; }
            if (r == -EINVAL)
                throw Fail(Options, "the image lacks the exclusive-lock feature ('rbd feature enable POOL/IMAGE exclusive-lock'), or open it with nolock", r);
            if (r is not (-EROFS or -EBUSY or -ETIMEDOUT) || Environment.TickCount64 >= deadline)
                throw Fail(Options, $"the image is locked by another client ({Owners()}); a live holder keeps it, a dead one's lock is broken once its watch expires (waited {Seconds(Options.LockWait)} s)", r);
            Thread.Sleep(250);
        }
    }

    /// <summary>
    /// Reads the image's lock owners from the header object (one OSD round trip, within the op
    /// timeout): 0, or the negative errno (<c>-ESHUTDOWN</c> when this client is blocklisted).
    /// </summary>
    public int ProbeLock()
    {
        byte** owners = stackalloc byte*[8];
        nuint count = 8;
        int r = Librbd.rbd_lock_get_owners(_image, out _, owners, ref count);
        if (r >= 0 && count > 0) Librbd.rbd_lock_get_owners_cleanup(owners, count);
        return r;
    }

    private string Owners()
    {
        byte** owners = stackalloc byte*[8];
        nuint count = 8;
        if (Librbd.rbd_lock_get_owners(_image, out _, owners, ref count) < 0 || count == 0) return "holder unknown";
        var sb = new StringBuilder("held by ");
        for (nuint i = 0; i < count; i++) sb.Append(i == 0 ? "" : ", ").Append(new string((sbyte*)owners[i]));
        Librbd.rbd_lock_get_owners_cleanup(owners, count);
        return sb.ToString();
    }

    private void Set(string option, string value)
    {
        int r = Librbd.rados_conf_set(_cluster, option, value);
        if (r < 0) throw Fail(Options, $"setting {option} = {value} failed", r);
    }

    private string Get(string option)
    {
        byte* buf = stackalloc byte[512];
        return Librbd.rados_conf_get(_cluster, option, buf, 512) < 0 ? "" : new string((sbyte*)buf);
    }

    private static string Seconds(TimeSpan t) => ((int)Math.Ceiling(t.TotalSeconds)).ToString(CultureInfo.InvariantCulture);

    private static RbdException Fail(RbdOptions o, string what, int r) =>
        new($"rbd:{o.Name}: {what} ({Libc.StrError(-r)}, errno {-r})", -r);

    /// <summary>Releases the lock, closes the image (waiting for its requests), the pool context and the cluster handle.</summary>
    public void Dispose()
    {
        if (_image != 0)
        {
            if (Locked) { _ = Librbd.rbd_lock_release(_image); Locked = false; }
            _ = Librbd.rbd_close(_image);
            _image = 0;
        }
        if (_ioctx != 0) { Librbd.rados_ioctx_destroy(_ioctx); _ioctx = 0; }
        if (_cluster != 0) { Librbd.rados_shutdown(_cluster); _cluster = 0; }
    }
}
