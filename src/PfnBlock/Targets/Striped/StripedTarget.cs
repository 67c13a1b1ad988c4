using System.Numerics;
using PfnBlock.Block;
using PfnBlock.Devices;

namespace PfnBlock.Targets.Striped;

/// <summary>
/// Stripes a range over several devices in chunks (the kernel's <c>dm-stripe</c>): chunk <i>k</i>
/// of the range is chunk <i>k</i> / N of stripe <i>k</i> mod N. Table:
/// <c>START LENGTH striped NUM_STRIPES CHUNK_SECTORS DEV1 OFFSET1 … DEVn OFFSETn</c>.
/// </summary>
/// <remarks>
/// <para><b>map.</b> A read or write that lies within one chunk — every 4 KiB I/O when chunks are
/// 4 KiB or larger and aligned — is remapped in place, as linear does (dm-stripe's only case, since
/// dm's core splits at <c>max_io_len</c> first). A bio that crosses chunk boundaries goes out as one
/// bio per stripe it touches, from the target's own <see cref="BioPool"/> and chained to it: the
/// chunks one stripe holds are neighbours there, so that stripe's bio gathers their parts of the
/// vectors in order and covers contiguous sectors (<see cref="GatherByStripe"/>). Only a bio whose
/// parts could overflow a bio's vectors is split at every chunk boundary instead, as dm-stripe does:
/// each piece but the last chained and submitted to its stripe, the bio itself, now inside its last
/// chunk, remapped.</para>
/// <para><b>flush</b> reaches the target once per stripe (<see cref="FlushBios"/>) and bio
/// <see cref="Bio.TargetBioNumber"/> goes to stripe of that number. <b>Discard and write-zeroes</b>
/// go out as one bio per stripe covering the part of the range that stripe holds — contiguous on the
/// stripe, since the range's chunks on one stripe are neighbours there (dm-stripe's
/// <c>stripe_map_range</c>) — and are advertised only when every stripe supports them.</para>
/// <para>A PREFLUSH never reaches a striped target with several stripes: the mapped device turns it
/// into a flush of every device below first (see <see cref="MappedDevice"/>).</para>
/// </remarks>
public sealed class StripedTarget : Target, IRegisteredTarget
{
    private readonly IBlockDevice[] _devs;
    private readonly long[] _starts;
    private readonly string[] _specs;
    private readonly int _stripes;
    private readonly int _stripesShift;   // log2 of the stripe count, or -1 when it is not a power of two
    private readonly int _chunkShift;
    private readonly long _chunkMask;
    private readonly BioPool _pool;

    private StripedTarget(LowerDevice[] devs, long[] starts, int chunkShift)
        : base([.. devs.Select(d => d.Device)])
    {
        _devs = [.. devs.Select(d => d.Device)];
        _specs = [.. devs.Select(d => d.Spec)];
        _starts = starts;
        _stripes = devs.Length;
        _stripesShift = BitOperations.IsPow2(_stripes) ? BitOperations.Log2((uint)_stripes) : -1;
        _chunkShift = chunkShift;
        _chunkMask = (1L << chunkShift) - 1;
        _pool = new BioPool(new BioPoolOptions { Name = "striped" });
    }

    /// <inheritdoc/>
    public static TargetType TargetType { get; } = new()
    {
        Name = "striped",
        Version = new(1, 6, 0),
        Arguments = "NUM_STRIPES CHUNK_SECTORS DEV1 OFFSET1 [DEV2 OFFSET2 ...]",
        Summary = "the line's sectors striped over NUM_STRIPES devices in chunks of CHUNK_SECTORS (a power of two, a multiple of the block size)",
        Create = Create,
        // Half or a quarter of each lower device, so that a sample stays as small as the others.
        Samples =
        [
            new("two stripes, 64 KiB chunks", s => new($"2 128 {s.Lower[0]} 0 {s.Lower[1]} 0", s.LowerSectors)),
            new("three stripes, 4 KiB chunks at odd offsets", s =>
                new($"3 8 {s.Lower[0]} 8 {s.Lower[1]} 1 {s.Lower[2]} 2048", 3 * (s.LowerSectors / 4 & ~7L))),
            new("four stripes, one-sector chunks", s =>
                new($"4 1 {s.Lower[0]} 0 {s.Lower[1]} 0 {s.Lower[2]} 0 {s.Lower[3]} 0", s.LowerSectors)),
        ],
    };

    private static StripedTarget Create(TargetContext ctx)
    {
        if (ctx.Args.Count < 2) throw TargetContext.Fail("Not enough arguments (NUM_STRIPES CHUNK_SECTORS DEV1 OFFSET1 ...)");
        long stripes = ctx.Number(0, "Invalid stripe count", int.MaxValue);
        if (stripes == 0) throw TargetContext.Fail("Invalid stripe count: '0'");
        long chunk = ctx.Number(1, "Invalid chunk_size", uint.MaxValue);
        if (chunk == 0 || !BitOperations.IsPow2(chunk)) throw TargetContext.Fail($"Invalid chunk size: {chunk} sectors is not a power of two");
        if (ctx.Args.Count != 2 + 2 * stripes)
            throw TargetContext.Fail($"{(ctx.Args.Count < 2 + 2 * stripes ? "Not enough" : "Too many")} destinations specified: "
                + $"{stripes} stripes need {stripes} DEVICE OFFSET pairs, the line has {ctx.Args.Count - 2} more arguments");
        if (ctx.Length % stripes != 0) throw TargetContext.Fail($"Target length not divisible by number of stripes ({ctx.Length} sectors, {stripes} stripes)");
        long width = ctx.Length / stripes;
        if (width % chunk != 0) throw TargetContext.Fail($"Target length not divisible by chunk size (each stripe holds {width} sectors, chunks are {chunk})");

        var starts = new long[stripes];
        for (int i = 0; i < stripes; i++) starts[i] = ctx.Sector(3 + 2 * i, $"Invalid offset of stripe {i}");
        var devs = new LowerDevice[stripes];
        for (int i = 0; i < stripes; i++)
        {
            devs[i] = ctx.Device(2 + 2 * i);
            TargetContext.RequireArea(devs[i].Device, starts[i], width);
        }
        // A piece of a bio split at a chunk boundary must still be whole blocks on every stripe.
        int lbs = devs.Max(d => d.Device.Limits.LogicalBlockSize);
        if ((chunk << Bio.SectorShift) % lbs != 0)
            throw TargetContext.Fail($"Invalid chunk size: {chunk} sectors is not a multiple of the {lbs}-byte logical block size of the stripes");
        return new StripedTarget(devs, starts, BitOperations.Log2((ulong)chunk));
    }

    /// <summary>Sectors per chunk.</summary>
    public long ChunkSectors => _chunkMask + 1;

    /// <summary>How many stripes.</summary>
    public int Stripes => _stripes;

    /// <inheritdoc/>
    public override int FlushBios => _stripes;

    /// <inheritdoc/>
    public override DeviceFeatures PassesThrough => base.PassesThrough | (DaxAligned ? DeviceFeatures.Dax : 0);

    // Direct access hands out pages, so every chunk and stripe start must be whole pages.
    private bool DaxAligned => _chunkShift >= 3 && _starts.All(s => (s & 7) == 0);

    /// <inheritdoc/>
    public override bool RemapsWithinLimits => true; // each stripe's area was checked, and pieces end at chunk (block) boundaries

    /// <inheritdoc/>
    public override MapResult Map(Bio bio, out IBlockDevice? lower)
    {
        switch (bio.Op)
        {
            case BioOp.Flush:
                lower = _devs[bio.TargetBioNumber];
                return MapResult.Remapped;
            case BioOp.Discard:
            case BioOp.WriteZeroes:
                lower = null;
                MapRange(bio);
                return MapResult.Submitted;
        }
        long sector = bio.Iter.Sector;
        // The fast path: the whole bio lies in one chunk.
        if (bio.Iter.Size > (ulong)(_chunkMask + 1 - (sector & _chunkMask)) << Bio.SectorShift)
        {
            if (GatherByStripe(bio))
            {
                lower = null;
                return MapResult.Submitted;
            }
            SplitAtChunks(bio);
        }
        int stripe = MapSector(bio.Iter.Sector, out bio.Iter.Sector);
        lower = _devs[stripe];
        return MapResult.Remapped;
    }

    /// <summary>The bios <see cref="GatherByStripe"/> is filling, one per stripe (per thread: Map runs on every submitter's thread).</summary>
    [ThreadStatic]
    private static Bio?[]? t_gather;

    /// <summary>
    /// Sends a read or write that crosses chunk boundaries as one bio per stripe: each gathers, in
    /// order, the parts of the bio's vectors that fall in that stripe's chunks, which are neighbours
    /// on the stripe, so its sectors are contiguous there. dm-stripe and md raid0 send a bio per
    /// chunk instead; here every bio a memory device completes costs a store fence (writes), a clock
    /// read and a locked decrement of the parent's count, which a 1 MiB bio over 64 KiB chunks paid
    /// 16 times where one namespace pays once. Returns false, having sent nothing, when a stripe's
    /// bio could need more vectors than a bio holds; the caller then splits at every chunk.
    /// </summary>
    private bool GatherByStripe(Bio bio)
    {
        if (bio.VecCount == 0) return false;
        long chunkBytes = (_chunkMask + 1) << Bio.SectorShift;
        long first = bio.Iter.Sector, last = first + (bio.Iter.Size >> Bio.SectorShift) - 1;
        // Each chunk boundary cuts at most one segment in two: parts ≤ segments + boundaries.
        long parts = bio.VecCount - bio.Iter.Index + (last >> _chunkShift) - (first >> _chunkShift);
        if (parts > _pool.MaxVecs) return false;

        Bio?[] open = t_gather is { } g && g.Length >= _stripes ? g : t_gather = new Bio?[_stripes];
        long sector = first;
        int stripe = MapSector(sector, out long deviceSector);
        long chunkLeft = chunkBytes - ((sector & _chunkMask) << Bio.SectorShift);
        foreach (BioVec seg in bio.Segments)
        {
            uint done = 0;
            while (done < seg.Length)
            {
                if (chunkLeft == 0)
                {
                    stripe = MapSector(sector, out deviceSector);
                    chunkLeft = chunkBytes;
                }
                uint n = (uint)Math.Min(seg.Length - done, chunkLeft);
                (open[stripe] ??= bio.Derive(deviceSector, _pool)).AddVec(seg.Pfn, seg.Offset + done, n);
                done += n;
                chunkLeft -= n;
                if (chunkLeft == 0) sector = (sector | _chunkMask) + 1;
            }
        }
        // Every part is chained before the first goes out, so the bio cannot complete in between.
        for (int s = 0; s < _stripes; s++) open[s]?.Chain(bio);
        for (int s = 0; s < _stripes; s++)
        {
            if (open[s] is not { } piece) continue;
            open[s] = null;
            _devs[s].Submit(piece);
        }
        bio.Complete(BlockStatus.Ok); // our reference: the bio completes after its last part
        return true;
    }

    /// <summary>Sends every whole-chunk piece but the last to its stripe, leaving the bio inside its last chunk.</summary>
    private void SplitAtChunks(Bio bio)
    {
        while (true)
        {
            long left = _chunkMask + 1 - (bio.Iter.Sector & _chunkMask);
            if (bio.Iter.Size >> Bio.SectorShift <= left) return;
            Bio piece = bio.Split((int)left, _pool);
            piece.Chain(bio);
            int stripe = MapSector(piece.Iter.Sector, out piece.Iter.Sector);
            _devs[stripe].Submit(piece);
        }
    }

    /// <summary>The stripe sector <paramref name="sector"/> (relative to the target) lies on, and where on that device.</summary>
    private int MapSector(long sector, out long deviceSector)
    {
        long chunk = sector >> _chunkShift;
        int stripe;
        if (_stripesShift >= 0)
        {
            stripe = (int)(chunk & (_stripes - 1));
            chunk >>= _stripesShift;
        }
        else
        {
            (chunk, long rem) = Math.DivRem(chunk, _stripes);
            stripe = (int)rem;
        }
        deviceSector = _starts[stripe] + (chunk << _chunkShift) + (sector & _chunkMask);
        return stripe;
    }

    /// <summary>
    /// Where on stripe <paramref name="target"/> the part of the range that starts (or ends) at
    /// <paramref name="sector"/> begins: the sector itself if it is on that stripe, else the start of
    /// the stripe's chunk in the same row, or of its next chunk when the row passed that stripe already.
    /// </summary>
    private long RangeSector(long sector, int target)
    {
        int stripe = MapSector(sector, out long deviceSector);
        long onStripe = deviceSector - _starts[stripe];
        if (stripe == target) return onStripe;
        long rowStart = onStripe & ~_chunkMask;
        return target < stripe ? rowStart + _chunkMask + 1 : rowStart;
    }

    /// <summary>Discard or write-zeroes: one bio per stripe that holds part of the range, chained to the original.</summary>
    private void MapRange(Bio bio)
    {
        long begin = bio.Iter.Sector, end = begin + (bio.Iter.Size >> Bio.SectorShift);
        for (int s = 0; s < _stripes; s++)
        {
            long b = RangeSector(begin, s), e = RangeSector(end, s);
            if (b >= e) continue;
            Bio piece = bio.Clone(_pool);
            piece.Iter.Sector = _starts[s] + b;
            piece.Iter.Size = (uint)((e - b) << Bio.SectorShift);
            piece.Chain(bio);
            _devs[s].Submit(piece);
        }
        bio.Complete(BlockStatus.Ok); // our reference: the bio completes after its last piece
    }

    /// <inheritdoc/>
    public override string Arguments =>
        $"{_stripes} {_chunkMask + 1} {string.Join(' ', Enumerable.Range(0, _stripes).Select(i => $"{_specs[i]} {_starts[i]}"))}";

    /// <inheritdoc/>
    public override long DirectAccess(long pageOffset, long pages, out DaxRange range)
    {
        range = default;
        if (!DaxAligned) return 0;
        long sector = pageOffset << 3;
        int stripe = MapSector(sector, out long deviceSector);
        // Pages are contiguous on the device only up to the end of the chunk.
        long inChunk = (_chunkMask + 1 - (sector & _chunkMask)) >> 3;
        return ((IDaxDevice)_devs[stripe]).DirectAccess(deviceSector >> 3, Math.Min(pages, inChunk), out range);
    }

    /// <inheritdoc/>
    public override void PersistRange(long offset, long length)
    {
        while (length > 0)
        {
            long sector = offset >> Bio.SectorShift;
            long chunkEnd = ((sector | _chunkMask) + 1) << Bio.SectorShift;
            long n = Math.Min(length, chunkEnd - offset);
            int stripe = MapSector(sector, out long deviceSector);
            ((IDaxDevice)_devs[stripe]).PersistRange((deviceSector << Bio.SectorShift) + (offset & (Bio.SectorSize - 1)), n);
            offset += n;
            length -= n;
        }
    }
}
