using System.Diagnostics;
using PfnBlock.Block;
using PfnBlock.Devices;
using PfnBlock.Memory;

namespace PfnBlock.Targets.Flakey;

/// <summary>
/// A device that works for a while, then misbehaves for a while (the kernel's <c>dm-flakey</c>):
/// up for UP seconds, down for DOWN seconds, and so on, counted from when the table was built.
/// Table: <c>START LENGTH flakey DEVICE OFFSET UP_SECONDS DOWN_SECONDS [NUM_FEATURES FEATURE…]</c>.
/// </summary>
/// <remarks>
/// <para>Up, it is linear. Down, as recent kernels do it: with no features, every read and write
/// (flushes, discards and write-zeroes count as writes) fails with an I/O error. Features change
/// that: <c>error_reads</c> fails reads; <c>drop_writes</c> completes writes without doing them;
/// <c>error_writes</c> fails them; <c>corrupt_bio_byte N r|w VALUE FLAGS</c> sets byte N (from 1) of
/// the data of every read (after it completed) or write (on the way down) whose flags include every
/// bit of FLAGS (PfnBlock's <see cref="BioFlags"/>: 1 FUA, 2 PREFLUSH, 4 NOUNMAP; 0 matches all) to
/// VALUE. Reads not failed by <c>error_reads</c> pass down.</para>
/// <para>A corrupted write must not change the submitter's buffer, so the block holding byte N is
/// copied into a frame from the target's own <see cref="FramePool"/>, corrupted there and written
/// from it; the blocks before and after go down as splits of the bio (no allocation per I/O; an
/// empty pool answers <see cref="MapResult.Requeue"/>).</para>
/// </remarks>
public sealed unsafe class FlakeyTarget : Target, IRegisteredTarget
{
    [Flags]
    private enum Faults
    {
        None = 0,
        ErrorReads = 1,
        DropWrites = 2,
        ErrorWrites = 4,
    }

    private const int BounceRuns = 8;

    private readonly IBlockDevice _lower;
    private readonly string _spec;
    private readonly long _start;
    private readonly uint _up;
    private readonly uint _down;
    private readonly Faults _faults;
    private readonly bool _featuresGiven;
    private readonly uint _corruptByte;   // from 1; 0 for none
    private readonly bool _corruptWrites;
    private readonly byte _corruptValue;
    private readonly uint _corruptFlags;
    private readonly ReadCorrupter? _readCorrupter;
    private readonly DramArena? _bounceArena;
    private readonly FramePool? _bounce;
    private readonly BioPool? _pool;
    private readonly BounceDone? _bounceDone;
    private readonly int _blockSize;
    private int _forced;

    private FlakeyTarget(LowerDevice dev, long start, uint up, uint down, Faults faults, bool featuresGiven,
        uint corruptByte, bool corruptWrites, byte corruptValue, uint corruptFlags)
        : base(dev.Device)
    {
        (_lower, _spec, _start, _up, _down) = (dev.Device, dev.Spec, start, up, down);
        (_faults, _featuresGiven) = (faults, featuresGiven);
        (_corruptByte, _corruptWrites, _corruptValue, _corruptFlags) = (corruptByte, corruptWrites, corruptValue, corruptFlags);
        Epoch = Stopwatch.GetTimestamp();
        _blockSize = _lower.Limits.LogicalBlockSize;
        if (corruptByte != 0 && !corruptWrites) _readCorrupter = new ReadCorrupter(this);
        if (corruptByte != 0 && corruptWrites)
        {
            int frames = (_blockSize + Pfn.PageSize - 1) / Pfn.PageSize;
            _bounceArena = DramArena.Create((long)frames * BounceRuns * Pfn.PageSize, _lower.AddressSpace, "flakey-bounce");
            _bounce = new FramePool(_bounceArena.Allocator, frames, BounceRuns, "flakey-bounce");
            _pool = new BioPool(new BioPoolOptions { Name = "flakey", MaxVecs = 1, Context = _ => new BounceSlot() });
            _bounceDone = new BounceDone(_bounce);
        }
    }

    /// <inheritdoc/>
    public static TargetType TargetType { get; } = new()
    {
        Name = "flakey",
        Version = new(1, 5, 0),
        Arguments = "DEVICE OFFSET UP_SECONDS DOWN_SECONDS [NUM_FEATURES error_reads|drop_writes|error_writes|corrupt_bio_byte N r|w VALUE FLAGS ...]",
        Summary = "linear onto DEVICE, but for DOWN_SECONDS after every UP_SECONDS reads and writes fail (or are dropped or corrupted, as the features say)",
        Create = Create,
        Samples =
        [
            new("always up (down interval 0)", s => new($"{s.Lower[0]} 0 60 0", s.LowerSectors)),
            new("up for a day, then dropping writes, at an offset", s => new($"{s.Lower[0]} 2048 86400 60 1 drop_writes", s.LowerSectors - 2048)),
        ],
    };

    private static FlakeyTarget Create(TargetContext ctx)
    {
        if (ctx.Args.Count < 4) throw TargetContext.Fail($"Invalid argument count (expected DEVICE OFFSET UP DOWN [FEATURES], got {ctx.Args.Count} arguments)");
        long start = ctx.Sector(1, "Invalid device sector");
        uint up = (uint)ctx.Number(2, "Invalid up interval", uint.MaxValue);
        uint down = (uint)ctx.Number(3, "Invalid down interval", uint.MaxValue);
        if (up + (long)down == 0) throw TargetContext.Fail("Total (up + down) interval is zero");
        if (up + (long)down > uint.MaxValue) throw TargetContext.Fail("Interval overflow");

        Faults faults = Faults.None;
        uint corruptByte = 0, corruptFlags = 0;
        bool corruptWrites = false;
        byte corruptValue = 0;
        int count = 0;
        if (ctx.Args.Count > 4)
        {
            count = (int)ctx.Number(4, "Invalid number of feature args", 7);
            if (count != ctx.Args.Count - 5)
                throw TargetContext.Fail($"Invalid number of feature args: the count says {count}, the line has {ctx.Args.Count - 5}");
        }
        for (int i = 5; i < 5 + count;)
        {
            string name = ctx.Args[i++].ToLowerInvariant();
            switch (name)
            {
                case "error_reads":
                    if ((faults & Faults.ErrorReads) != 0) throw TargetContext.Fail("Feature error_reads duplicated");
                    faults |= Faults.ErrorReads;
                    break;
                case "drop_writes":
                    if ((faults & Faults.DropWrites) != 0) throw TargetContext.Fail("Feature drop_writes duplicated");
                    if ((faults & Faults.ErrorWrites) != 0) throw TargetContext.Fail("Feature drop_writes conflicts with feature error_writes");
                    faults |= Faults.DropWrites;
                    break;
                case "error_writes":
                    if ((faults & Faults.ErrorWrites) != 0) throw TargetContext.Fail("Feature error_writes duplicated");
                    if ((faults & Faults.DropWrites) != 0) throw TargetContext.Fail("Feature error_writes conflicts with feature drop_writes");
                    faults |= Faults.ErrorWrites;
                    break;
                case "corrupt_bio_byte":
                    if (corruptByte != 0) throw TargetContext.Fail("Feature corrupt_bio_byte duplicated");
                    if (5 + count - i < 4) throw TargetContext.Fail("Feature corrupt_bio_byte requires 4 parameters (N r|w VALUE FLAGS)");
                    corruptByte = (uint)ctx.Number(i++, "Invalid corrupt bio byte", uint.MaxValue);
                    if (corruptByte == 0) throw TargetContext.Fail("Invalid corrupt bio byte: '0' (bytes count from 1)");
                    string direction = ctx.Args[i++].ToLowerInvariant();
                    if (direction is not ("r" or "w")) throw TargetContext.Fail($"Invalid corrupt bio direction (r or w): '{ctx.Args[i - 1]}'");
                    corruptWrites = direction == "w";
                    corruptValue = (byte)ctx.Number(i++, "Invalid corrupt value to write into bio byte (0-255)", 255);
                    corruptFlags = (uint)ctx.Number(i++, "Invalid corrupt bio flags mask", uint.MaxValue);
                    break;
                default:
                    throw TargetContext.Fail($"Unrecognised flakey feature requested: '{ctx.Args[i - 1]}' (known: error_reads, drop_writes, error_writes, corrupt_bio_byte)");
            }
        }
        if (corruptByte != 0 && corruptWrites && (faults & Faults.DropWrites) != 0)
            throw TargetContext.Fail("drop_writes is incompatible with corrupt_bio_byte with the WRITE flag set");
        if (corruptByte != 0 && corruptWrites && (faults & Faults.ErrorWrites) != 0)
            throw TargetContext.Fail("error_writes is incompatible with corrupt_bio_byte with the WRITE flag set");
        if (corruptByte != 0 && !corruptWrites && (faults & Faults.ErrorReads) != 0)
            throw TargetContext.Fail("error_reads is incompatible with corrupt_bio_byte with the READ flag set");
        bool given = faults != Faults.None || corruptByte != 0;
        if (!given) faults = Faults.ErrorReads | Faults.ErrorWrites; // no features: down means every I/O fails

        LowerDevice dev = ctx.Device(0);
        TargetContext.RequireArea(dev.Device, start, ctx.Length);
        return new FlakeyTarget(dev, start, up, down, faults, given, corruptByte, corruptWrites, corruptValue, corruptFlags);
    }

    /// <summary>The Stopwatch timestamp the up/down cycle counts from (the table's creation); tests move it to reach a phase.</summary>
    internal long Epoch { get; set; }

    /// <summary>A test's override of the clock: true down, false up, null (the default) by the intervals.</summary>
    internal bool? ForcedDown
    {
        get => Volatile.Read(ref _forced) switch { 1 => false, 2 => true, _ => null };
        set => Volatile.Write(ref _forced, value switch { false => 1, true => 2, null => 0 });
    }

    /// <summary>True while the target is in its down phase.</summary>
    public bool IsDown
    {
        get
        {
            int forced = Volatile.Read(ref _forced);
            if (forced != 0) return forced == 2;
            if (_down == 0) return false;
            if (_up == 0) return true;
            long seconds = (Stopwatch.GetTimestamp() - Epoch) / Stopwatch.Frequency;
            return seconds % (_up + (long)_down) >= _up;
        }
    }

    /// <inheritdoc/>
    public override bool RemapsWithinLimits => true; // the area was checked; only the sector moves

    /// <inheritdoc/>
    public override MapResult Map(Bio bio, out IBlockDevice? lower)
    {
        lower = _lower;
        if (!IsDown)
        {
            Remap(bio);
            return MapResult.Remapped;
        }
        if (bio.Op == BioOp.Read)
        {
            if ((_faults & Faults.ErrorReads) != 0) return Kill(bio, BlockStatus.IoError, out lower);
            Remap(bio);
            if (_readCorrupter is not null && FlagsMatch(bio)) bio.PushEndIo(_readCorrupter); // corrupts after the data arrived
            return MapResult.Remapped;
        }
        if ((_faults & Faults.DropWrites) != 0) return Kill(bio, BlockStatus.Ok, out lower);
        if ((_faults & Faults.ErrorWrites) != 0) return Kill(bio, BlockStatus.IoError, out lower);
        if (_bounce is not null && bio.Op == BioOp.Write && FlagsMatch(bio)) return CorruptWrite(bio, out lower);
        Remap(bio);
        return MapResult.Remapped;
    }

    private static MapResult Kill(Bio bio, BlockStatus status, out IBlockDevice? lower)
    {
        lower = null;
        bio.Complete(status);
        return MapResult.Submitted;
    }

    private void Remap(Bio bio)
    {
        if (bio.Op != BioOp.Flush) bio.Iter.Sector += _start;
    }

    private bool FlagsMatch(Bio bio) => ((uint)bio.Flags & _corruptFlags) == _corruptFlags;

    /// <summary>
    /// Writes the block holding the corrupt byte from a corrupted copy: the blocks before it go down
    /// as a split, the block from a bounce frame, and the bio itself (what is left of it) is remapped.
    /// </summary>
    private MapResult CorruptWrite(Bio bio, out IBlockDevice? lower)
    {
        uint index = _corruptByte - 1;
        lower = _lower;
        if (index >= bio.Iter.Size)
        {
            Remap(bio);
            return MapResult.Remapped;
        }
        if (!_bounce!.TryRent(out FrameRun run))
        {
            lower = null;
            return MapResult.Requeue;
        }
        uint block = (uint)_blockSize, blockStart = index / block * block;
        byte* copy = _lower.AddressSpace.Kmap(run.First, 0, block);
        if (!CopyData(bio, blockStart, copy, block))
        {
            _bounce.Return(run);
            return Kill(bio, BlockStatus.Invalid, out lower); // a frame the CPU cannot reach
        }
        copy[index - blockStart] = _corruptValue;

        if (blockStart > 0)
        {
            Bio head = bio.Split((int)(blockStart >> Bio.SectorShift), _pool);
            head.Chain(bio);
            Remap(head);
            _lower.Submit(head);
        }
        Bio bounce = _pool!.Rent(BioOp.Write, bio.Iter.Sector + _start, bio.Flags);
        bounce.AddVec(run.First, 0, block);
        bounce.ContextAs<BounceSlot>().Run = run;
        bio.Flags &= ~BioFlags.Preflush; // it goes with the first part, as Split does
        bounce.Chain(bio);
        bounce.PushEndIo(_bounceDone!);
        _lower.Submit(bounce);
        if (bio.Iter.Size == block)
        {
            lower = null;
            bio.Complete(BlockStatus.Ok); // our reference: the bio completes with its pieces
            return MapResult.Submitted;
        }
        bio.Advance(block);
        Remap(bio);
        return MapResult.Remapped;
    }

    /// <summary>Copies <paramref name="length"/> bytes of the bio's data from byte <paramref name="from"/> to <paramref name="dst"/>; false if a frame cannot be reached.</summary>
    private bool CopyData(Bio bio, uint from, byte* dst, uint length)
    {
        foreach (BioVec seg in bio.Segments)
        {
            if (length == 0) break;
            if (from >= seg.Length)
            {
                from -= seg.Length;
                continue;
            }
            uint n = Math.Min(seg.Length - from, length);
            byte* src = _lower.AddressSpace.TryKmap(seg.Pfn, seg.Offset + from, n);
            if (src == null) return false;
            Buffer.MemoryCopy(src, dst, n, n);
            dst += n;
            length -= n;
            from = 0;
        }
        return true;
    }

    /// <inheritdoc/>
    public override string Arguments
    {
        get
        {
            string line = $"{_spec} {_start} {_up} {_down}";
            if (!_featuresGiven) return line;
            var features = new List<string>();
            if ((_faults & Faults.ErrorReads) != 0) features.Add("error_reads");
            if ((_faults & Faults.DropWrites) != 0) features.Add("drop_writes");
            if ((_faults & Faults.ErrorWrites) != 0) features.Add("error_writes");
            if (_corruptByte != 0) features.Add($"corrupt_bio_byte {_corruptByte} {(_corruptWrites ? 'w' : 'r')} {_corruptValue} {_corruptFlags}");
            int words = features.Sum(f => f.Split(' ').Length);
            return $"{line} {words} {string.Join(' ', features)}";
        }
    }

    /// <inheritdoc/>
    public override void Dispose()
    {
        _bounce?.Dispose();
        _bounceArena?.Dispose();
        base.Dispose();
    }

    /// <summary>Sets byte N of a read's data once the read completed (dm-flakey's end_io).</summary>
    private sealed class ReadCorrupter(FlakeyTarget target) : IBioEndIo
    {
        public EndIoResult EndIo(Bio bio, ref BlockStatus status)
        {
            if (status != BlockStatus.Ok) return EndIoResult.Done;
            uint index = target._corruptByte - 1;
            foreach (BioVec seg in bio.Segments)
            {
                if (index < seg.Length)
                {
                    byte* p = target._lower.AddressSpace.TryKmap(seg.Pfn, seg.Offset + index, 1);
                    if (p != null) *p = target._corruptValue;
                    break;
                }
                index -= seg.Length;
            }
            return EndIoResult.Done;
        }
    }

    /// <summary>The bounce frame a corrupted write block was written from.</summary>
    private sealed class BounceSlot
    {
        public FrameRun Run;
    }

    /// <summary>Gives a corrupted block's bounce frame back when its write completed.</summary>
    private sealed class BounceDone(FramePool pool) : IBioEndIo
    {
        public EndIoResult EndIo(Bio bio, ref BlockStatus status)
        {
            pool.Return(bio.ContextAs<BounceSlot>().Run);
            return EndIoResult.Done;
        }
    }
}
