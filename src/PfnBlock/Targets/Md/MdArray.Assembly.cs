using System.Text;
using PfnBlock.Block;
using PfnBlock.Devices;

namespace PfnBlock.Targets.Md;

public sealed partial class MdArray
{
    /// <summary>What the <c>md:</c> spec's MEMBERS argument lists: member specs split at top-level '+', each unbracketed.</summary>
    /// <exception cref="FormatException">An empty member or unbalanced brackets.</exception>
    public static IReadOnlyList<string> SplitMembers(string members)
    {
        var list = new List<string>();
        var item = new StringBuilder();
        int depth = 0;
        foreach (char c in members + "+")
        {
            if (c == '[') depth++;
            else if (c == ']' && --depth < 0) throw new FormatException($"md members '{members}': unbalanced ']'");
            if (c == '+' && depth == 0)
            {
                string m = item.ToString();
                // A member written in brackets (it holds a '+' or a comma) loses the outer pair.
                if (m.Length >= 2 && m[0] == '[' && m[^1] == ']' && Balanced(m.AsSpan(1, m.Length - 2))) m = m[1..^1];
                if (m.Length == 0) throw new FormatException($"md members '{members}': an empty member (two '+' in a row?)");
                list.Add(m);
                item.Clear();
                continue;
            }
            item.Append(c);
        }
        if (depth != 0) throw new FormatException($"md members '{members}': unbalanced '['");
        return list;
    }

    private static bool Balanced(ReadOnlySpan<char> s)
    {
        int depth = 0;
        foreach (char c in s)
        {
            if (c == '[') depth++;
            else if (c == ']' && --depth < 0) return false;
        }
        return depth == 0;
    }

    /// <summary>
    /// Assembles an array from its members (md's assembly, <c>mdadm --assemble</c>): reads and
    /// validates every superblock, checks they belong to one array, kicks stale members (lower
    /// events), places members by the roles the freshest superblock records, starts degraded when
    /// slots are empty (saying so), refuses when too few remain or — for RAID5 — when the array is
    /// both dirty and degraded (its parity may be stale: the write hole) unless told to start anyway,
    /// then resumes what an unclean stop or an interrupted rebuild left to do.
    /// </summary>
    /// <exception cref="IOException">The members do not make a startable array; the message says why.</exception>
    /// <remarks>
    /// An array whose superblocks record a write journal (MD_FEATURE_JOURNAL) needs it:
    /// <paramref name="journalSpec"/> is opened, checked to be this array's, and its committed
    /// records are replayed onto the members before I/O starts, so a dirty array needs no parity
    /// resync and may start degraded. Without it the array is refused, or with
    /// <paramref name="journalMissing"/> started read-only, as md forces an array with a missing journal.
    /// </remarks>
    internal static MappedDevice Assemble(IReadOnlyList<string> memberSpecs, string? name, bool startDirtyDegraded, DeviceOpenContext ctx,
        string? journalSpec = null, bool journalMissing = false)
    {
        var opened = new List<(string Spec, IBlockDevice Device, IDisposable Handle, MdSuperblock Sb)>();
        var messages = new List<string>();
        var claimed = new List<IBlockDevice>();
        MdArray? array = null;
        try
        {
            int missingGiven = 0;
            IBlockDevice? first = null;
            MdMetadataIo? io = null;
            try
            {
                foreach (string spec in memberSpecs)
                {
                    if (spec == "missing") { missingGiven++; continue; }
                    DeviceHandle h;
                    try { h = ctx.Acquire(spec); }
                    catch (Exception e) when (e is FormatException or ArgumentException)
                    {
                        throw new IOException($"md: member {spec}: {e.Message}", e);
                    }
                    IDisposable handle = ctx.TakeAcquired();
                    IBlockDevice dev = h.Device;
                    if (opened.Any(o => ReferenceEquals(o.Device, dev)))
                    {
                        handle.Dispose();
                        throw new IOException($"md: member {spec} is listed twice");
                    }
                    lock (s_claimLock)
                    {
                        if (s_claims.TryGetValue(dev, out MdArray? other))
                        {
                            handle.Dispose();
                            throw new IOException($"md: member {spec} is already in use by md array {other.Name} ({other.Uuid})");
                        }
                        s_claims[dev] = null!; // reserved; the array takes it below
                        claimed.Add(dev);
                    }
                    first ??= dev;
                    io ??= new MdMetadataIo(dev.AddressSpace);
                    MdMemberInfo info;
                    try { info = MdExamine.Examine(dev, io); }
                    catch (InvalidDataException e)
                    {
                        opened.Add((spec, dev, handle, null!));
                        throw new IOException($"md: member {spec}: {e.Message}", e);
                    }
                    opened.Add((spec, dev, handle, info.Superblock));
                }
            }
            finally { io?.Dispose(); }
            if (opened.Count == 0) throw new IOException("md: no members given (only 'missing')");

            // One array: every member's set_uuid equals the first's.
            MdSuperblock reference = opened[0].Sb;
            foreach (var o in opened)
                if (!o.Sb.SetUuid.AsSpan().SequenceEqual(reference.SetUuid))
                    throw new IOException($"md: member {o.Spec} belongs to another array ({o.Sb.UuidText} '{o.Sb.SetName}', not {reference.UuidText} '{reference.SetName}')");

            // The freshest superblock speaks for the array; members behind it are stale.
            MdSuperblock fresh = opened.MaxBy(o => o.Sb.Events).Sb;
            var slots = new MdMember?[fresh.RaidDisks];
            var retiredStale = new List<MdMember>();
            foreach (var o in opened)
            {
                MdSuperblock sb = o.Sb;
                if (sb.Level != fresh.Level || sb.RaidDisks != fresh.RaidDisks || sb.Size != fresh.Size || sb.ChunkSectors != fresh.ChunkSectors || sb.Layout != fresh.Layout)
                    throw new IOException($"md: member {o.Spec} disagrees with the array's geometry (level {sb.Level}, {sb.RaidDisks} disks, size {sb.Size}, chunk {sb.ChunkSectors})");
                ushort role = sb.DevNumber < fresh.DevRoles.Length ? fresh.DevRoles[sb.DevNumber] : MdSuperblock.RoleSpare;
                if (sb.Events < fresh.Events)
                {
                    messages.Add($"member {o.Spec} is stale (events {sb.Events}, the array is at {fresh.Events}): left out, the array starts degraded");
                    retiredStale.Add(new MdMember(-1, o.Spec, o.Device, o.Handle, sb, MdMemberState.Missing));
                    continue;
                }
                if (role >= MdSuperblock.RoleMax || role >= fresh.RaidDisks)
                {
                    messages.Add($"member {o.Spec} is {(role == MdSuperblock.RoleFaulty ? "marked faulty" : role == MdSuperblock.RoleSpare ? "a spare" : $"in role 0x{role:x}")}: not used");
                    retiredStale.Add(new MdMember(-1, o.Spec, o.Device, o.Handle, sb, MdMemberState.Missing));
                    continue;
                }
                if (slots[role] is { } taken)
                    throw new IOException($"md: members {taken.Spec} and {o.Spec} both claim slot {role}");
                bool recovering = (sb.FeatureMap & MdSuperblock.FeatureRecoveryOffset) != 0 && sb.RecoveryOffset < sb.Size;
                var member = new MdMember(role, o.Spec, o.Device, o.Handle, sb, recovering ? MdMemberState.Recovering : MdMemberState.InSync);
                if (recovering)
                {
                    member.RecoveryOffset = (long)sb.RecoveryOffset;
                    messages.Add($"member {o.Spec} (slot {role}) was being rebuilt: recovery resumes at sector {sb.RecoveryOffset}");
                }
                slots[role] = member;
            }
            int level = (int)fresh.Level;
            for (int s = 0; s < slots.Length; s++)
            {
                if (slots[s] is not null) continue;
                messages.Add($"slot {s} has no member{(missingGiven > 0 ? " (missing)" : "")}: the array starts degraded");
                slots[s] = new MdMember(s, "missing", null, null, null, MdMemberState.Missing);
            }
            int inSync = slots.Count(m => m!.State == MdMemberState.InSync);
            int needed = level == 5 ? (int)fresh.RaidDisks - 1 : 1;
            if (inSync < needed)
                throw new IOException($"md: cannot start RAID{level}: only {inSync} of {fresh.RaidDisks} members are in sync; it needs {needed}" +
                    (messages.Count > 0 ? $" ({string.Join("; ", messages)})" : ""));
            bool hasJournal = (fresh.FeatureMap & MdSuperblock.FeatureJournal) != 0;
            bool readOnly = ctx.ReadOnly;
            if (journalSpec is not null && !hasJournal)
                throw new IOException($"md: array {fresh.UuidText} has no write journal (its superblocks lack MD_FEATURE_JOURNAL); create it with one: pfnblock raid create --journal SPEC");
            if (hasJournal && journalSpec is null)
            {
                if (!journalMissing)
                    throw new IOException($"md: array {fresh.UuidText} has a write journal but none was given: add ',journal=SPEC', or ',journal_missing' to start it read-only without it (as md does)");
                readOnly = true;
                messages.Add("write journal missing: the array starts read-only (md forces an array whose journal is missing read-only)");
            }
            bool dirty = !fresh.IsClean;
            // With its journal the array replays every stripe write a crash may have torn: no write hole.
            if (level == 5 && dirty && inSync < fresh.RaidDisks && journalSpec is null)
            {
                if (!startDirtyDegraded)
                    throw new IOException("md: cannot start dirty degraded RAID5: it stopped uncleanly and a member is missing, so the parity of stripes written at the crash may be stale " +
                        "and rebuilding from it could return wrong data (the RAID5 write hole); add ',start_dirty_degraded' to start it anyway");
                messages.Add("starting dirty degraded array: data corruption possible (the RAID5 write hole)");
            }

            string arrayName = name ?? (fresh.SetName.Contains(':') ? fresh.SetName[(fresh.SetName.IndexOf(':') + 1)..] : fresh.SetName);
            if (arrayName.Length == 0) arrayName = "md";
            var roles = new ushort[Math.Max(fresh.DevRoles.Length, slots.Max(m => (int)m!.DevNumber + 1))];
            Array.Fill(roles, MdSuperblock.RoleFaulty);
            fresh.DevRoles.CopyTo(roles, 0);
            // Members left out (stale, faulty) are recorded as faulty from now on, as md kicks them.
            foreach (MdMember m in retiredStale)
                if (m.DevNumber < roles.Length && roles[m.DevNumber] < MdSuperblock.RoleMax) roles[m.DevNumber] = MdSuperblock.RoleFaulty;
            array = new MdArray(fresh.Clone(), [.. slots.Select(m => m!)], roles, ctx, arrayName, readOnly);
            array._retired.AddRange(retiredStale);
            if (journalSpec is not null) array.OpenJournal(journalSpec, claimed, ctx);
            lock (s_claimLock)
                foreach (IBlockDevice dev in claimed) s_claims[dev] = array;
            return array.Start(dirty, messages, first!);
        }
        catch
        {
            lock (s_claimLock)
                foreach (IBlockDevice dev in claimed)
                    if (s_claims.TryGetValue(dev, out MdArray? a) && (a is null || a == array)) s_claims.Remove(dev);
            if (array is not null) array.ReleaseAfterFailedStart();
            else for (int i = opened.Count - 1; i >= 0; i--) opened[i].Handle.Dispose();
            throw;
        }
    }

    /// <summary>Opens and claims the journal device (released with the members).</summary>
    private void OpenJournal(string spec, List<IBlockDevice> claimed, DeviceOpenContext ctx)
    {
        DeviceHandle h;
        try { h = ctx.Acquire(spec); }
        catch (Exception e) when (e is FormatException or ArgumentException) { throw new IOException($"md: journal {spec}: {e.Message}", e); }
        _journalHandle = ctx.TakeAcquired();
        lock (s_claimLock)
        {
            if (s_claims.TryGetValue(h.Device, out MdArray? other))
                throw new IOException($"md: journal {spec} is already in use by md array {other?.Name ?? Name}");
            s_claims[h.Device] = this;
            claimed.Add(h.Device);
        }
        if (h.Device.AddressSpace != _slots.First(m => m.Device is not null).Device!.AddressSpace)
            throw new IOException($"md: journal {spec} is not in the members' address space");
        Journal = Raid5Journal.Open(this, h.Device, spec, _template.SetUuid);
    }

    /// <summary>Loads the bitmap, builds the personality and the mapped device, marks the array active and starts the worker.</summary>
    private MappedDevice Start(bool dirty, List<string> messages, IBlockDevice anyMember)
    {
        MdMember source = _slots.First(m => m.State == MdMemberState.InSync);
        int blockSize = _slots.Where(m => m.Device is not null).Max(m => m.Device!.Limits.LogicalBlockSize);
        long bitmapByte = ((long)_template.SuperOffset + _template.BitmapOffset) * 512;
        MdBitmapSuperblock? bitmap = null;
        byte[]? image = null;
        if (_template.HasBitmap)
        {
            using var io = new MdMetadataIo(anyMember.AddressSpace);
            MdMemberInfo info = MdExamine.Examine(source.Device!, io);
            // md's rule: a bitmap whose events lag the superblock's missed updates and cannot be trusted.
            if (info.Bitmap is { } bm && bm.Events >= _template.Events && (bm.State & MdBitmapSuperblock.StateStale) == 0)
            {
                bitmap = bm;
                long bytes = (MdBitmapSuperblock.Bytes + (bm.Bits + 7) / 8 + blockSize - 1) / blockSize * blockSize;
                image = new byte[bytes];
                for (int done = 0; done < bytes; done += MdMetadataIo.BufferBytes)
                    io.Read(source.Device!, bitmapByte + done, image.AsSpan(done, (int)Math.Min(MdMetadataIo.BufferBytes, bytes - done)));
            }
            else
            {
                messages.Add(info.Bitmap is null ? $"write-intent bitmap unusable ({info.BitmapError}): a full resync replaces it"
                    : $"write-intent bitmap is stale (events {info.Bitmap.Events}, the array is at {_template.Events}): a full resync replaces it");
                // Rebuild the bitmap from scratch: same chunk as md would pick, all clear.
                bitmap = new MdBitmapSuperblock
                {
                    Uuid = _template.SetUuid,
                    SyncSize = _template.Size,
                    ChunkBytes = info.Bitmap?.ChunkBytes ?? (uint)Math.Max(4096, MdCreate.DefaultBitmapChunk),
                    SectorsReserved = (uint)((long)_template.DataOffset - (long)_template.SuperOffset - _template.BitmapOffset),
                };
                while (bitmap.Bits / 8 + MdBitmapSuperblock.Bytes > (long)bitmap.SectorsReserved * 512) bitmap.ChunkBytes *= 2;
            }
        }
        long regionSectors = bitmap is not null ? bitmap.ChunkBytes >> Bio.SectorShift : MdCreate.DefaultBitmapChunk >> Bio.SectorShift;
        Regions = new WriteIntentBitmap(this, MemberSectors, regionSectors, bitmap, bitmapByte, blockSize, anyMember.AddressSpace);
        if (bitmap is not null)
        {
            BitmapDaemonInterval = TimeSpan.FromSeconds(Math.Max(1, bitmap.DaemonSleep));
            if (image is not null) Regions.Load(image);
            else bitmap.Encode(Regions.Shadow);
            Regions.MarkAllDirty();
        }
        if (Journal is { WriteBack: true, IsClean: false } && IsReadOnly)
            throw new IOException($"md: journal {Journal.Spec} is a write-back journal that was not stopped cleanly: acknowledged writes may be in it alone, and a read-only array cannot write them out; assemble the array read-write");
        if (Journal is not null && !IsReadOnly) messages.Add(Journal.Replay());
        if (dirty && !IsReadOnly && Journal is null)
        {
            // What an unclean stop left: the regions whose bit is set, or everything when no bitmap says.
            bool guided = image is not null;
            int marked = 0;
            for (int r = 0; r < Regions.Regions; r++)
                if (!guided || Regions.IsSet(r)) { Regions.SetUnsynced(r, true); marked++; }
            if (Level == 5 && Degraded > 0) { for (int r = 0; r < Regions.Regions; r++) Regions.SetUnsynced(r, false); }
            else if (marked > 0) messages.Add($"unclean stop: {marked} of {Regions.Regions} region(s) will be resynced{(guided ? " (from the write-intent bitmap)" : " (no usable bitmap: all of them)")}");
            if (!guided) Regions.SetAll(true);
        }

        IBlockDevice[] lower = [.. _slots.Where(m => m.Device is not null).Select(m => m.Device!)];
        _personality = Level == 5 ? new Raid5Target(this, lower) : new Raid1Target(this, lower);
        _device = new MappedDevice(Name, [new TableEntry(0, Sectors, Level == 5 ? "raid5" : "raid1", _personality)], new MemberHandles(this));
        foreach (string m in messages) Report(m);
        if (!IsReadOnly) WriteSuperblocks(clean: false);
        StartWorker();
        return _device;
    }

    /// <summary>Undoes a start that threw after the array object existed.</summary>
    private void ReleaseAfterFailedStart()
    {
        _stopping = true;
        _wake.Set();
        _worker?.Join();
        if (_device is not null) { _device.Dispose(); return; }
        new MemberHandles(this).Dispose();
        Regions?.Dispose();
        _io.Dispose();
    }

    /// <summary>
    /// Puts <paramref name="spec"/> into the first slot without an in-sync member that is faulty or
    /// missing, writes its superblock (recovering from sector 0) and starts rebuilding it from the
    /// others. The faulty member's device is released with the array.
    /// </summary>
    /// <exception cref="InvalidOperationException">No slot needs a member, or the array failed or is read-only.</exception>
    /// <exception cref="IOException">The replacement cannot be opened, is too small, or does not fit the array's limits.</exception>
    public void AddReplacement(string spec)
    {
        if (IsReadOnly) throw new InvalidOperationException($"md {Name} is read-only");
        if (_failed) throw new InvalidOperationException($"md {Name} has failed: nothing to rebuild from");
        MdMember? old;
        lock (_lock) old = _slots.FirstOrDefault(m => m.State is MdMemberState.Faulty or MdMemberState.Missing);
        if (old is null) throw new InvalidOperationException($"md {Name}: no slot needs a replacement");
        DeviceHandle h;
        try { h = _context.Acquire(spec); }
        catch (Exception e) when (e is FormatException or ArgumentException) { throw new IOException($"md {Name}: replacement {spec}: {e.Message}", e); }
        IDisposable handle = _context.TakeAcquired();
        IBlockDevice dev = h.Device;
        try
        {
            IBlockDevice reference = _personality!.Devices[0];
            if (dev.CapacitySectors < (long)_template.DataOffset + MemberSectors)
                throw new IOException($"md {Name}: replacement {spec} has {dev.CapacitySectors} sectors, the array needs {(long)_template.DataOffset + MemberSectors}");
            if (dev.Limits.LogicalBlockSize > _device!.Limits.LogicalBlockSize || dev.Limits.DmaAlignment > _device.Limits.DmaAlignment
                || dev.Limits.MaxBytesPerBio < _device.Limits.MaxBytesPerBio || dev.AddressSpace != reference.AddressSpace)
                throw new IOException($"md {Name}: replacement {spec} does not fit the array's limits (block size, alignment, bio size or address space)");
            if ((dev.Features & DeviceFeatures.ReadOnly) != 0) throw new IOException($"md {Name}: replacement {spec} is read-only");
            lock (s_claimLock)
            {
                // A member this array left out (stale, faulty) may come back as a replacement; one in use may not.
                if (s_claims.TryGetValue(dev, out MdArray? other) && (other != this || _slots.Any(m => ReferenceEquals(m.Device, dev))))
                    throw new IOException($"md {Name}: replacement {spec} is already in use by md array {other.Name}");
                s_claims[dev] = this;
            }
        }
        catch
        {
            handle.Dispose();
            throw;
        }
        uint devNumber;
        MdMember member;
        lock (_lock)
        {
            devNumber = (uint)_roles.Length;
            Array.Resize(ref _roles, _roles.Length + 1);
            _roles[devNumber] = (ushort)old.Slot;
            member = new MdMember(old.Slot, spec, dev, handle, null, MdMemberState.Recovering)
            {
                DevNumber = devNumber,
                DeviceUuid = Guid.NewGuid().ToByteArray(),
                DataOffset = (long)_template.DataOffset,
                DataSize = dev.CapacitySectors - (long)_template.DataOffset,
                RecoveryOffset = 0,
            };
            _retired.Add(old);
            Volatile.Write(ref _slots[old.Slot], member);
            _sbDirty = true;
        }
        // The replacement's bitmap area gets the array's bitmap, then its superblock names its role.
        if (Regions.Bitmap is not null) Regions.MarkAllDirty();
        Report($"{spec} replaces slot {old.Slot} ({old.Spec}); recovery starts");
        lock (s_claimLock)
            if (old.Device is not null && s_claims.TryGetValue(old.Device, out MdArray? a) && a == this) s_claims.Remove(old.Device);
        _wake.Set();
    }

    /// <summary>Marks the member in <paramref name="slot"/> faulty, as a failure would (mdadm --fail).</summary>
    /// <exception cref="ArgumentOutOfRangeException">No such slot.</exception>
    public void FailMember(int slot)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(slot);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(slot, RaidDisks);
        MemberFailed(Slot(slot), BlockStatus.IoError, "failed by request");
    }
}
