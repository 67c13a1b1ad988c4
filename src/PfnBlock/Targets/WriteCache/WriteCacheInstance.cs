using PfnBlock.Block;
using PfnBlock.Devices;
using PfnBlock.Devices.DirectFile;
using PfnBlock.Devices.Pmem;
using PfnBlock.Devices.Rbd;
using PfnBlock.Memory;

namespace PfnBlock.Targets.WriteCache;

/// <summary>
/// One open write cache: its cache device pinned whole, its log, its write-back thread and its
/// counters. Every table that names the same cache device in this process shares it (a table
/// reloaded while the old one is still open, two tables over one stack): two logs over one cache
/// device would overwrite each other's entries. A second table must name the same origin; its
/// options (e.g. <c>cleaner</c>, as dm-writecache is switched to cleaning by a reload) take effect.
/// </summary>
internal sealed unsafe class WriteCacheInstance
{
    private static readonly Dictionary<IBlockDevice, WriteCacheInstance> s_open = new(ReferenceEqualityComparer.Instance);

    private readonly IBlockDevice _cacheDevice;
    private readonly DaxRange[] _pins;
    private readonly bool _ntStoresDurable;
    private int _references = 1;

    /// <summary>Blocks read from the cache.</summary>
    public long ReadHits;
    /// <summary>Blocks read from the origin.</summary>
    public long ReadMisses;
    /// <summary>Blocks written that were cached already.</summary>
    public long WriteHits;

    private WriteCacheInstance(IBlockDevice origin, LowerDevice cache, WriteCacheOptions options)
    {
        Origin = origin;
        _cacheDevice = cache.Device;
        if (_cacheDevice is not IDaxDevice dax || (_cacheDevice.Features & DeviceFeatures.Dax) == 0)
            throw TargetContext.Fail($"Cache device {cache.Spec} has no direct access (a pmem namespace, or a DAX stack over one, is needed)");
        if ((_cacheDevice.Features & DeviceFeatures.ReadOnly) != 0) throw TargetContext.Fail($"Cache device {cache.Spec} is read-only");
        if (_cacheDevice.AddressSpace != origin.AddressSpace) throw TargetContext.Fail("Origin and cache devices number their frames in different address spaces");
        _pins = PinWhole(dax, _cacheDevice.CapacityBytes, out byte* baseAddress, out Pfn firstPfn);
        try
        {
            _ntStoresDurable = _cacheDevice is PmemDevice p && p.Persistence == PersistenceMode.CpuCache;
            Log = WriteCacheLog.Open(baseAddress, _cacheDevice.CapacityBytes, dax.PersistRange, IdentityOf(origin), ntStoresDurable: _ntStoresDurable);
            Log.AutocommitBlocks = options.AutocommitBlocks;
            Log.SetReadCache(options.ReadCachePercent);
            if (options.Cleaner) Log.TrySeal();
        }
        catch (WriteCacheRefusedException e) { Unpin(); throw TargetContext.Fail($"Cache device {cache.Spec}: {e.Message}"); }
        catch (IOException e) { Unpin(); throw TargetContext.Fail($"Cache device {cache.Spec} is damaged: {e.Message} (pfnblock check shows what it holds)"); }
        catch { Unpin(); throw; }
        Writeback = new WriteCacheWriteback(Log, origin, firstPfn, options, () => Commit(flush: false), cache.Spec);
    }

    /// <summary>The origin device.</summary>
    public IBlockDevice Origin { get; }
    /// <summary>The log on the cache device.</summary>
    public WriteCacheLog Log { get; }
    /// <summary>The write-back thread.</summary>
    public WriteCacheWriteback Writeback { get; }

    /// <summary>Opens the cache on <paramref name="cache"/> for <paramref name="origin"/>, or shares the one already open on it.</summary>
    /// <exception cref="TargetException">The cache device is unfit, damaged, formatted for another origin, or open for another origin.</exception>
    public static WriteCacheInstance Acquire(IBlockDevice origin, LowerDevice cache, WriteCacheOptions options)
    {
        lock (s_open)
        {
            if (s_open.TryGetValue(cache.Device, out WriteCacheInstance? open))
            {
                if (open.Origin != origin)
                    throw TargetContext.Fail($"Cache device {cache.Spec} is in use by a writecache for another origin ({open.Origin.Name})");
                open._references++;
                open.Writeback.Options = options;
                open.Log.AutocommitBlocks = options.AutocommitBlocks;
                open.Log.SetReadCache(options.ReadCachePercent);
                open.Writeback.Cleaner = options.Cleaner;
                if (!options.Cleaner) open.Log.Unseal();
                return open;
            }
            var created = new WriteCacheInstance(origin, cache, options);
            s_open.Add(cache.Device, created);
            return created;
        }
    }

    /// <summary>Drops a table's reference; the last one commits what was written (a clean close loses nothing), stops write-back and unpins the cache device.</summary>
    public void Release()
    {
        lock (s_open)
        {
            if (--_references > 0) return;
            s_open.Remove(_cacheDevice);
        }
        if (Commit(flush: false) != BlockStatus.Ok)
            System.Diagnostics.Trace.TraceWarning($"pfnblock: writecache on {_cacheDevice.Name}: the commit at close failed; writes since the last flush may be lost");
        Writeback.Dispose();
        Unpin();
    }

    /// <summary>
    /// Commits the writes completed so far (<see cref="WriteCacheLog.Commit"/>): what FLUSH does
    /// (<paramref name="flush"/>: their epoch ends too) and what an autocommit does.
    /// </summary>
    public BlockStatus Commit(bool flush)
    {
        try
        {
            Log.Commit(flush);
            return BlockStatus.Ok;
        }
        catch (IOException) { return BlockStatus.IoError; }
    }

    /// <summary>Who the origin is: its size and, for a namespace, its uuid, for an RBD image its cluster, pool and image ids, else its full path or name.</summary>
    private static WriteCacheOrigin IdentityOf(IBlockDevice origin) => origin switch
    {
        PmemDevice p => new WriteCacheOrigin(origin.CapacitySectors, 0, p.NamespaceUuid),
        FileDevice f => new WriteCacheOrigin(origin.CapacitySectors, WriteCacheOrigin.HashSpec(Path.GetFullPath(f.Path)), Guid.Empty),
        RbdDevice r => new WriteCacheOrigin(origin.CapacitySectors, WriteCacheOrigin.HashSpec(r.Identity), Guid.Empty),
        _ => new WriteCacheOrigin(origin.CapacitySectors, WriteCacheOrigin.HashSpec(origin.Name), Guid.Empty),
    };

    /// <summary>Pins the whole cache device and checks it is one contiguous mapping (addresses and frames).</summary>
    private static DaxRange[] PinWhole(IDaxDevice dax, long bytes, out byte* baseAddress, out Pfn firstPfn)
    {
        var pins = new DaxRange[(bytes >> Pfn.PageShift) / RangePinTable.MaxPages + 1];
        int pinned = 0;
        long pages = bytes >> Pfn.PageShift, done = 0;
        baseAddress = null;
        firstPfn = default;
        try
        {
            while (done < pages)
            {
                long got = dax.DirectAccess(done, pages - done, out DaxRange r);
                if (got == 0) throw TargetContext.Fail($"Cache device: direct access to page {done} refused");
                pins[pinned++] = r;
                if (done == 0)
                {
                    baseAddress = r.Address;
                    firstPfn = r.Pfn;
                }
                else if (r.Address != baseAddress + (done << Pfn.PageShift) || r.Pfn != firstPfn.Add((ulong)done))
                {
                    throw TargetContext.Fail("Cache device is not one contiguous mapping");
                }
                done += got;
            }
            return pins[..pinned];
        }
        catch
        {
            for (int i = 0; i < pinned; i++) pins[i].Unpin();
            throw;
        }
    }

    private void Unpin()
    {
        foreach (DaxRange r in _pins) r.Unpin();
    }
}
