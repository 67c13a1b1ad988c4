using System.Globalization;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using PfnBlock.Block;
using PfnBlock.Common;
using PfnBlock.Interop;
using PfnBlock.Memory;

namespace PfnBlock.Devices.Rbd;

/// <summary>
/// A Ceph RBD image as a block device, through librbd's asynchronous calls: each bio becomes one
/// <c>rbd_aio_*</c> request (two or three with PREFLUSH and FUA) straight from the bio's frames,
/// and completes on librbd's callback thread, exactly once.
/// </summary>
/// <remarks>
/// <para><b>Mapping.</b> READ → <c>rbd_aio_readv</c> and WRITE → <c>rbd_aio_writev</c> over an iovec
/// built by kmapping each segment (no bounce buffer); FLUSH → <c>rbd_aio_flush</c>; FUA → the write,
/// then a flush; PREFLUSH → a flush first; WRITE_ZEROES → <c>rbd_aio_write_zeroes</c>; DISCARD →
/// <c>rbd_aio_discard</c>, which may leave old data in partially covered objects, so the device does
/// not advertise <see cref="DeviceFeatures.DiscardZeroesData"/>.</para>
/// <para><b>No managed allocation per I/O.</b> Requests live in a fixed table of
/// <see cref="QueueDepth"/> slots claimed through a <see cref="SlotTable"/>; the cookie handed to
/// librbd is the device's index in a static table and the slot's index, so no GCHandle is made.
/// librbd allocates its own completion object per request (<c>rbd_aio_create_completion</c>; it
/// cannot be reused). A bio that finds every slot busy answers <see cref="BlockStatus.Busy"/>, which
/// the core requeues until a completion frees one.</para>
/// <para><b>Durability.</b> librbd's RAM cache is off unless <c>cache</c> is given, so a write is on
/// the OSDs (replicated, in their write-ahead logs) when it completes; FLUSH is still passed down,
/// as it is the only barrier librbd promises. Writers hold the image's exclusive lock for as long
/// as the device is open (see <see cref="RbdConnection"/>).</para>
/// <para><b>Failures.</b> An OSD request that does not complete within the operation timeout, a
/// client blocklisted by another's lock break, or any negative return fails the bio with
/// <see cref="BlockStatus.IoError"/>; nothing is acknowledged that librbd did not acknowledge.</para>
/// </remarks>
public sealed unsafe class RbdDevice : BlockDevice, IRegisteredDevice, IOwnedDevice
{
    /// <summary>The default number of requests in flight.</summary>
    public const int DefaultQueueDepth = 128;
    private const int MaxIov = Bio.MaxVecs;
    private const int SlotBits = 16;
    private const string SampleConfVariable = "PFNBLOCK_CEPH_CONF";
    private const int EROFS = 30, ESHUTDOWN = 108; // ESHUTDOWN is Ceph's EBLOCKLISTED

    // Open devices by index: the cookie librbd hands back names the device without a GCHandle.
    private static readonly RbdDevice?[] s_devices = new RbdDevice?[1024];

    private readonly RbdConnection _connection;
    private readonly long _sectors;
    private readonly DeviceFeatures _features;
    private readonly SlotTable _free;
    private readonly RbdRequest[] _requests;
    private readonly int _index;
    private readonly PhysicalAddressSpace _space;
    private int _inFlight;
    private string? _lost;

    private RbdDevice(RbdConnection connection, long capacityBytes, int objectSize, int queueDepth, PhysicalAddressSpace? space)
        : base("rbd:" + connection.Options.Name, space)
    {
        _connection = connection;
        _space = space ?? PhysicalAddressSpace.Shared;
        _sectors = capacityBytes >> Bio.SectorShift;
        _features = DeviceFeatures.WriteCache | DeviceFeatures.Fua
            | (connection.ReadOnly ? DeviceFeatures.ReadOnly : DeviceFeatures.Discard | DeviceFeatures.WriteZeroes);
        // Whole objects are what RADOS writes at once; a bio larger than one spans objects anyway.
        Limits = new DeviceLimits(Bio.SectorSize, Pfn.PageSize, Math.Clamp(objectSize, 1 << 20, 32 << 20), 1);
        _free = new SlotTable(queueDepth);
        _requests = new RbdRequest[queueDepth];
        for (int i = 0; i < queueDepth; i++) _requests[i] = new RbdRequest();
        _index = -1;
        for (int i = 0; i < s_devices.Length && _index < 0; i++)
            if (Interlocked.CompareExchange(ref s_devices[i], this, null) is null) _index = i;
        if (_index < 0) throw new InvalidOperationException($"more than {s_devices.Length} rbd devices open in one process");
    }

    /// <inheritdoc/>
    public static DeviceType Type { get; } = new()
    {
        Name = "rbd",
        Summary = "a Ceph RBD image through librbd (asynchronous, no bounce buffer; exclusive lock held while open for writing)",
        Arguments = [new("POOL/IMAGE", ArgumentKind.Text, "the pool and the image's name")],
        Options =
        [
            new("conf", ArgumentKind.Path, "the cluster's ceph.conf (default: librados' search, /etc/ceph/ceph.conf)", "PATH"),
            new("id", ArgumentKind.Text, "the client id, as in client.ID (default admin)", "ID"),
            new("snap", ArgumentKind.Text, "open this snapshot, read-only", "NAME"),
            new("ro", null, "open read-only (no lock)"),
            new("cache", null, "keep librbd's volatile RAM cache on (rbd_cache; off by default)"),
            new("nolock", null, "do not take the exclusive lock when writing (other writers are not kept out)"),
            new("timeout", ArgumentKind.Number, $"seconds to reach the monitors (default {RbdOptions.DefaultConnectTimeout.TotalSeconds})", "SECONDS"),
            new("op-timeout", ArgumentKind.Number, $"seconds before an OSD request fails with EIO (default {RbdOptions.DefaultOperationTimeout.TotalSeconds}, 0 waits forever)", "SECONDS"),
            new("lock-wait", ArgumentKind.Number, $"seconds to wait for another client's lock (default {RbdOptions.DefaultLockWait.TotalSeconds})", "SECONDS"),
            new("qd", ArgumentKind.Number, $"requests in flight at most (1..4096, default {DefaultQueueDepth})", "N"),
        ],
        Open = (spec, ctx) => Open(ParseOptions(spec, ctx.ReadOnly), QueueDepthOption(spec), ctx.AddressSpace),
        Samples = Environment.GetEnvironmentVariable(SampleConfVariable) is { Length: > 0 } conf
            ? [new($"16 MiB image on the cluster of ${SampleConfVariable}", _ => CreateSample(conf, 16 << 20))]
            : [],
    };

    /// <summary>The options an <c>rbd:</c> spec gives.</summary>
    /// <exception cref="FormatException">The image is not written POOL/IMAGE.</exception>
    public static RbdOptions ParseOptions(DeviceSpec spec, bool readOnly = false)
    {
        string name = spec.Arguments[0];
        int slash = name.IndexOf('/', StringComparison.Ordinal);
        if (slash <= 0 || slash == name.Length - 1 || name.IndexOf('/', slash + 1) >= 0)
            throw new FormatException($"rbd:{name}: write the image as POOL/IMAGE (e.g. rbd:rbd/vm1)");
        return new RbdOptions
        {
            Pool = name[..slash],
            Image = name[(slash + 1)..],
            ConfPath = spec.Option("conf"),
            ClientId = spec.Option("id"),
            Snapshot = spec.Option("snap"),
            ReadOnly = readOnly || spec.Has("ro"),
            Cache = spec.Has("cache"),
            NoLock = spec.Has("nolock"),
            ConnectTimeout = SecondsOption(spec, "timeout", RbdOptions.DefaultConnectTimeout),
            OperationTimeout = SecondsOption(spec, "op-timeout", RbdOptions.DefaultOperationTimeout),
            LockWait = SecondsOption(spec, "lock-wait", RbdOptions.DefaultLockWait),
        };
    }

    private static TimeSpan SecondsOption(DeviceSpec spec, string name, TimeSpan fallback) =>
        spec.Option(name) is string s ? TimeSpan.FromSeconds(long.Parse(s, CultureInfo.InvariantCulture)) : fallback;

    private static int QueueDepthOption(DeviceSpec spec) =>
        spec.Option("qd") is string s ? int.Parse(s, CultureInfo.InvariantCulture) : DefaultQueueDepth;

    // A fresh image per sample, so samples never share data; the throwaway cluster dies with them.
    private static string CreateSample(string conf, long bytes)
    {
        string image = "sample-" + Guid.NewGuid().ToString("N")[..12];
        using (RbdConnection c = RbdConnection.ConnectPool(new RbdOptions { Pool = "rbd", Image = image, ConfPath = conf }))
            c.CreateImage(image, bytes);
        return $"rbd:rbd/{image},conf={DeviceSpec.Quote(conf)},lock-wait=20";
    }

    /// <summary>Creates an image of <paramref name="bytes"/> (4 MiB objects, the pool's default features) on the cluster <paramref name="options"/> names.</summary>
    /// <exception cref="RbdException">The cluster cannot be reached, the pool is missing, or the image exists.</exception>
    public static void CreateImage(RbdOptions options, long bytes)
    {
        using RbdConnection c = RbdConnection.ConnectPool(options);
        c.CreateImage(options.Image, bytes);
    }

    /// <summary>
    /// Connects to the cluster, opens the image, and (when writing without <c>nolock</c>) takes its
    /// exclusive lock.
    /// </summary>
    /// <exception cref="RbdException">ceph.conf is missing, no monitor answered within the connect
    /// timeout, the pool, image or snapshot does not exist, another live client holds the lock, or
    /// librbd refused; the message says which.</exception>
    public static RbdDevice Open(RbdOptions options, int queueDepth = DefaultQueueDepth, PhysicalAddressSpace? space = null)
    {
        if (queueDepth is < 1 or > 4096) throw new ArgumentOutOfRangeException(nameof(queueDepth), queueDepth, "queue depth must be 1..4096");
        RbdConnection c = RbdConnection.Open(options);
        try
        {
            int r = Librbd.rbd_get_size(c.Image, out ulong size);
            if (r < 0) throw new RbdException($"rbd:{options.Name}: reading the image size failed ({Libc.StrError(-r)})", -r);
            long capacity = (long)size & ~(long)(Bio.SectorSize - 1);
            if (capacity == 0) throw new RbdException($"rbd:{options.Name}: the image is {size} bytes, smaller than one sector", 0);
            int objectSize = Librbd.rbd_get_stripe_unit(c.Image, out ulong unit) == 0 && unit is > 0 and <= int.MaxValue ? (int)unit : 4 << 20;
            string identity = c.Identity();
            return new RbdDevice(c, capacity, objectSize, queueDepth, space) { Identity = identity };
        }
        catch
        {
            c.Dispose();
            throw;
        }
    }

    /// <inheritdoc/>
    public override string Description =>
        $"rbd {_connection.Options.Name} ({SizeParser.Format(CapacityBytes)}); librbd cache {(_connection.Options.Cache ? "on (volatile until flush)" : "off (writes on the OSDs when acknowledged)")}"
        + (_connection.ReadOnly ? "; read-only" : _connection.Locked ? "; exclusive lock held" : "; no lock (nolock)");

    /// <summary>The image's options.</summary>
    public RbdOptions Options => _connection.Options;
    /// <summary>
    /// Who the image is, whatever spec named it: <c>rbd:FSID/POOL_ID/IMAGE_ID</c>. A write cache
    /// records it, so the cache is refused in front of any other image (one made again under the
    /// same name included) and still accepted after the image or its pool is renamed.
    /// </summary>
    public required string Identity { get; init; }
    /// <summary>True while this device holds the image's exclusive lock.</summary>
    public bool HoldsLock => _connection.Locked;
    /// <summary>Requests in flight at most.</summary>
    public int QueueDepth => _requests.Length;
    /// <inheritdoc/>
    public override long CapacitySectors => _sectors;
    /// <inheritdoc/>
    public override DeviceLimits Limits { get; }
    /// <inheritdoc/>
    public override DeviceFeatures Features => _features;

    /// <summary>
    /// Why this client lost the image (blocklisted: a request failed with <c>EBLOCKLISTED</c>; or
    /// librbd no longer counts it as the exclusive lock's owner), or null while it owns it. Once
    /// lost, writes fail with EIO here at once, so librbd never asks for the lock back behind the
    /// new owner's back; reads still go to librbd (a blocklisted client's fail there).
    /// </summary>
    /// <remarks>Asked from a cache's write-back thread while the device is open (the stack closes
    /// its origin only after that thread has stopped).</remarks>
    public string? LostOwnership
    {
        get
        {
            string? lost = Volatile.Read(ref _lost);
            if (lost is not null || !_connection.Locked) return lost;
            nint image = _connection.Image;
            if (image != 0 && Librbd.rbd_is_exclusive_lock_owner(image, out int owner) == 0 && owner == 0)
                NoteLost("this client no longer holds the image's exclusive lock (another client broke it)");
            return Volatile.Read(ref _lost);
        }
    }

    /// <summary>
    /// Reads the image's lock owners from the cluster (one round trip): a blocklisted client gets
    /// <c>EBLOCKLISTED</c> for it, which librbd alone does not notice until a request fails (its
    /// local lock state still says "owner" long after another client broke the lock).
    /// </summary>
    public string? ProbeOwnership()
    {
        string? lost = LostOwnership;
        if (lost is not null || !_connection.Locked) return lost;
        if (_connection.ProbeLock() == -ESHUTDOWN) NoteLost("the cluster blocklisted this client (another client broke its lock)");
        return Volatile.Read(ref _lost);
    }

    private void NoteLost(string why)
    {
        if (Interlocked.CompareExchange(ref _lost, why, null) is null)
            Console.Error.WriteLine($"pfnblock: {Name}: lost to this host: {why}; writes fail with EIO from now on (docs/DESIGN.md, rbd failure semantics)");
    }

    /// <inheritdoc/>
    protected override void SubmitCore(Bio bio)
    {
        // A lost image takes no more writes from this client (librbd would ask for the lock back).
        if (bio.Op != BioOp.Read && Volatile.Read(ref _lost) is not null) { bio.Complete(BlockStatus.IoError); return; }
        if (!_free.TryClaim(1, out int slot)) { bio.Complete(BlockStatus.Busy); return; }
        RbdRequest r = _requests[slot];
        r.Bio = bio;
        r.Postflush = bio.Op == BioOp.Write && (bio.Flags & BioFlags.Fua) != 0;
        r.Step = (bio.Flags & BioFlags.Preflush) != 0 && bio.Op != BioOp.Flush ? RbdStep.Preflush : RbdStep.Main;
        if (bio.Op is BioOp.Read or BioOp.Write && !BuildIov(r, bio))
        {
            Finish(slot, BlockStatus.Invalid);
            return;
        }
        Interlocked.Increment(ref _inFlight);
        Issue(slot);
    }

    private bool BuildIov(RbdRequest r, Bio bio)
    {
        r.IovCount = BioIovecs.Fill(_space, bio, r.Iov, MaxIov);
        return r.IovCount > 0;
    }

    // Starts the request's current step; a synchronous refusal completes the bio here.
    private void Issue(int slot)
    {
        RbdRequest r = _requests[slot];
        Bio bio = r.Bio!;
        nint image = _connection.Image;
        int rc = Librbd.rbd_aio_create_completion(((nint)_index << SlotBits) | slot, &OnComplete, out nint c);
        if (rc < 0) { Done(slot, BlockStatus.IoError); return; }
        ulong offset = (ulong)bio.Sector << Bio.SectorShift;
        rc = r.Step != RbdStep.Main ? Librbd.rbd_aio_flush(image, c) : bio.Op switch
        {
            BioOp.Read => Librbd.rbd_aio_readv(image, r.Iov, r.IovCount, offset, c),
            BioOp.Write => Librbd.rbd_aio_writev(image, r.Iov, r.IovCount, offset, c),
            BioOp.Flush => Librbd.rbd_aio_flush(image, c),
            BioOp.Discard => Librbd.rbd_aio_discard(image, offset, bio.Size, c),
            BioOp.WriteZeroes => Librbd.rbd_aio_write_zeroes(image, offset, bio.Size, c, 0, 0),
            _ => -95, // EOPNOTSUPP: the core validated the op, so this is not reached
        };
        if (rc < 0)
        {
            Librbd.rbd_aio_release(c);
            if (rc == -ESHUTDOWN) NoteLost("the cluster blocklisted this client (another client broke its lock)");
            Done(slot, rc == -EROFS ? BlockStatus.ReadOnly : BlockStatus.IoError);
        }
    }

    // librbd calls this on one of its threads. No exception may escape into native code (Garnet's
    // rule): anything thrown after the bio is known fails that bio, once.
    [UnmanagedCallersOnly(CallConvs = [typeof(CallConvCdecl)])]
    private static void OnComplete(nint completion, nint cookie)
    {
        RbdDevice? device = Volatile.Read(ref s_devices[(int)(cookie >> SlotBits)]);
        int slot = (int)(cookie & ((1 << SlotBits) - 1));
        long ret = Librbd.rbd_aio_get_return_value(completion);
        Librbd.rbd_aio_release(completion);
        if (device is null) return; // cannot happen: a device leaves the table only once idle
        try { device.Completed(slot, ret); }
        catch (Exception e)
        {
            Console.Error.WriteLine($"rbd: completion of slot {slot} threw: {e}");
            if (device._requests[slot].Bio is not null) device.Done(slot, BlockStatus.IoError);
        }
    }

    private void Completed(int slot, long ret)
    {
        RbdRequest r = _requests[slot];
        if (ret < 0)
        {
            if (ret == -ESHUTDOWN) NoteLost("the cluster blocklisted this client (another client broke its lock)");
            Done(slot, ret == -EROFS ? BlockStatus.ReadOnly : BlockStatus.IoError);
            return;
        }
        if (r.Step == RbdStep.Preflush) r.Step = RbdStep.Main;
        else if (r.Step == RbdStep.Main && r.Postflush) r.Step = RbdStep.Postflush;
        else
        {
            // A read returns the bytes read; librbd reads the whole in-bounds range or fails.
            Done(slot, r.Bio!.Op == BioOp.Read && ret != r.Bio.Size ? BlockStatus.IoError : BlockStatus.Ok);
            return;
        }
        Issue(slot);
    }

    private void Done(int slot, BlockStatus status)
    {
        // Counted down even if a completion hook throws, or Dispose would wait for it forever.
        try { Finish(slot, status); }
        finally { Interlocked.Decrement(ref _inFlight); }
    }

    // Frees the slot before completing: the completion may submit the next bio to this device.
    private void Finish(int slot, BlockStatus status)
    {
        RbdRequest r = _requests[slot];
        Bio bio = r.Bio!;
        r.Bio = null;
        _free.Release(slot);
        bio.Complete(status);
    }

    /// <summary>Waits for every request in flight, releases the lock and closes the image and the cluster connection.</summary>
    protected override void Dispose(bool disposing)
    {
        // New bios are refused by now; the ones in flight end with librbd's answer or its op timeout.
        var spin = new SpinWait();
        while (Volatile.Read(ref _inFlight) != 0) spin.SpinOnce();
        _connection.Dispose();
        Volatile.Write(ref s_devices[_index], null);
        foreach (RbdRequest r in _requests) r.Dispose();
    }

    private enum RbdStep : byte { Preflush, Main, Postflush }

    /// <summary>One slot's state: the bio, its iovec array (native, built once), and the step it is at.</summary>
    private sealed class RbdRequest : IDisposable
    {
        public Bio? Bio;
        public iovec* Iov = (iovec*)NativeMemory.AlignedAlloc((nuint)(MaxIov * sizeof(iovec)), 64);
        public int IovCount;
        public RbdStep Step;
        public bool Postflush;

        public void Dispose()
        {
            NativeMemory.AlignedFree(Iov);
            Iov = null;
        }
    }
}
