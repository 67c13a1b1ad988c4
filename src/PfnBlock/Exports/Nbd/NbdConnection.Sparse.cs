namespace PfnBlock.Exports.Nbd;

/// <summary>Where a connection plans replies that skip zeros (<see cref="NbdSparseReplies"/>).</summary>
internal sealed unsafe partial class NbdConnection
{
    /// <summary>A structured read served from the device's memory: its holes and zeros, per the device's allocation map, are not sent.</summary>
    private void PlanDirectRead(NbdRequest r)
    {
        if (_negotiation!.StructuredReplies && _export!.Allocation is { } map)
            NbdSparseReplies.PlanFromMap(r, map, (r.Flags & NbdCommandFlags.DontFragment) != 0);
    }

    /// <summary>A structured read whose data a bio brought into chunks: its zero runs are not sent.</summary>
    private void PlanChunkRead(NbdRequest r)
    {
        if (_negotiation!.StructuredReplies && r.ChunkCount > 0)
            NbdSparseReplies.PlanFromChunks(r, _buffers!, (r.Flags & NbdCommandFlags.DontFragment) != 0);
    }

    /// <summary>BLOCK_STATUS from the device's allocation map; without one the reply says "all data".</summary>
    private void PlanBlockStatus(NbdRequest r)
    {
        if (_export!.Allocation is { } map) NbdSparseReplies.PlanBlockStatus(r, map, _export.MinBlockSize);
    }
}
