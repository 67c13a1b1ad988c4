using System.Runtime.InteropServices;

namespace PfnBlock.Memory;

/// <summary>
/// The <see cref="DescriptorMapKind.Temporary"/> map (Linus: "do the dynamic struct page
/// instead … mark it as a fake entry"): no descriptor exists until an I/O asks for one; it is
/// taken from a fixed pool, marked <see cref="PageFlags.Transient"/>, and returned at the I/O's
/// end. DRAM is the pool, whatever the region's size.
/// </summary>
/// <remarks>
/// The price is the one Ingo and Al named: two users of one frame get two descriptors, so
/// neither sees the other's reference (<see cref="IsStable"/> is false). A reference count in a
/// temporary descriptor therefore proves nothing about the frame; the region's pins are kept by
/// range beside it (<see cref="TemporaryPins"/>), and the tests show the two counts disagreeing.
/// The pool is a lock-free stack of indices with a tag against ABA.
/// </remarks>
public sealed unsafe class TemporaryDescriptorMap : IPageDescriptorMap
{
    /// <summary>Descriptors in the pool by default: one per I/O in flight, far more than any queue here keeps.</summary>
    public const int DefaultPoolSize = 4096;

    private PageDescriptor* _pool;
    private readonly int[] _next;
    private readonly long _frames;
    private readonly int _capacity;
    // (tag << 32) | (index + 1) of the first free descriptor; 0 in the low half = empty.
    private long _free;
    private int _inUse;

    /// <summary>Creates a pool of <paramref name="poolSize"/> descriptors for a region of <paramref name="frameCount"/> frames.</summary>
    public TemporaryDescriptorMap(long frameCount, int poolSize = DefaultPoolSize)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(frameCount);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(poolSize);
        _frames = frameCount;
        _capacity = poolSize;
        _pool = (PageDescriptor*)NativeMemory.AlignedAlloc((nuint)(poolSize * PageDescriptor.Size), 64);
        NativeMemory.Clear(_pool, (nuint)(poolSize * PageDescriptor.Size));
        _next = new int[poolSize];
        for (int i = 0; i < poolSize; i++) _next[i] = i + 1 < poolSize ? i + 2 : 0;
        _free = 1;
    }

    /// <inheritdoc/>
    public DescriptorMapKind Kind => DescriptorMapKind.Temporary;
    /// <inheritdoc/>
    public int FramesPerDescriptor => 1;
    /// <summary>False: every lookup makes a new descriptor (the aliasing problem).</summary>
    public bool IsStable => false;
    /// <summary>The pool (and its free list), whatever the region's size.</summary>
    public long DramBytes => (long)_capacity * (PageDescriptor.Size + sizeof(int));
    /// <inheritdoc/>
    public long DeviceBytes => 0;
    /// <summary>Descriptors handed out and not yet put back.</summary>
    public int InUse => Volatile.Read(ref _inUse);

    /// <summary>A fresh descriptor for frame <paramref name="frameIndex"/> (reference count 0, <see cref="PageFlags.Transient"/>); null when the pool is empty.</summary>
    public PageDescriptor* Get(long frameIndex)
    {
        if ((ulong)frameIndex >= (ulong)_frames) DescriptorMaps.ThrowOutOfRange(frameIndex, _frames);
        while (true)
        {
            long head = Volatile.Read(ref _free);
            int index = (int)head - 1;
            if (index < 0) return null;
            long next = (head & ~0xFFFF_FFFFL) + (1L << 32) | (uint)_next[index];
            if (Interlocked.CompareExchange(ref _free, next, head) != head) continue;
            Interlocked.Increment(ref _inUse);
            PageDescriptor* d = _pool + index;
            d->Flags = (ulong)PageFlags.Transient;
            d->RefCount = 0;
            d->MapCount = 0;
            d->Index = (ulong)frameIndex;
            d->Private = 0;
            return d;
        }
    }

    /// <summary>Same as <see cref="Get"/>: a temporary descriptor has no head but itself.</summary>
    public PageDescriptor* Head(long frameIndex) => Get(frameIndex);

    /// <summary>Returns a descriptor from <see cref="Get"/> to the pool.</summary>
    /// <exception cref="ArgumentException">The descriptor is not from this pool.</exception>
    public void Put(PageDescriptor* descriptor)
    {
        long index = descriptor - _pool;
        if (descriptor == null || (ulong)index >= (ulong)_capacity) throw new ArgumentException("not a descriptor of this pool", nameof(descriptor));
        descriptor->Flags = 0;
        while (true)
        {
            long head = Volatile.Read(ref _free);
            _next[index] = (int)head;
            long next = (head & ~0xFFFF_FFFFL) + (1L << 32) | (index + 1);
            if (Interlocked.CompareExchange(ref _free, next, head) == head) break;
        }
        Interlocked.Decrement(ref _inUse);
    }

    /// <inheritdoc/>
    public void Dispose()
    {
        if (_pool != null) { NativeMemory.AlignedFree(_pool); _pool = null; }
    }
}
