using System.Runtime.InteropServices;
using PfnBlock.Interop;
using PfnBlock.Memory;

namespace PfnBlock.Exports.Nbd;

/// <summary>
/// The memory one connection works in, made once and reused by later connections: a receive
/// buffer (frames, so write payloads are submitted in place as bio vectors), a pool of fixed-size
/// frame chunks for data that must outlive the receive buffer (reads of devices without direct
/// access, writes to asynchronous devices), and native room for reply headers.
/// </summary>
/// <remarks>
/// Both buffers are reserved address space; what a connection may touch is accounted in the
/// server's <see cref="NbdMemoryBudget"/>: the receive buffer up to <see cref="ReceiveCharged"/>
/// (its first <see cref="ReceiveFloor"/> reserved for every connection in advance), and each chunk
/// from its first use until it is trimmed. Trimming hands the pages back to the kernel
/// (MADV_DONTNEED), so resident memory follows the accounting. Chunk and trim calls are
/// serialised by the caller (the connection's lock); receive calls come from the receive thread.
/// </remarks>
internal sealed unsafe class NbdConnectionBuffers : IDisposable
{
    /// <summary>Bytes per chunk: 32 frames, so a maximal 32 MiB request needs 256 chunks (one bio's worth of vectors).</summary>
    public const int ChunkBytes = 128 << 10;
    /// <summary>Bytes of reply header room per request slot: enough for a read reply of <see cref="NbdSparseReplies.MaxSegments"/> chunks or a block-status reply of <see cref="NbdSparseReplies.MaxExtents"/> extents.</summary>
    public const int HeaderBytes = 1024;
    /// <summary>Receive buffer every connection may use without asking the budget: a header, small writes, a batch of small requests.</summary>
    public const int ReceiveFloor = 1 << 20;
    /// <summary>
    /// The most one request takes from the budget: a maximal write's payload beyond the floor
    /// plus as many chunks (an asynchronous device's copy), and a bounce chunk.
    /// </summary>
    public const long MaxRequestMemory = 64L << 20;

    private readonly DramArena _receive;
    private readonly DramArena _chunks;
    private readonly byte* _headers;
    private readonly int[] _charged;   // free chunks whose pages count against the budget (used most recently on top)
    private readonly int[] _uncharged; // free chunks whose pages were given back
    private int _chargedCount;
    private int _unchargedCount;
    private int _receiveCharged = ReceiveFloor;
    private bool _queued;

    public NbdConnectionBuffers(PhysicalAddressSpace space, int chunkCount, int slots, NbdMemoryBudget budget)
    {
        if (chunkCount < NbdProtocol.MaxPayload / ChunkBytes)
            throw new ArgumentOutOfRangeException(nameof(chunkCount), $"a connection needs at least {NbdProtocol.MaxPayload / ChunkBytes} chunks to serve a maximal read");
        // Room for one maximal write plus its header and a full batch of small requests behind it.
        ReceiveCapacity = NbdProtocol.MaxPayload + (1 << 20);
        _receive = DramArena.Create(ReceiveCapacity, space, "nbd-recv");
        _chunks = DramArena.Create((long)chunkCount * ChunkBytes, space, "nbd-chunks");
        _headers = (byte*)NativeMemory.AlignedAlloc((nuint)(slots * HeaderBytes), 64);
        _charged = new int[chunkCount];
        _uncharged = new int[chunkCount];
        for (int i = 0; i < chunkCount; i++) _uncharged[i] = chunkCount - 1 - i;
        _unchargedCount = chunkCount;
        Slots = slots;
        AddressSpace = space;
        Budget = budget;
    }

    /// <summary>The address space the buffers' frames are numbered in.</summary>
    public PhysicalAddressSpace AddressSpace { get; }
    /// <summary>The server's budget these buffers take from.</summary>
    public NbdMemoryBudget Budget { get; }

    /// <summary>Request slots these buffers have header room for.</summary>
    public int Slots { get; }
    /// <summary>Bytes in the receive buffer.</summary>
    public int ReceiveCapacity { get; }
    /// <summary>Bytes of the receive buffer (from its start) the connection may fill: the floor plus what it took from the budget.</summary>
    public int ReceiveCharged => _receiveCharged;
    /// <summary>The receive buffer.</summary>
    public byte* Receive => _receive.BaseAddress;
    /// <summary>The pfn of byte 0 of the receive buffer (vectors into it use byte offsets from here).</summary>
    public Pfn ReceivePfn => _receive.PfnAt(0);
    /// <summary>Chunks free now.</summary>
    public int FreeChunks => _chargedCount + _unchargedCount;
    /// <summary>Free chunks whose memory is already accounted (renting them costs the budget nothing).</summary>
    public int ChargedFreeChunks => _chargedCount;

    /// <summary>Header room of slot <paramref name="slot"/>.</summary>
    public byte* Header(int slot) => _headers + slot * HeaderBytes;

    /// <summary>The pfn of chunk <paramref name="chunk"/>.</summary>
    public Pfn ChunkPfn(int chunk) => _chunks.PfnAt((long)chunk * (ChunkBytes >> Pfn.PageShift));

    /// <summary>The CPU address of chunk <paramref name="chunk"/>.</summary>
    public byte* ChunkAddress(int chunk) => _chunks.BaseAddress + (long)chunk * ChunkBytes;

    /// <summary>
    /// Takes <paramref name="count"/> chunks into <paramref name="into"/>, all or none: accounted ones
    /// first, the rest only if the budget grants their memory. False when too few are free or the
    /// budget said no. Callers serialise.
    /// </summary>
    public bool TryRent(int count, Span<int> into)
    {
        if (FreeChunks < count) return false;
        int fromCharged = Math.Min(count, _chargedCount);
        int more = count - fromCharged;
        if (more > 0 && !TryTake((long)more * ChunkBytes)) return false;
        if (_queued) Unqueue(); // served from chunks that came back meanwhile
        for (int i = 0; i < fromCharged; i++) into[i] = _charged[--_chargedCount];
        for (int i = fromCharged; i < count; i++) into[i] = _uncharged[--_unchargedCount];
        return true;
    }

    /// <summary>Takes <paramref name="bytes"/> from the budget for a request (leaving the queue if this connection was in it). Callers serialise.</summary>
    public bool TryTake(long bytes)
    {
        if (!Budget.TryTake(bytes, this)) return false;
        _queued = false;
        return true;
    }

    /// <summary>Leaves the queue for memory (served otherwise, or giving up). Callers serialise.</summary>
    public void Unqueue()
    {
        Budget.Forget(this);
        _queued = false;
    }

    /// <summary>
    /// The connection cannot go on without memory and has nothing in flight that would give it
    /// back: it gives back every free chunk and queues for memory. Callers serialise.
    /// </summary>
    public void QueueForMemory()
    {
        TrimFreeChunks();
        Budget.Wait(this);
        _queued = true;
    }

    /// <summary>Gives chunks back: kept for reuse, or trimmed at once while others wait for memory. Callers serialise.</summary>
    public void Return(ReadOnlySpan<int> chunks)
    {
        if (Budget.UnderPressure)
        {
            foreach (int c in chunks) Trim(c);
            return;
        }
        foreach (int c in chunks) _charged[_chargedCount++] = c;
    }

    /// <summary>Accounts <paramref name="count"/> more free chunks whose memory the caller already took from the budget; returns the bytes it could not use (give them back). Callers serialise.</summary>
    public long AdoptCharged(int count)
    {
        int n = Math.Min(count, _unchargedCount);
        for (int i = 0; i < n; i++) _charged[_chargedCount++] = _uncharged[--_unchargedCount];
        return (long)(count - n) * ChunkBytes;
    }

    /// <summary>Gives the pages of every free accounted chunk back to the kernel and the budget. Callers serialise.</summary>
    public void TrimFreeChunks()
    {
        while (_chargedCount > 0) Trim(_charged[--_chargedCount]);
    }

    private void Trim(int chunk)
    {
        _ = Libc.madvise((nint)ChunkAddress(chunk), ChunkBytes, Libc.MADV_DONTNEED);
        Budget.Release(ChunkBytes);
        _uncharged[_unchargedCount++] = chunk;
    }

    /// <summary>Rounds a receive size up to the budget's granule.</summary>
    public static int RoundUp(int bytes) => (bytes + ChunkBytes - 1) & ~(ChunkBytes - 1);

    /// <summary>Uses memory the caller took from the budget (<see cref="TryTake"/>) as receive buffer up to <paramref name="to"/> bytes.</summary>
    public void AdoptReceive(int to) => _receiveCharged = to;

    /// <summary>Gives back the receive buffer beyond <paramref name="keep"/> bytes (never below the floor).</summary>
    public void ShrinkReceive(int keep)
    {
        int to = Math.Max(ReceiveFloor, RoundUp(keep));
        if (to >= _receiveCharged) return;
        _ = Libc.madvise((nint)(Receive + to), (nuint)(_receiveCharged - to), Libc.MADV_DONTNEED);
        Budget.Release(_receiveCharged - to);
        _receiveCharged = to;
    }

    /// <summary>An idle connection with nothing buffered: all receive memory goes back, the floor's pages too (it stays reserved).</summary>
    public void TrimIdleReceive()
    {
        ShrinkReceive(0);
        _ = Libc.madvise((nint)Receive, ReceiveFloor, Libc.MADV_DONTNEED);
    }

    /// <summary>Before the buffers wait for the next connection: every page back to the kernel, every byte back to the budget.</summary>
    public void TrimAll()
    {
        TrimFreeChunks();
        ShrinkReceive(0);
        _ = Libc.madvise((nint)Receive, (nuint)ReceiveCapacity, Libc.MADV_DONTNEED);
        Unqueue();
    }

    public void Dispose()
    {
        TrimAll();
        _receive.Dispose();
        _chunks.Dispose();
        NativeMemory.AlignedFree(_headers);
    }
}
