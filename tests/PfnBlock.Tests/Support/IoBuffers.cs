using PfnBlock.Block;
using PfnBlock.Memory;

namespace PfnBlock.Tests.Support;

/// <summary>
/// DRAM I/O buffers for bios: a private arena in a device's address space, from which random
/// vector layouts are carved (offsets inside frames, multi-page vectors, offsets beyond the
/// first frame), and their bytes read or written as one flat sequence.
/// </summary>
public sealed class IoBuffers : IDisposable
{
    /// <summary>Creates an arena of <paramref name="bytes"/> in <paramref name="space"/>.</summary>
    public IoBuffers(PhysicalAddressSpace space, long bytes = 16L << 20)
    {
        Space = space;
        Arena = DramArena.Create(bytes, space, "test-buffers");
    }

    /// <summary>The address space the buffers are numbered in.</summary>
    public PhysicalAddressSpace Space { get; }
    /// <summary>The arena.</summary>
    public DramArena Arena { get; }

    /// <summary>
    /// Vectors covering exactly <paramref name="total"/> bytes in at most <paramref name="maxVecs"/>
    /// pieces of random length, each placed at a random offset of its own frame run. Lengths and
    /// offsets are multiples of <paramref name="align"/> (a device's DMA alignment).
    /// </summary>
    public Layout NewLayout(Random rng, int total, int maxVecs = 8, int align = 1)
    {
        if (total <= 0 || total % align != 0) throw new ArgumentOutOfRangeException(nameof(total));
        int units = total / align;
        int pieces = Math.Min(rng.Next(1, maxVecs + 1), units);
        var cuts = new SortedSet<int> { 0, total };
        while (cuts.Count < pieces + 1) cuts.Add(rng.Next(1, units) * align);
        int[] points = [.. cuts];
        var layout = new Layout(this);
        for (int i = 0; i + 1 < points.Length; i++)
        {
            int length = points[i + 1] - points[i];
            uint offset = rng.Next(3) switch
            {
                0 => 0,                                  // page-aligned
                1 => (uint)rng.Next(0, Pfn.PageSize),    // offset inside the first frame
                _ => (uint)rng.Next(0, 3 * Pfn.PageSize), // offset past the first frame (multi-page vector)
            };
            layout.Add(offset / (uint)align * (uint)align, (uint)length);
        }
        return layout;
    }

    /// <summary><paramref name="count"/> vectors of <paramref name="length"/> bytes each, each at the start of a fresh run.</summary>
    public Layout Pieces(int count, uint length)
    {
        var layout = new Layout(this);
        for (int i = 0; i < count; i++) layout.Add(0, length);
        return layout;
    }

    /// <summary>One vector of <paramref name="length"/> bytes at <paramref name="offset"/> of a fresh run.</summary>
    public Layout Single(int length, uint offset = 0)
    {
        var layout = new Layout(this);
        layout.Add(offset, (uint)length);
        return layout;
    }

    /// <inheritdoc/>
    public void Dispose() => Arena.Dispose();

    /// <summary>A set of vectors and the frame runs behind them.</summary>
    public sealed class Layout : IDisposable
    {
        private readonly IoBuffers _owner;
        private readonly List<FrameRun> _runs = [];
        private readonly List<BioVec> _vecs = [];

        internal Layout(IoBuffers owner) => _owner = owner;

        /// <summary>The vectors, in bio order.</summary>
        public IReadOnlyList<BioVec> Vecs => _vecs;
        /// <summary>Total bytes.</summary>
        public int Length { get; private set; }

        internal void Add(uint offset, uint length)
        {
            int frames = (int)((offset + length + Pfn.PageSize - 1) / Pfn.PageSize);
            FrameRun run = _owner.Arena.Allocator.Allocate(frames);
            _runs.Add(run);
            _vecs.Add(new BioVec(run.First, offset, length));
            Length += (int)length;
        }

        /// <summary>Appends every vector to <paramref name="bio"/>.</summary>
        public Bio AddTo(Bio bio)
        {
            foreach (BioVec v in _vecs) bio.AddVec(v.Pfn, v.Offset, v.Length);
            return bio;
        }

        /// <summary>Copies the vectors' bytes out, in order.</summary>
        public byte[] Read()
        {
            byte[] data = new byte[Length];
            int at = 0;
            foreach (BioVec v in _vecs)
            {
                _owner.Space.KmapSpan(v.Pfn, v.Offset, (int)v.Length).CopyTo(data.AsSpan(at));
                at += (int)v.Length;
            }
            return data;
        }

        /// <summary>Copies <paramref name="data"/> into the vectors, in order.</summary>
        public void Write(ReadOnlySpan<byte> data)
        {
            if (data.Length != Length) throw new ArgumentException("length mismatch", nameof(data));
            int at = 0;
            foreach (BioVec v in _vecs)
            {
                data.Slice(at, (int)v.Length).CopyTo(_owner.Space.KmapSpan(v.Pfn, v.Offset, (int)v.Length));
                at += (int)v.Length;
            }
        }

        /// <summary>Fills the vectors with <paramref name="value"/>.</summary>
        public void Fill(byte value)
        {
            foreach (BioVec v in _vecs) _owner.Space.KmapSpan(v.Pfn, v.Offset, (int)v.Length).Fill(value);
        }

        /// <summary>Returns the runs to the arena.</summary>
        public void Dispose()
        {
            foreach (FrameRun r in _runs) _owner.Arena.Allocator.Free(r);
            _runs.Clear();
        }
    }
}

/// <summary>Offset-stamped data: every byte depends on its device offset and a generation, so misplaced or stale data shows.</summary>
public static class Stamp
{
    /// <summary>The byte stored at device offset <paramref name="deviceOffset"/> by generation <paramref name="generation"/>.</summary>
    public static byte At(long deviceOffset, int generation)
    {
        ulong x = (ulong)deviceOffset * 0x9E3779B97F4A7C15UL ^ (ulong)generation * 0xC2B2AE3D27D4EB4FUL;
        x ^= x >> 29;
        byte b = (byte)(x ^ (x >> 17));
        return b == 0 ? (byte)1 : b; // never zero, so a stamp is never mistaken for discarded data
    }

    /// <summary>Stamped bytes for <paramref name="length"/> bytes at device offset <paramref name="deviceOffset"/>.</summary>
    public static byte[] Make(long deviceOffset, int length, int generation)
    {
        byte[] data = new byte[length];
        for (int i = 0; i < length; i++) data[i] = At(deviceOffset + i, generation);
        return data;
    }
}

/// <summary>Counts completions of bios through a cached delegate.</summary>
public sealed class CompletionLog
{
    private readonly Dictionary<Bio, List<BlockStatus>> _seen = new(ReferenceEqualityComparer.Instance);

    /// <summary>Creates the log and its delegate.</summary>
    public CompletionLog() => EndIo = b => { lock (_seen) { if (!_seen.TryGetValue(b, out var l)) _seen[b] = l = []; l.Add(b.Status); } };

    /// <summary>The callback to set as <see cref="Bio.EndIo"/>.</summary>
    public Action<Bio> EndIo { get; }

    /// <summary>The statuses <paramref name="bio"/> completed with, in order.</summary>
    public IReadOnlyList<BlockStatus> Of(Bio bio)
    {
        lock (_seen) return _seen.TryGetValue(bio, out var l) ? l.ToArray() : [];
    }
}
