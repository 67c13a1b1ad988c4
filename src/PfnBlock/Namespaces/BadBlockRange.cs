namespace PfnBlock.Namespaces;

/// <summary>
/// A run of bad 512-byte blocks (ndctl's <c>badblocks</c> record, PMDK's <c>struct badblock</c>):
/// reads touching them fail until they are rewritten or cleared.
/// </summary>
/// <param name="Start">First block, in 512-byte units from the start of the namespace's data area (its exported sectors).</param>
/// <param name="Count">Blocks in the run (at least 1).</param>
public readonly record struct BadBlockRange(long Start, long Count)
{
    /// <summary>The block just past the run.</summary>
    public long End => Start + Count;

    /// <summary>"START+COUNT", as the CLI lists runs.</summary>
    public override string ToString() => $"{Start}+{Count}";
}
