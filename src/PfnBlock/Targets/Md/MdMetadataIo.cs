using PfnBlock.Block;
using PfnBlock.Memory;

namespace PfnBlock.Targets.Md;

/// <summary>
/// Synchronous reads and writes of md metadata (superblocks, bitmap blocks, zeroing) on member
/// devices, through bios into a small DRAM buffer of its own. For setup paths and the array's
/// worker thread only: every call waits for its bio.
/// </summary>
internal sealed unsafe class MdMetadataIo : IDisposable
{
    /// <summary>Bytes of the buffer: enough for a superblock block or a run of zeros.</summary>
    public const int BufferBytes = 1 << 20;

    private readonly DramArena _arena;
    private readonly Pfn _buffer;
    private readonly Lock _lock = new();

    public MdMetadataIo(PhysicalAddressSpace space)
    {
        _arena = DramArena.Create(BufferBytes, space, "md-metadata");
        _buffer = _arena.PfnAt(0);
    }

    /// <summary>Reads <paramref name="into"/>.Length bytes at byte <paramref name="offset"/> of <paramref name="device"/>.</summary>
    /// <exception cref="IOException">The read failed.</exception>
    public void Read(IBlockDevice device, long offset, Span<byte> into)
    {
        lock (_lock)
        {
            Run(device, BioOp.Read, offset, into.Length, BioFlags.None);
            new ReadOnlySpan<byte>(_arena.BaseAddress, into.Length).CopyTo(into);
        }
    }

    /// <summary>Writes <paramref name="data"/> at byte <paramref name="offset"/> of <paramref name="device"/>, durably (FUA).</summary>
    /// <exception cref="IOException">The write failed.</exception>
    public void Write(IBlockDevice device, long offset, ReadOnlySpan<byte> data)
    {
        lock (_lock)
        {
            data.CopyTo(new Span<byte>(_arena.BaseAddress, data.Length));
            Run(device, BioOp.Write, offset, data.Length, BioFlags.Fua);
        }
    }

    /// <summary>Sets <paramref name="bytes"/> at byte <paramref name="offset"/> to zeros (write-zeroes where the device has it, else written zeros), then flushes.</summary>
    public void Zero(IBlockDevice device, long offset, long bytes)
    {
        lock (_lock)
        {
            if ((device.Features & DeviceFeatures.WriteZeroes) != 0)
            {
                for (long done = 0; done < bytes;)
                {
                    long n = Math.Min(bytes - done, 1L << 30);
                    var bio = new Bio().Init(BioOp.WriteZeroes, (offset + done) >> Bio.SectorShift, BioFlags.NoUnmap);
                    bio.Iter.Size = (uint)n;
                    Check(device, bio, "zero");
                    done += n;
                }
            }
            else
            {
                new Span<byte>(_arena.BaseAddress, BufferBytes).Clear();
                for (long done = 0; done < bytes;)
                {
                    int n = (int)Math.Min(bytes - done, BufferBytes);
                    Run(device, BioOp.Write, offset + done, n, BioFlags.None);
                    done += n;
                }
            }
            if ((device.Features & DeviceFeatures.WriteCache) != 0) Check(device, new Bio().Init(BioOp.Flush, 0), "flush");
        }
    }

    private void Run(IBlockDevice device, BioOp op, long offset, int length, BioFlags flags)
    {
        if (length > BufferBytes) throw new ArgumentOutOfRangeException(nameof(length));
        var bio = new Bio(1).Init(op, offset >> Bio.SectorShift, flags).AddVec(_buffer, 0, (uint)length);
        Check(device, bio, op == BioOp.Read ? "read" : "write");
    }

    private static void Check(IBlockDevice device, Bio bio, string what)
    {
        long at = bio.Sector << Bio.SectorShift;
        BlockStatus status = device.SubmitAndWait(bio);
        if (status != BlockStatus.Ok) throw new IOException($"{device.Name}: md metadata {what} at byte {at} failed ({status})");
    }

    public void Dispose() => _arena.Dispose();
}
