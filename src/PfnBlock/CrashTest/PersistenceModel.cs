namespace PfnBlock.CrashTest;

/// <summary>
/// One atomic unit of a recorded store: the part of a store event that falls in one aligned
/// 8-byte word (x86 persists aligned words whole; larger or word-crossing stores may tear at word
/// boundaries).
/// </summary>
/// <param name="Event">The store event it comes from.</param>
/// <param name="Offset">First byte in the image.</param>
/// <param name="Length">1 to 8 bytes, all in one word.</param>
/// <param name="Data">Where its bytes start in the trace's data.</param>
/// <param name="NonTemporal">A streaming store: ordered only by fences, not with the line's other stores.</param>
internal readonly record struct StorePiece(int Event, long Offset, int Length, int Data, bool NonTemporal)
{
    /// <summary>The cache line.</summary>
    public long Line => Offset >> PersistenceModel.LineShift;
}

/// <summary>
/// The x86 persistence model (Px86, Raad et al., POPL 2020) applied to a <see cref="CrashTrace"/>:
/// splits stores into atomic words, works out when each becomes durable, and lists the crash
/// points worth visiting.
/// </summary>
/// <remarks>
/// <para>Durability: a non-temporal word is durable once a fence follows it; an ordinary word once
/// a flush of its line follows it and a fence follows that flush. Before that it may or may not have
/// reached media. Ordinary stores to one line reach media in program order (the line's persisted
/// state is a prefix of its stores); everything else is unordered until fenced.</para>
/// <para>Crash points: between two fences the set of durable words is fixed while more stores are
/// issued, so every state of a crash earlier in that stretch is also a state of a crash just before
/// its closing fence, and the workload has acknowledged no less there. So crashing just before each
/// fence, and at the end, covers every crash.</para>
/// </remarks>
internal sealed class PersistenceModel
{
    public const int LineShift = 6;
    public const int WordSize = 8;

    public PersistenceModel(CrashTrace trace)
    {
        Trace = trace;
        var pieces = new List<StorePiece>();
        var crashPoints = new List<int>();
        for (int i = 0; i < trace.Count; i++)
        {
            CrashEvent e = trace[i];
            if (e.Kind is not (CrashEventKind.Store or CrashEventKind.NonTemporalStore)) continue;
            bool nt = e.Kind == CrashEventKind.NonTemporalStore;
            for (long at = e.Offset, end = e.Offset + e.Length; at < end;)
            {
                long wordEnd = Math.Min((at & ~(long)(WordSize - 1)) + WordSize, end);
                pieces.Add(new StorePiece(i, at, (int)(wordEnd - at), e.Data + (int)(at - e.Offset), nt));
                at = wordEnd;
            }
        }
        Pieces = [.. pieces];
        DurableAt = new int[Pieces.Length];
        Array.Fill(DurableAt, int.MaxValue);

        // One pass: words wait for a flush of their line (ordinary) and then for a fence.
        var awaitingFlush = new Dictionary<long, List<int>>();
        var awaitingFence = new List<int>();
        int next = 0;
        for (int i = 0; i < trace.Count; i++)
        {
            CrashEvent e = trace[i];
            switch (e.Kind)
            {
                case CrashEventKind.Store:
                case CrashEventKind.NonTemporalStore:
                    for (; next < Pieces.Length && Pieces[next].Event == i; next++)
                    {
                        if (Pieces[next].NonTemporal) { awaitingFence.Add(next); continue; }
                        long line = Pieces[next].Line;
                        if (!awaitingFlush.TryGetValue(line, out List<int>? list)) awaitingFlush[line] = list = [];
                        list.Add(next);
                    }
                    break;
                case CrashEventKind.Flush:
                    FlushLines(awaitingFlush, awaitingFence, e.Offset >> LineShift, (e.Offset + e.Length - 1) >> LineShift);
                    break;
                case CrashEventKind.Fence:
                    foreach (int p in awaitingFence) DurableAt[p] = i;
                    awaitingFence.Clear();
                    crashPoints.Add(i);
                    break;
            }
        }
        crashPoints.Add(trace.Count);
        CrashPoints = [.. crashPoints];
    }

    public CrashTrace Trace { get; }
    /// <summary>Every stored word, in program order.</summary>
    public StorePiece[] Pieces { get; }
    /// <summary>The fence after which each piece is durable (int.MaxValue: never in this trace).</summary>
    public int[] DurableAt { get; }
    /// <summary>Crash points (a crash after that many events): each fence's index, and the trace's end.</summary>
    public int[] CrashPoints { get; }

    /// <summary>The bytes a piece stores.</summary>
    public ReadOnlySpan<byte> Data(StorePiece p) => Trace.Bytes(p.Data, p.Length);

    private static void FlushLines(Dictionary<long, List<int>> awaitingFlush, List<int> awaitingFence, long first, long last)
    {
        if (last - first + 1 <= awaitingFlush.Count)
        {
            for (long line = first; line <= last; line++)
                if (awaitingFlush.Remove(line, out List<int>? list)) awaitingFence.AddRange(list);
            return;
        }
        // A flush wider than the lines waiting (an msync of a whole mapping): walk the waiting lines instead.
        foreach (long line in awaitingFlush.Keys.Where(l => l >= first && l <= last).ToArray())
        {
            awaitingFence.AddRange(awaitingFlush[line]);
            awaitingFlush.Remove(line);
        }
    }
}
