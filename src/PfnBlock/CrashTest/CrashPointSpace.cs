namespace PfnBlock.CrashTest;

/// <summary>
/// The crash states of one crash point: the durable image plus any choice of its optional words
/// that the persistence model allows, grouped into independent units.
/// </summary>
/// <remarks>
/// <para>A line unit holds a cache line's optional ordinary stores, in program order: its state is
/// a prefix of them, the store at the boundary possibly torn at word granularity. With stores of
/// w₁…wₙ words that is 1 + Σ(2^wᵢ − 1) choices (choice 0: none landed).</para>
/// <para>A streaming unit holds up to 16 optional non-temporal words of one line, each landed or
/// not: 2^n choices, as a bit mask.</para>
/// <para>The state count is the product over units. Optional words that cannot change the image
/// (already equal, or overwritten by a newer durable store) are left out before counting.</para>
/// </remarks>
internal sealed class CrashPointSpace
{
    private const int MaxStreamingWords = 16;
    private readonly Unit[] _units;

    private sealed class Unit
    {
        public bool NonTemporal;
        /// <summary>Line unit: the pieces of each store, in program order. Streaming unit: one array of independent pieces.</summary>
        public readonly List<int[]> Stores = [];
        public long Count;
    }

    public CrashPointSpace(PersistenceModel model, IEnumerable<int> optional)
    {
        var lines = new Dictionary<long, Unit>();
        var streaming = new Dictionary<long, List<int>>();
        var units = new List<Unit>();
        int lastEvent = -1;
        long lastLine = -1;
        var current = new List<int>();
        void CloseStore()
        {
            if (current.Count == 0) return;
            if (!lines.TryGetValue(lastLine, out Unit? u)) { lines[lastLine] = u = new Unit(); units.Add(u); }
            u.Stores.Add([.. current]);
            current.Clear();
        }
        foreach (int piece in optional)
        {
            StorePiece p = model.Pieces[piece];
            if (p.NonTemporal)
            {
                if (!streaming.TryGetValue(p.Line, out List<int>? list)) streaming[p.Line] = list = [];
                list.Add(piece);
                continue;
            }
            if (p.Event != lastEvent || p.Line != lastLine) CloseStore();
            lastEvent = p.Event;
            lastLine = p.Line;
            current.Add(piece);
        }
        CloseStore();
        foreach (Unit u in units) u.Count = 1 + u.Stores.Sum(s => (1L << s.Length) - 1);
        foreach (List<int> list in streaming.Values)
        {
            for (int i = 0; i < list.Count; i += MaxStreamingWords)
            {
                int[] chunk = list.GetRange(i, Math.Min(MaxStreamingWords, list.Count - i)).ToArray();
                var u = new Unit { NonTemporal = true, Count = 1L << chunk.Length };
                u.Stores.Add(chunk);
                units.Add(u);
            }
        }
        _units = [.. units];
        Count = _units.Aggregate(1.0, (product, u) => product * u.Count);
    }

    /// <summary>Independent units.</summary>
    public int UnitCount => _units.Length;
    /// <summary>Crash states (may exceed any integer: a double).</summary>
    public double Count { get; }
    /// <summary>Choices of unit <paramref name="u"/>.</summary>
    public long UnitChoices(int u) => _units[u].Count;

    /// <summary>Writes the <paramref name="index"/>-th state (mixed radix over the units) into <paramref name="choice"/>.</summary>
    public void StateAt(long index, long[] choice)
    {
        for (int u = 0; u < _units.Length; u++)
        {
            choice[u] = index % _units[u].Count;
            index /= _units[u].Count;
        }
    }

    /// <summary>
    /// A random state: each unit lands nothing, everything, or a uniformly chosen choice, a third
    /// of the time each, so that both whole-unit combinations and torn units come up often.
    /// </summary>
    public void RandomState(Random random, long[] choice)
    {
        for (int u = 0; u < _units.Length; u++)
        {
            double r = random.NextDouble();
            long n = _units[u].Count;
            choice[u] = r < 1.0 / 3 ? 0 : r < 2.0 / 3 ? n - 1 : random.NextInt64(n);
        }
    }

    /// <summary>
    /// The structured states, tried before random ones: nothing optional landed; everything landed;
    /// each unit alone; everything but each unit.
    /// </summary>
    public IEnumerable<long[]> StructuredStates()
    {
        int n = _units.Length;
        long[] none = new long[n];
        long[] all = new long[n];
        for (int u = 0; u < n; u++) all[u] = _units[u].Count - 1;
        yield return none;
        if (n == 0) yield break;
        yield return all;
        for (int u = 0; u < n && n > 1; u++)
        {
            long[] only = new long[n];
            only[u] = all[u];
            yield return only;
            long[] but = (long[])all.Clone();
            but[u] = 0;
            yield return but;
        }
    }

    /// <summary>Adds the pieces a state lands to <paramref name="landed"/> (unordered).</summary>
    public void Landed(long[] choice, List<int> landed)
    {
        for (int u = 0; u < _units.Length; u++)
        {
            Unit unit = _units[u];
            long k = choice[u];
            if (unit.NonTemporal)
            {
                int[] pieces = unit.Stores[0];
                for (int i = 0; i < pieces.Length; i++) if ((k & (1L << i)) != 0) landed.Add(pieces[i]);
                continue;
            }
            if (k == 0) continue;
            k--;
            foreach (int[] store in unit.Stores)
            {
                long span = (1L << store.Length) - 1;
                if (k < span)
                {
                    long mask = k + 1;
                    for (int i = 0; i < store.Length; i++) if ((mask & (1L << i)) != 0) landed.Add(store[i]);
                    break;
                }
                landed.AddRange(store);
                k -= span;
            }
        }
    }
}
