using System.Runtime.CompilerServices;

namespace PfnBlock.Block;

/// <summary>
/// The cursor over a bio's vectors, kept apart from the vectors themselves (the kernel's
/// <c>bvec_iter</c>): splitting, cloning and partial completion move only this small value,
/// so several bios can share one vector array.
/// </summary>
public struct BvecIter
{
    /// <summary>Device address in 512-byte sectors.</summary>
    public long Sector;
    /// <summary>Bytes left to transfer.</summary>
    public uint Size;
    /// <summary>Index of the current vector.</summary>
    public int Index;
    /// <summary>Bytes of the current vector already done.</summary>
    public uint BvecDone;

    /// <summary>
    /// Moves the cursor forward <paramref name="bytes"/> bytes over <paramref name="vecs"/>.
    /// </summary>
    /// <exception cref="InvalidOperationException">Advancing past the end (a bug in the caller).</exception>
    public void Advance(ReadOnlySpan<BioVec> vecs, uint bytes)
    {
        if (bytes > Size) throw new InvalidOperationException($"attempted to advance {bytes} bytes past the end of bvec iter ({Size} left)");
        Size -= bytes;
        Sector += bytes >> Bio.SectorShift;
        while (bytes > 0)
        {
            uint left = vecs[Index].Length - BvecDone;
            if (bytes < left) { BvecDone += bytes; return; }
            bytes -= left;
            Index++;
            BvecDone = 0;
        }
        // Skip exhausted vectors so Index always names the vector holding the next byte.
        while (Size > 0 && Index < vecs.Length && vecs[Index].Length == BvecDone) { Index++; BvecDone = 0; }
    }

    /// <summary>The current segment: the rest of the current vector, capped at <see cref="Size"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public readonly BioVec Current(ReadOnlySpan<BioVec> vecs)
    {
        BioVec v = vecs[Index];
        uint len = v.Length - BvecDone;
        if (len > Size) len = Size;
        return new BioVec(v.Pfn, v.Offset + BvecDone, len);
    }
}
