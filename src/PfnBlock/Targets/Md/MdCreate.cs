using PfnBlock.Block;
using PfnBlock.Devices;

namespace PfnBlock.Targets.Md;

/// <summary>What <see cref="MdCreate.Create(IReadOnlyList{string}, MdCreateOptions, DeviceSet)"/> builds.</summary>
public sealed record MdCreateOptions
{
    /// <summary>RAID level: 1 (mirror) or 5.</summary>
    public int Level { get; init; } = 1;
    /// <summary>RAID5 chunk in bytes: a power of two and a multiple of the members' block size (md's default 512 KiB).</summary>
    public long ChunkBytes { get; init; } = 512 << 10;
    /// <summary>Bytes of member data per write-intent bitmap bit (0: mdadm's default, 64 MiB or more if the bitmap would not fit).</summary>
    public long BitmapChunkBytes { get; init; }
    /// <summary>The array's name; the superblock stores "host:name".</summary>
    public string Name { get; init; } = "pfnblock";
    /// <summary>Overwrite members that already carry an md superblock.</summary>
    public bool Force { get; init; }
    /// <summary>RAID5 only: a pmem namespace made the array's write journal (mdadm's --write-journal); the members' superblocks record MD_FEATURE_JOURNAL.</summary>
    public string? Journal { get; init; }
    /// <summary>The journal's mode: write-through (md's default) or write-back.</summary>
    public Raid5JournalMode JournalMode { get; init; } = Raid5JournalMode.WriteThrough;
    /// <summary>Skip zeroing the members' data (mdadm's --assume-clean): the caller promises the members already agree (parity, mirrors).</summary>
    public bool AssumeClean { get; init; }
}

/// <summary>What a member of a new array got.</summary>
/// <param name="Spec">The member's spec.</param>
/// <param name="Superblock">The superblock written to it.</param>
public sealed record MdCreatedMember(string Spec, MdSuperblock Superblock);

/// <summary>
/// Creates md arrays the way <c>mdadm --create --metadata=1.2</c> lays them out: a v1.2 superblock
/// at 4 KiB of each member, an internal write-intent bitmap 4 KiB after it, the data from a data
/// offset chosen by mdadm's rule (room for the bitmap and some headroom, rounded up to 1 MiB).
/// The members' data areas are zeroed (unless <see cref="MdCreateOptions.AssumeClean"/>), so the
/// mirrors agree and the parity is right from the start and no initial resync is needed.
/// </summary>
public static class MdCreate
{
    /// <summary>Sectors from the superblock to the bitmap (md's default for v1.1/1.2: right after the superblock's 4 KiB).</summary>
    public const int BitmapOffsetSectors = 8;
    /// <summary>mdadm's default bitmap chunk for internal bitmaps: 64 MiB.</summary>
    public const long DefaultBitmapChunk = 64L << 20;

    /// <summary>Writes superblocks and bitmaps to <paramref name="memberSpecs"/> (opened in <paramref name="set"/>).</summary>
    /// <exception cref="ArgumentException">Bad geometry: too few members, members of different sizes, a bad chunk or bitmap chunk, a member already in an array (without Force), a member listed twice.</exception>
    /// <exception cref="IOException">A member cannot be opened, read or written.</exception>
    public static IReadOnlyList<MdCreatedMember> Create(IReadOnlyList<string> memberSpecs, MdCreateOptions options, DeviceSet set)
    {
        ArgumentNullException.ThrowIfNull(set);
        return Create(memberSpecs, options, set.Acquire);
    }

    /// <summary>Writes superblocks and bitmaps to <paramref name="memberSpecs"/>, opened by <paramref name="acquire"/> (a device set's, or a device open context's when a device kind formats its members).</summary>
    internal static IReadOnlyList<MdCreatedMember> Create(IReadOnlyList<string> memberSpecs, MdCreateOptions options, Func<string, DeviceHandle> acquire)
    {
        ArgumentNullException.ThrowIfNull(memberSpecs);
        ArgumentNullException.ThrowIfNull(options);
        int n = memberSpecs.Count;
        if (options.Level is not (1 or 5)) throw new ArgumentException($"RAID level {options.Level} is not supported (use 1 or 5)");
        int min = options.Level == 5 ? 3 : 2;
        if (n < min) throw new ArgumentException($"RAID{options.Level} needs at least {min} members, got {n}");
        if (n > 256) throw new ArgumentException($"{n} members is more than this implementation supports (256)");
        if (memberSpecs.Any(s => s == "missing")) throw new ArgumentException("create needs every member present ('missing' is for assembling a degraded array)");
        if (options.Journal is not null && options.Level != 5) throw new ArgumentException("a write journal is for RAID5 arrays only");

        var handles = new List<DeviceHandle>();
        try
        {
            foreach (string spec in memberSpecs)
            {
                DeviceHandle h = acquire(spec);
                if (handles.Any(o => ReferenceEquals(o.Device, h.Device))) throw new ArgumentException($"member {spec} is listed twice");
                handles.Add(h);
            }
            IBlockDevice first = handles[0].Device;
            foreach (DeviceHandle h in handles)
            {
                if (h.Device.CapacitySectors != first.CapacitySectors)
                    throw new ArgumentException($"members differ in size: {h.Spec} has {h.Device.CapacityBytes} bytes, {handles[0].Spec} has {first.CapacityBytes}");
                if (h.Device.Limits.LogicalBlockSize > MdSuperblock.BlockBytes)
                    throw new ArgumentException($"{h.Spec}: blocks of {h.Device.Limits.LogicalBlockSize} bytes are larger than md's 4 KiB metadata blocks");
                if ((h.Device.Features & DeviceFeatures.ReadOnly) != 0) throw new ArgumentException($"{h.Spec} is read-only");
            }
            int blockSize = handles.Max(h => h.Device.Limits.LogicalBlockSize);
            uint chunkSectors = 0;
            if (options.Level == 5)
            {
                long c = options.ChunkBytes;
                if (c <= 0 || !long.IsPow2(c)) throw new ArgumentException($"chunk size {c} is not a power of two");
                if (c % blockSize != 0 || c < 4096) throw new ArgumentException($"chunk size {c} is not a multiple of the members' {Math.Max(blockSize, 4096)}-byte blocks");
                if (c > 64L << 20) throw new ArgumentException($"chunk size {c} is larger than 64 MiB");
                chunkSectors = (uint)(c >> Bio.SectorShift);
            }

            long devSectors = first.CapacitySectors;
            long dataOffset = DataOffset(devSectors, chunkSectors);
            if (dataOffset + 2048 > devSectors) throw new ArgumentException($"members of {first.CapacityBytes} bytes are too small for md metadata ({dataOffset * 512} bytes) and data");
            long dataSize = devSectors - dataOffset;
            // The used size: whole chunks for RAID5, whole 4 KiB blocks otherwise (md rounds the same way).
            long round = options.Level == 5 ? chunkSectors : 8;
            long size = dataSize / round * round;
            if (size == 0) throw new ArgumentException($"members of {first.CapacityBytes} bytes leave no room for a chunk of data");

            long bitmapRoom = (dataOffset - MdSuperblock.SuperOffsetSectors - BitmapOffsetSectors) * 512;
            long bitmapChunk = BitmapChunk(options.BitmapChunkBytes, size, bitmapRoom);

            byte[] setUuid = Guid.NewGuid().ToByteArray();
            string host = Environment.MachineName;
            string setName = $"{host}:{options.Name}";
            if (System.Text.Encoding.UTF8.GetByteCount(setName) > 32)
                setName = System.Text.Encoding.UTF8.GetByteCount(options.Name) <= 32 ? options.Name : throw new ArgumentException($"array name '{options.Name}' is longer than 32 bytes");
            ulong now = MdSuperblock.EncodeTime(DateTimeOffset.UtcNow);
            var roles = new ushort[n];
            for (int i = 0; i < n; i++) roles[i] = (ushort)i;

            using var io = new MdMetadataIo(first.AddressSpace);
            var block = new byte[MdSuperblock.BlockBytes];
            foreach (DeviceHandle h in handles)
            {
                io.Read(h.Device, MdSuperblock.SuperOffsetSectors * 512, block);
                MdSuperblock? old = MdSuperblock.Decode(block, h.Device.CapacitySectors, out _);
                if (old is not null && !options.Force)
                    throw new ArgumentException($"{h.Spec} is already a member of md array {old.UuidText} ('{old.SetName}'); use --force to overwrite it");
            }

            if (options.Journal is not null)
            {
                // The journal before the members: a create that fails on it leaves the members untouched.
                DeviceHandle j = acquire(options.Journal);
                handles.Add(j);
                if (handles.Take(handles.Count - 1).Any(o => ReferenceEquals(o.Device, j.Device))) throw new ArgumentException($"journal {options.Journal} is also listed as a member");
                if (j.Device.AddressSpace != first.AddressSpace) throw new ArgumentException($"journal {options.Journal} is not in the members' address space");
                Raid5Journal.Format(j.Device, options.Journal, setUuid, n, chunkSectors, options.JournalMode);
            }
            var created = new List<MdCreatedMember>();
            for (int i = 0; i < n; i++)
            {
                IBlockDevice dev = handles[i].Device;
                var sb = new MdSuperblock
                {
                    FeatureMap = MdSuperblock.FeatureBitmap | (options.Journal is not null ? MdSuperblock.FeatureJournal : 0),
                    SetUuid = setUuid,
                    SetName = setName,
                    CTime = now,
                    Level = (uint)options.Level,
                    Layout = options.Level == 5 ? MdSuperblock.LayoutLeftSymmetric : 0,
                    Size = (ulong)size,
                    ChunkSectors = chunkSectors,
                    RaidDisks = (uint)n,
                    BitmapOffset = BitmapOffsetSectors,
                    DataOffset = (ulong)dataOffset,
                    DataSize = (ulong)dataSize,
                    DevNumber = (uint)i,
                    DeviceUuid = Guid.NewGuid().ToByteArray(),
                    UTime = now,
                    Events = 1,
                    ResyncOffset = MdSuperblock.Clean,
                    DevRoles = roles,
                };
                // Old superblock first, so a create that dies half-way leaves no member that claims to be in an array.
                io.Zero(dev, MdSuperblock.SuperOffsetSectors * 512, MdSuperblock.BlockBytes);
                // Bitmap: the superblock and all-clear bits (the whole room, so stale bits of an old array go too).
                io.Zero(dev, (MdSuperblock.SuperOffsetSectors + BitmapOffsetSectors) * 512, bitmapRoom);
                var bm = new MdBitmapSuperblock
                {
                    Uuid = setUuid,
                    Events = sb.Events,
                    EventsCleared = sb.Events,
                    SyncSize = (ulong)size,
                    ChunkBytes = (uint)bitmapChunk,
                    SectorsReserved = (uint)(bitmapRoom / 512),
                };
                var bmBlock = new byte[Math.Max(dev.Limits.LogicalBlockSize, MdBitmapSuperblock.Bytes)];
                bm.Encode(bmBlock);
                io.Write(dev, (MdSuperblock.SuperOffsetSectors + BitmapOffsetSectors) * 512, bmBlock);
                if (!options.AssumeClean) io.Zero(dev, dataOffset * 512, size * 512);
                sb.Encode(block);
                io.Write(dev, MdSuperblock.SuperOffsetSectors * 512, block);
                created.Add(new MdCreatedMember(handles[i].Spec, sb.Clone()));
            }
            return created;
        }
        finally
        {
            for (int i = handles.Count - 1; i >= 0; i--) handles[i].Dispose();
        }
    }

    /// <summary>
    /// mdadm's data offset for a v1.2 member (super1.c, <c>validate_geometry1</c>): 12 KiB of
    /// metadata, the bitmap space, and reshape headroom of 128 MiB halved while it exceeds about
    /// 0.1 % of the device (but stays at least four chunks), rounded up to 1 MiB.
    /// </summary>
    public static long DataOffset(long devSectors, uint chunkSectors)
    {
        long headroom = 128 * 1024 * 2;
        while ((headroom << 10) > devSectors && (chunkSectors == 0 || headroom / 2 >= chunkSectors * 2L))
            headroom >>= 1;
        long offset = 12 * 2 + BitmapSpace(devSectors) + headroom;
        return (offset + 2047) / 2048 * 2048;
    }

    /// <summary>mdadm's bitmap space (<c>choose_bm_space</c>): 4 KiB, 64 KiB above 8 GiB, 128 KiB above 200 GiB.</summary>
    private static long BitmapSpace(long devSectors) =>
        devSectors < 64 * 2 ? 0 : devSectors - 64 * 2 >= 200L * 1024 * 1024 * 2 ? 128 * 2 : devSectors - 4 * 2 > 8L * 1024 * 1024 * 2 ? 64 * 2 : 4 * 2;

    /// <summary>The bitmap chunk: the one asked for (checked to fit), else mdadm's default of at least 64 MiB.</summary>
    private static long BitmapChunk(long asked, long sizeSectors, long room)
    {
        long maxBits = (room - MdBitmapSuperblock.Bytes) * 8;
        long minChunk = 4096;
        while ((sizeSectors * 512 + minChunk - 1) / minChunk > maxBits) minChunk *= 2;
        if (asked == 0) return Math.Max(minChunk, DefaultBitmapChunk);
        if (asked < 4096 || !long.IsPow2(asked)) throw new ArgumentException($"bitmap chunk {asked} is not a power of two of at least 4 KiB");
        if (asked < minChunk) throw new ArgumentException($"bitmap chunk {asked} is too small: the bitmap must fit in {room} bytes (chunk of at least {minChunk})");
        if (asked > uint.MaxValue / 2 + 1) throw new ArgumentException($"bitmap chunk {asked} is too large");
        return asked;
    }
}
