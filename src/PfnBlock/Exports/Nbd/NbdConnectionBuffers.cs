using System.Runtime.InteropServices;
using PfnBlock.Memory;

namespace PfnBlock.Exports.Nbd;

/// <summary>
/// The memory one connection works in, made once and reused by later connections: a receive
/// buffer (frames, so write payloads are submitted in place as bio vectors), a pool of fixed-size
/// frame chunks for data that must outlive the receive buffer (reads of devices without direct
/// access, writes to asynchronous devices), and native room for reply headers. Its size is the
/// per-connection memory limit; pages are only committed when first touched.
/// </summary>
internal sealed unsafe class NbdConnectionBuffers : IDisposable
{
    /// <summary>Bytes per chunk: 32 frames, so a maximal 32 MiB request needs 256 chunks (one bio's worth of vectors).</summary>
    public const int ChunkBytes = 128 << 10;
    /// <summary>Bytes of reply header room per request slot.</summary>
    public const int HeaderBytes = 64;

    private readonly DramArena _receive;
    private readonly DramArena _chunks;
    private readonly byte* _headers;
    private readonly int[] _freeChunks;
    private int _freeCount;

    public NbdConnectionBuffers(PhysicalAddressSpace space, int chunkCount, int slots)
    {
        if (chunkCount < NbdProtocol.MaxPayload / ChunkBytes)
            throw new ArgumentOutOfRangeException(nameof(chunkCount), $"a connection needs at least {NbdProtocol.MaxPayload / ChunkBytes} chunks to serve a maximal read");
        // Room for one maximal write plus its header and a full batch of small requests behind it.
        ReceiveCapacity = NbdProtocol.MaxPayload + (1 << 20);
        _receive = DramArena.Create(ReceiveCapacity, space, "nbd-recv");
        _chunks = DramArena.Create((long)chunkCount * ChunkBytes, space, "nbd-chunks");
        _headers = (byte*)NativeMemory.AlignedAlloc((nuint)(slots * HeaderBytes), 64);
        _freeChunks = new int[chunkCount];
        for (int i = 0; i < chunkCount; i++) _freeChunks[i] = chunkCount - 1 - i;
        _freeCount = chunkCount;
        Slots = slots;
        AddressSpace = space;
    }

    /// <summary>The address space the buffers' frames are numbered in.</summary>
    public PhysicalAddressSpace AddressSpace { get; }

    /// <summary>Request slots these buffers have header room for.</summary>
    public int Slots { get; }
    /// <summary>Bytes in the receive buffer.</summary>
    public int ReceiveCapacity { get; }
    /// <summary>The receive buffer.</summary>
    public byte* Receive => _receive.BaseAddress;
    /// <summary>The pfn of byte 0 of the receive buffer (vectors into it use byte offsets from here).</summary>
    public Pfn ReceivePfn => _receive.PfnAt(0);
    /// <summary>Chunks free now.</summary>
    public int FreeChunks => Volatile.Read(ref _freeCount);

    /// <summary>Header room of slot <paramref name="slot"/>.</summary>
    public byte* Header(int slot) => _headers + slot * HeaderBytes;

    /// <summary>The pfn of chunk <paramref name="chunk"/>.</summary>
    public Pfn ChunkPfn(int chunk) => _chunks.PfnAt((long)chunk * (ChunkBytes >> Pfn.PageShift));

    /// <summary>The CPU address of chunk <paramref name="chunk"/>.</summary>
    public byte* ChunkAddress(int chunk) => _chunks.BaseAddress + (long)chunk * ChunkBytes;

    /// <summary>Takes <paramref name="count"/> chunks into <paramref name="into"/>, all or none. Callers serialise.</summary>
    public bool TryRent(int count, Span<int> into)
    {
        if (_freeCount < count) return false;
        for (int i = 0; i < count; i++) into[i] = _freeChunks[--_freeCount];
        return true;
    }

    /// <summary>Gives chunks back. Callers serialise.</summary>
    public void Return(ReadOnlySpan<int> chunks)
    {
        foreach (int c in chunks) _freeChunks[_freeCount++] = c;
    }

    public void Dispose()
    {
        _receive.Dispose();
        _chunks.Dispose();
        NativeMemory.AlignedFree(_headers);
    }
}
