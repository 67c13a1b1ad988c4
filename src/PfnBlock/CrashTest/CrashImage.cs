using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace PfnBlock.CrashTest;

/// <summary>
/// The images of a crash point: the durable image (base plus every word durable there) and the
/// working image the target's recovery sees (durable image plus the crash state's optional words,
/// plus whatever recovery stored, both undone after each state).
/// </summary>
/// <remarks>
/// Each byte of a word keeps the event of the latest durable store to it, so an older store that
/// becomes durable later (or lands as an optional word) never overwrites a newer one: an image
/// always holds, per byte, the latest of the stores that reached media.
/// </remarks>
internal sealed unsafe class CrashImage
{
    private readonly PersistenceModel _model;
    private readonly byte* _durable;
    private readonly byte* _work;
    private readonly Dictionary<long, ByteEvents> _latest = [];

    [InlineArray(PersistenceModel.WordSize)]
    private struct ByteEvents
    {
        private int _eventPlusOne;
    }

    /// <param name="model">The trace's model.</param>
    /// <param name="durable">The durable image, holding the base image.</param>
    /// <param name="work">The working image, holding the base image; null to track the durable image alone (planning).</param>
    public CrashImage(PersistenceModel model, byte* durable, byte* work)
    {
        _model = model;
        _durable = durable;
        _work = work;
    }

    /// <summary>Adds a word that became durable.</summary>
    public void MakeDurable(int piece)
    {
        StorePiece p = _model.Pieces[piece];
        ReadOnlySpan<byte> data = _model.Data(p);
        long word = p.Offset & ~(long)(PersistenceModel.WordSize - 1);
        int first = (int)(p.Offset - word);
        ref ByteEvents latest = ref CollectionsMarshal.GetValueRefOrAddDefault(_latest, word, out _);
        for (int i = 0; i < p.Length; i++)
        {
            if (latest[first + i] > p.Event) continue;
            latest[first + i] = p.Event + 1;
            _durable[p.Offset + i] = data[i];
            if (_work != null) _work[p.Offset + i] = data[i];
        }
    }

    /// <summary>True when landing the optional word would change the image (some byte is neither overwritten by a newer durable store nor already equal).</summary>
    public bool Changes(int piece)
    {
        int newer = NewerDurable(piece, out StorePiece p, out ReadOnlySpan<byte> data);
        for (int i = 0; i < p.Length; i++)
            if ((newer & (1 << i)) == 0 && _durable[p.Offset + i] != data[i]) return true;
        return false;
    }

    /// <summary>Lands an optional word in the working image (call in program order).</summary>
    public void Land(int piece)
    {
        int newer = NewerDurable(piece, out StorePiece p, out ReadOnlySpan<byte> data);
        for (int i = 0; i < p.Length; i++)
            if ((newer & (1 << i)) == 0) _work[p.Offset + i] = data[i];
    }

    /// <summary>A mask of the piece's bytes that a newer durable store has already overwritten.</summary>
    private int NewerDurable(int piece, out StorePiece p, out ReadOnlySpan<byte> data)
    {
        StorePiece stored = _model.Pieces[piece];
        p = stored;
        data = _model.Data(stored);
        long word = stored.Offset & ~(long)(PersistenceModel.WordSize - 1);
        int first = (int)(stored.Offset - word);
        _latest.TryGetValue(word, out ByteEvents latest);
        int mask = 0;
        for (int i = 0; i < stored.Length; i++)
            if (latest[first + i] > stored.Event) mask |= 1 << i;
        return mask;
    }

    /// <summary>Puts the durable bytes back into the working image.</summary>
    public void Restore(long offset, long length)
    {
        if (offset < 0 || length <= 0) return;
        length = Math.Min(length, _model.Trace.ImageLength - offset);
        if (length > 0) Buffer.MemoryCopy(_durable + offset, _work + offset, length, length);
    }

    /// <summary>The first offset where the working image differs from the durable one, or -1.</summary>
    public long FirstDifference()
    {
        long n = _model.Trace.ImageLength;
        for (long at = 0; at < n; at += int.MaxValue / 2)
        {
            int chunk = (int)Math.Min(int.MaxValue / 2, n - at);
            int d = new ReadOnlySpan<byte>(_durable + at, chunk).CommonPrefixLength(new ReadOnlySpan<byte>(_work + at, chunk));
            if (d < chunk) return at + d;
        }
        return -1;
    }
}
