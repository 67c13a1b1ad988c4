using PfnBlock.Block;
using PfnBlock.Memory;

namespace PfnBlock.Tests.Block;

/// <summary>
/// The reference model of a bio's data: the vectors flattened into one list of byte addresses
/// (pfn, offset), and the cursor a plain byte position in that list.
/// </summary>
internal static class BioModel
{
    /// <summary>One byte of a bio: which frame and which byte of it (offsets may run past the first frame).</summary>
    public readonly record struct ByteRef(ulong PfnRaw, uint Offset);

    /// <summary>Every byte of <paramref name="vecs"/>, in order.</summary>
    public static List<ByteRef> Flatten(IEnumerable<BioVec> vecs)
    {
        var bytes = new List<ByteRef>();
        foreach (BioVec v in vecs)
            for (uint i = 0; i < v.Length; i++) bytes.Add(new ByteRef(v.Pfn.Raw, v.Offset + i));
        return bytes;
    }

    /// <summary>The bytes a bio still covers, by walking its segments.</summary>
    public static List<ByteRef> FlattenSegments(Bio bio)
    {
        var bytes = new List<ByteRef>();
        foreach (BioVec s in bio.Segments)
            for (uint i = 0; i < s.Length; i++) bytes.Add(new ByteRef(s.Pfn.Raw, s.Offset + i));
        return bytes;
    }

    /// <summary>The segments of a bio as a list.</summary>
    public static List<BioVec> Segments(Bio bio)
    {
        var list = new List<BioVec>();
        foreach (BioVec s in bio.Segments) list.Add(s);
        return list;
    }

    /// <summary>
    /// The segments the model expects for <paramref name="size"/> bytes starting at byte
    /// <paramref name="position"/>: each vector's overlap with that range, one segment per vector.
    /// </summary>
    public static List<BioVec> ExpectedSegments(IReadOnlyList<BioVec> vecs, long position, long size)
    {
        var list = new List<BioVec>();
        long start = 0, end = position + size;
        foreach (BioVec v in vecs)
        {
            long vEnd = start + v.Length;
            long lo = Math.Max(start, position), hi = Math.Min(vEnd, end);
            if (lo < hi) list.Add(new BioVec(v.Pfn, v.Offset + (uint)(lo - start), (uint)(hi - lo)));
            start = vEnd;
        }
        return list;
    }

    /// <summary>A bio with the given vectors (unpooled).</summary>
    public static Bio Make(IReadOnlyList<BioVec> vecs, long sector = 0, BioOp op = BioOp.Write, BioFlags flags = BioFlags.None)
    {
        var bio = new Bio(Math.Max(1, vecs.Count)).Init(op, sector, flags);
        foreach (BioVec v in vecs) bio.AddVec(v.Pfn, v.Offset, v.Length);
        return bio;
    }

    /// <summary>Vectors from generated (frame, offset, length) triples; frames need not exist for pure block-layer tests.</summary>
    public static BioVec[] Vecs((ulong Frame, uint Offset, uint Length)[] raw) =>
        [.. raw.Select(r => new BioVec(new Pfn(r.Frame, PfnFlags.Dev), r.Offset, r.Length))];
}
