using System.Runtime.InteropServices;

namespace PfnBlock.Memory;

/// <summary>
/// The <see cref="DescriptorMapKind.Huge"/> map (Rik van Riel's "one struct page for every PMD
/// sized area"): one 64-byte descriptor per 2 MiB of frames, 512 times fewer than a dense map
/// (32 MiB per TiB). A 2 MiB descriptor is split into 512 descriptors of 4 KiB, allocated then,
/// only where per-frame state is asked for (<see cref="Split"/>: a dirty mark that must not cover
/// the whole 2 MiB).
/// </summary>
/// <remarks>
/// The reference count stays in the 2 MiB (head) descriptor after a split, as a folio's does, so a
/// pin of any 4 KiB pins the whole 2 MiB (the false sharing a discard of a neighbouring 4 KiB then
/// meets) and a split never has to move or divide pins. The split's 4 KiB descriptors hang off
/// the head's <see cref="PageDescriptor.Private"/>, published with one compare-and-swap, so
/// lookups take no lock.
/// </remarks>
public sealed unsafe class HugeDescriptorMap : IPageDescriptorMap
{
    /// <summary>Frames per head descriptor: 2 MiB of 4 KiB frames.</summary>
    public const int FramesPerHead = 512;
    private const int HeadShift = 9;

    private PageDescriptor* _heads;
    private readonly long _frames;
    private readonly long _headCount;
    private long _splits;

    /// <summary>Allocates the head descriptors of <paramref name="frameCount"/> frames (a partial last 2 MiB gets a whole head).</summary>
    public HugeDescriptorMap(long frameCount)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(frameCount);
        _frames = frameCount;
        _headCount = (frameCount + FramesPerHead - 1) >> HeadShift;
        _heads = (PageDescriptor*)NativeMemory.AlignedAlloc((nuint)(_headCount * PageDescriptor.Size), 64);
        NativeMemory.Clear(_heads, (nuint)(_headCount * PageDescriptor.Size));
        for (long h = 0; h < _headCount; h++) _heads[h].Index = (ulong)(h << HeadShift);
    }

    /// <inheritdoc/>
    public DescriptorMapKind Kind => DescriptorMapKind.Huge;
    /// <inheritdoc/>
    public int FramesPerDescriptor => FramesPerHead;
    /// <inheritdoc/>
    public bool IsStable => true;
    /// <summary>Head descriptors plus 512 × 64 bytes per split 2 MiB.</summary>
    public long DramBytes => (_headCount + Volatile.Read(ref _splits) * FramesPerHead) * PageDescriptor.Size;
    /// <inheritdoc/>
    public long DeviceBytes => 0;
    /// <summary>How many 2 MiB descriptors have been split.</summary>
    public long Splits => Volatile.Read(ref _splits);

    /// <summary>The 4 KiB descriptor of a split 2 MiB, else the 2 MiB descriptor.</summary>
    public PageDescriptor* Get(long frameIndex)
    {
        PageDescriptor* head = Head(frameIndex);
        ulong tails = Volatile.Read(ref head->Private);
        return tails == 0 ? head : (PageDescriptor*)tails + (frameIndex & (FramesPerHead - 1));
    }

    /// <inheritdoc/>
    public PageDescriptor* Head(long frameIndex)
    {
        if ((ulong)frameIndex >= (ulong)_frames) DescriptorMaps.ThrowOutOfRange(frameIndex, _frames);
        return _heads + (frameIndex >> HeadShift);
    }

    /// <inheritdoc/>
    public void Put(PageDescriptor* descriptor) { }

    /// <summary>True when the 2 MiB holding <paramref name="frameIndex"/> has 4 KiB descriptors.</summary>
    public bool IsSplit(long frameIndex) => Volatile.Read(ref Head(frameIndex)->Private) != 0;

    /// <summary>
    /// Gives the 2 MiB holding <paramref name="frameIndex"/> its own 4 KiB descriptors, each
    /// starting with the head's flags (a dirty 2 MiB stays dirty in every 4 KiB). Idempotent and
    /// safe against a concurrent split (one wins; the loser's allocation is freed).
    /// </summary>
    /// <returns>True when this call split it, false when it was split already.</returns>
    public bool Split(long frameIndex)
    {
        PageDescriptor* head = Head(frameIndex);
        if (Volatile.Read(ref head->Private) != 0) return false;
        var tails = (PageDescriptor*)NativeMemory.AlignedAlloc(FramesPerHead * PageDescriptor.Size, 64);
        NativeMemory.Clear(tails, FramesPerHead * PageDescriptor.Size);
        ulong flags = Volatile.Read(ref head->Flags) & ~(ulong)PageFlags.Split;
        for (int i = 0; i < FramesPerHead; i++)
        {
            tails[i].Index = head->Index + (ulong)i;
            tails[i].Flags = flags;
        }
        if (Interlocked.CompareExchange(ref head->Private, (ulong)tails, 0) != 0)
        {
            NativeMemory.AlignedFree(tails);
            return false;
        }
        Interlocked.Or(ref head->Flags, (ulong)PageFlags.Split);
        Interlocked.Increment(ref _splits);
        return true;
    }

    /// <inheritdoc/>
    public void Dispose()
    {
        if (_heads == null) return;
        for (long h = 0; h < _headCount; h++)
            if (_heads[h].Private != 0) NativeMemory.AlignedFree((void*)_heads[h].Private);
        NativeMemory.AlignedFree(_heads);
        _heads = null;
    }
}
