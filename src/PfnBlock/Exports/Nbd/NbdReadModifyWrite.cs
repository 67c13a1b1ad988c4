using System.Runtime.InteropServices;
using PfnBlock.Block;

namespace PfnBlock.Exports.Nbd;

/// <summary>
/// Keeps read-modify-write exclusive on an export: a read-modify-write rewrites whole blocks, so a
/// write to the same block from any connection between its read and its write would be lost.
/// Every write, trim and write-zeroes counts itself in its connection's <see cref="NbdWriteCount"/>
/// while it runs (an uncontended interlocked add); a read-modify-write closes the gate, waits until
/// no write is running on any connection of the export, and runs alone. Writes that arrive
/// meanwhile wait for the gate to open. The export advertises CAN_MULTI_CONN, which is why this
/// lives on the export and not on a connection.
/// </summary>
internal sealed class NbdWriteGate
{
    private readonly Lock _exclusive = new();
    private readonly Lock _registry = new();
    private readonly List<NbdWriteCount> _writers = [];
    private NbdWriteCount[] _snapshot = [];
    private int _closed;

    /// <summary>Counts a connection's writes from now on.</summary>
    public void Register(NbdWriteCount writer)
    {
        lock (_registry)
        {
            _writers.Add(writer);
            Volatile.Write(ref _snapshot, [.. _writers]);
        }
    }

    /// <summary>Forgets a connection whose requests have all completed.</summary>
    public void Unregister(NbdWriteCount writer)
    {
        lock (_registry)
        {
            _writers.Remove(writer);
            Volatile.Write(ref _snapshot, [.. _writers]);
        }
    }

    /// <summary>Marks a write of <paramref name="writer"/> as running, first waiting for a read-modify-write in progress.</summary>
    public void Enter(NbdWriteCount writer)
    {
        while (true)
        {
            // Count first, then look (both full fences): a closing read-modify-write sees the count, or this sees it closed.
            Interlocked.Increment(ref writer.Running);
            if (Volatile.Read(ref _closed) == 0) return;
            Interlocked.Decrement(ref writer.Running);
            lock (_exclusive) { } // held by the read-modify-write until it is done
        }
    }

    /// <summary>Marks a write as done (before its reply is queued).</summary>
    public static void Exit(NbdWriteCount writer) => Interlocked.Decrement(ref writer.Running);

    /// <summary>Closes the gate and waits until no write runs on the export; <see cref="EndExclusive"/> opens it again.</summary>
    public void BeginExclusive()
    {
        _exclusive.Enter();
        Interlocked.Exchange(ref _closed, 1);
        foreach (NbdWriteCount w in Volatile.Read(ref _snapshot))
        {
            // Writes in flight finish on their own (inline, or on a device's completion thread).
            var spin = new SpinWait();
            while (Volatile.Read(ref w.Running) != 0) spin.SpinOnce(sleep1Threshold: 20);
        }
    }

    /// <summary>Opens the gate closed by <see cref="BeginExclusive"/>.</summary>
    public void EndExclusive()
    {
        Volatile.Write(ref _closed, 0);
        _exclusive.Exit();
    }
}

/// <summary>The writes one connection has running on its export, on a cache line of its own (other connections count their own).</summary>
[StructLayout(LayoutKind.Explicit, Size = 128)]
internal sealed class NbdWriteCount
{
    /// <summary>Writes entered and not yet exited.</summary>
    [FieldOffset(64)]
    public int Running;
}

// Requests that are not multiples of the export's block size, from clients that never asked for
// block sizes (nbdkit's blocksize filter and qemu-nbd serve them the same way): reads copy the
// wanted bytes out of whole blocks; writes and write-zeroes read the partial first and last block,
// patch them and write whole blocks, alone on the export (NbdWriteGate); trims, which are
// advisory, shrink to the whole blocks inside them. All of it is synchronous and goes through one
// bounce chunk of the connection: a slow path for rare clients, never taken by aligned requests.
internal sealed unsafe partial class NbdConnection
{
    private readonly NbdWriteCount _writes = new();

    /// <summary>Carries out a misaligned read, write, write-zeroes or trim and queues its reply.</summary>
    private void StartUnaligned(NbdRequest r, byte* payload)
    {
        NbdExport export = _export!;
        if (r.Command == NbdCommand.Read)
        {
            // Direct access reaches any byte: nothing to align.
            if (export.Dax is IDaxDevice dax && TryDirectRead(dax, r)) { Complete(r, NbdError.None); return; }
            AcquireChunks(r);
        }
        int bounce = RentBounce();
        BlockStatus status;
        try
        {
            if (r.Command == NbdCommand.Read) status = ReadUnaligned(r, bounce);
            else
            {
                export.WriteGate.BeginExclusive();
                try { status = WriteUnaligned(r, bounce, payload); }
                finally { export.WriteGate.EndExclusive(); }
            }
        }
        finally { ReturnBounce(bounce); }
        Complete(r, NbdRequestValidator.FromBlockStatus(status, r.Command));
    }

    private BlockStatus ReadUnaligned(NbdRequest r, int bounce)
    {
        ulong block = (ulong)_export!.MinBlockSize;
        ulong first = r.Offset & ~(block - 1), end = (r.Offset + r.Length + block - 1) & ~(block - 1);
        byte* b = _buffers!.ChunkAddress(bounce);
        for (ulong at = first; at < end; at += NbdConnectionBuffers.ChunkBytes)
        {
            uint n = (uint)Math.Min(end - at, NbdConnectionBuffers.ChunkBytes);
            BlockStatus s = BounceIo(BioOp.Read, at, bounce, 0, n, BioFlags.None);
            if (s != BlockStatus.Ok) return s;
            ulong from = Math.Max(at, r.Offset), to = Math.Min(at + n, r.Offset + r.Length);
            CopyToChunks(r, (uint)(from - r.Offset), b + (from - at), (uint)(to - from));
        }
        return BlockStatus.Ok;
    }

    private BlockStatus WriteUnaligned(NbdRequest r, int bounce, byte* payload)
    {
        ulong block = (ulong)_export!.MinBlockSize;
        ulong start = r.Offset, stop = r.Offset + r.Length;
        ulong first = start & ~(block - 1), end = (stop + block - 1) & ~(block - 1);
        ulong innerFirst = (start + block - 1) & ~(block - 1), innerEnd = stop & ~(block - 1);
        BioFlags fua = (r.Flags & NbdCommandFlags.Fua) != 0 ? BioFlags.Fua : BioFlags.None;
        if (r.Command == NbdCommand.Trim)
            return innerFirst < innerEnd ? BounceIo(BioOp.Discard, innerFirst, bounce, 0, (uint)(innerEnd - innerFirst), fua) : BlockStatus.Ok;
        if (r.Command == NbdCommand.WriteZeroes && innerFirst < innerEnd)
        {
            // Whole blocks inside are zeroed as such; only the partial blocks at the edges are patched.
            BioFlags flags = fua | ((r.Flags & NbdCommandFlags.NoHole) != 0 ? BioFlags.NoUnmap : BioFlags.None);
            BlockStatus s = BounceIo(BioOp.WriteZeroes, innerFirst, bounce, 0, (uint)(innerEnd - innerFirst), flags);
            if (s != BlockStatus.Ok) return s;
            if (first < innerFirst && (s = PatchZeroes(first, start, innerFirst, bounce, fua)) != BlockStatus.Ok) return s;
            return innerEnd < end ? PatchZeroes(innerEnd, innerEnd, stop, bounce, fua) : BlockStatus.Ok;
        }
        byte* b = _buffers!.ChunkAddress(bounce);
        for (ulong at = first; at < end; at += NbdConnectionBuffers.ChunkBytes)
        {
            uint n = (uint)Math.Min(end - at, NbdConnectionBuffers.ChunkBytes);
            BlockStatus s;
            // Only the blocks holding the request's first and last byte keep old bytes.
            if (at < start && (s = BounceIo(BioOp.Read, at, bounce, 0, (uint)block, BioFlags.None)) != BlockStatus.Ok) return s;
            if (at + n > stop && (s = BounceIo(BioOp.Read, at + n - block, bounce, n - (uint)block, (uint)block, BioFlags.None)) != BlockStatus.Ok) return s;
            ulong from = Math.Max(at, start), to = Math.Min(at + n, stop);
            _export.ReadModifyWriteHook?.Invoke(); // tests widen the window a lost update needs
            if (r.Command == NbdCommand.Write) Buffer.MemoryCopy(payload + (from - start), b + (from - at), to - from, to - from);
            else new Span<byte>(b + (from - at), (int)(to - from)).Clear();
            if ((s = BounceIo(BioOp.Write, at, bounce, 0, n, fua)) != BlockStatus.Ok) return s;
        }
        return BlockStatus.Ok;
    }

    /// <summary>Zeroes bytes <paramref name="from"/> to <paramref name="to"/> of the block at <paramref name="blockStart"/>, keeping the rest.</summary>
    private BlockStatus PatchZeroes(ulong blockStart, ulong from, ulong to, int bounce, BioFlags fua)
    {
        uint block = (uint)_export!.MinBlockSize;
        BlockStatus s = BounceIo(BioOp.Read, blockStart, bounce, 0, block, BioFlags.None);
        if (s != BlockStatus.Ok) return s;
        new Span<byte>(_buffers!.ChunkAddress(bounce) + (from - blockStart), (int)(to - from)).Clear();
        return BounceIo(BioOp.Write, blockStart, bounce, 0, block, fua);
    }

    /// <summary>One synchronous bio on the export's device through the bounce chunk (no data for discard and write-zeroes).</summary>
    private BlockStatus BounceIo(BioOp op, ulong offset, int bounce, uint bounceOffset, uint length, BioFlags flags)
    {
        Bio bio = BioPool.Shared.Rent(op, (long)(offset >> Bio.SectorShift), flags);
        if (op is BioOp.Read or BioOp.Write) bio.AddVec(_buffers!.ChunkPfn(bounce), bounceOffset, length);
        else bio.Iter.Size = length;
        BlockStatus status = _export!.Device.SubmitAndWait(bio);
        bio.Release();
        return status;
    }

    private void CopyToChunks(NbdRequest r, uint at, byte* src, uint length)
    {
        while (length > 0)
        {
            int chunk = (int)(at / NbdConnectionBuffers.ChunkBytes);
            uint within = at % NbdConnectionBuffers.ChunkBytes;
            uint n = Math.Min(length, NbdConnectionBuffers.ChunkBytes - within);
            Buffer.MemoryCopy(src, _buffers!.ChunkAddress(r.Chunks[chunk]) + within, n, n);
            src += n;
            at += n;
            length -= n;
        }
    }

    private int RentBounce()
    {
        Span<int> one = stackalloc int[1];
        lock (_sync)
        {
            while (!_buffers!.TryRent(1, one)) WaitForChunks();
        }
        return one[0];
    }

    private void ReturnBounce(int chunk)
    {
        lock (_sync) _buffers!.Return([chunk]);
    }
}
