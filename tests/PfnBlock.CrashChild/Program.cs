using System.Buffers.Binary;
using System.Text;
using PfnBlock.Block;
using PfnBlock.Devices;
using PfnBlock.Devices.Pmem;
using PfnBlock.Memory;
using PfnBlock.Namespaces;

namespace PfnBlock.CrashChild;

/// <summary>
/// What the crash child writes, shared with the test that checks it: version v goes to block
/// BlockFor(seed, v); every 8-byte word of a block holds (version, block, word index), so a
/// block read back tells which version each word came from.
/// </summary>
public static class CrashProtocol
{
    public const int BlockSize = 4096;
    public const int WordsPerBlock = BlockSize / 8;

    public static int BlockFor(int seed, long version, int blocks) =>
        (int)(unchecked((ulong)version * 0x9E3779B97F4A7C15UL ^ (ulong)seed * 0x632BE59BD9B4E019UL) % (ulong)blocks);

    public static ulong Word(long version, int block, int index) => (ulong)version << 32 | (ulong)block << 12 | (uint)index;

    public static (long Version, int Block, int Index) Decode(ulong word) => ((long)(word >> 32), (int)((word >> 12) & 0xFFFFF), (int)(word & 0xFFF));

    public static void Fill(Span<byte> block, int blockIndex, long version)
    {
        for (int i = 0; i < WordsPerBlock; i++) BinaryPrimitives.WriteUInt64LittleEndian(block[(i * 8)..], Word(version, blockIndex, i));
    }
}

public static class Program
{
    public static int Main(string[] args)
    {
        try
        {
            return args switch
            {
                ["hold", string path] => Hold(path),
                ["dax", string path] => Dax(path),
                ["open", string path] => TryOpen(path),
                ["write", string path, string seed, string first, string blocks] => Write(path, int.Parse(seed), long.Parse(first), int.Parse(blocks)),
                ["badblocks", string path] => BadBlocks(path),
                ["write-spec", string spec, string seed, string first, string blocks] => WriteSpec(spec, int.Parse(seed), long.Parse(first), int.Parse(blocks), 0),
                ["write-spec", string spec, string seed, string first, string blocks, string reads] =>
                    WriteSpec(spec, int.Parse(seed), long.Parse(first), int.Parse(blocks), int.Parse(reads)),
                _ => Usage(),
            };
        }
        catch (NamespaceInUseException e)
        {
            Console.WriteLine($"in-use: {e.Message}");
            return 3;
        }
    }

    private static int Usage()
    {
        Console.Error.WriteLine("usage: crashchild hold PATH | dax PATH | open PATH | write PATH SEED FIRST_VERSION BLOCKS | write-spec SPEC SEED FIRST_VERSION BLOCKS [READS] | badblocks PATH");
        return 2;
    }

    /// <summary>Opens the namespace and keeps its claim until stdin closes.</summary>
    private static int Hold(string path)
    {
        using PmemNamespace ns = PmemNamespace.Open(path);
        Console.WriteLine("held");
        Console.Out.Flush();
        while (Console.In.ReadLine() is not null) { }
        return 0;
    }

    /// <summary>
    /// Maps a devdax namespace (a shared claim) and obeys stdin until it closes:
    /// "fill OFFSET LENGTH BYTE" stores and persists, answering "filled";
    /// "sum OFFSET LENGTH" answers "sum N", the sum of those bytes as read through the mapping.
    /// </summary>
    private static unsafe int Dax(string path)
    {
        using DaxNamespace dax = DaxNamespace.Map(path);
        Console.WriteLine($"mapped {dax.Size}");
        Console.Out.Flush();
        while (Console.In.ReadLine() is string line)
        {
            string[] f = line.Split(' ');
            long offset = long.Parse(f[1]);
            int length = int.Parse(f[2]);
            var bytes = new Span<byte>(dax.Address + offset, length);
            if (f[0] == "fill")
            {
                bytes.Fill(byte.Parse(f[3]));
                dax.Persist(offset, length);
                Console.WriteLine("filled");
            }
            else
            {
                long sum = 0;
                foreach (byte b in bytes) sum += b;
                Console.WriteLine($"sum {sum}");
            }
            Console.Out.Flush();
        }
        return 0;
    }

    private static int TryOpen(string path)
    {
        using PmemNamespace ns = PmemNamespace.Open(path);
        Console.WriteLine("opened");
        return 0;
    }

    /// <summary>
    /// Writes versions FIRST, FIRST+1, … each to its block, made durable with FUA (odd versions) or
    /// a write followed by a FLUSH (even versions), and prints "ack VERSION BLOCK." once durable.
    /// Runs until killed (or 60 s as a safety net).
    /// </summary>
    private static int Write(string path, int seed, long first, int blocks)
    {
        using var device = PmemDevice.Open(path);
        return Write(device, seed, first, blocks);
    }

    /// <summary>
    /// As write, through the device a spec opens (an md array, a table); with READS, each
    /// write is preceded by that many reads of random blocks (what a read cache keeps),
    /// each checked: whole, of its block, and the version this run last wrote there if it wrote it
    /// (exit 7, saying what was read, otherwise).
    /// </summary>
    private static int WriteSpec(string spec, int seed, long first, int blocks, int reads)
    {
        using var set = new DeviceSet();
        return Write(set.Open(spec), seed, first, blocks, reads);
    }

    private static unsafe int Write(IBlockDevice device, int seed, long first, int blocks, int reads = 0)
    {
        using var arena = DramArena.Create(2 * Pfn.PageSize, device.AddressSpace, "crashchild");
        FrameRun buffer = arena.Allocator.Allocate(2);
        Span<byte> data = device.AddressSpace.KmapSpan(buffer.First, 0, CrashProtocol.BlockSize);
        Pfn readFrame = buffer.First.Add(1);
        var written = new long[blocks];
        var rng = new Random(seed ^ (int)first);
        using Stream stdout = Console.OpenStandardOutput();
        var bio = new Bio();
        long deadline = Environment.TickCount64 + 60_000;
        for (long v = first; Environment.TickCount64 < deadline; v++)
        {
            // The reads come before the write, so the first acknowledgement (the parent's cue) follows a warmed-up read path.
            for (int r = 0; r < reads; r++)
            {
                int b = rng.Next(blocks);
                bio.Init(BioOp.Read, (long)b * CrashProtocol.BlockSize >> Bio.SectorShift).AddVec(readFrame, 0, CrashProtocol.BlockSize);
                if (device.SubmitAndWait(bio) != BlockStatus.Ok) return 8;
                if (CheckRead(device.AddressSpace.KmapSpan(readFrame, 0, CrashProtocol.BlockSize), b, written[b]) is string bad)
                {
                    Console.Error.WriteLine(bad);
                    return 7;
                }
            }
            int block = CrashProtocol.BlockFor(seed, v, blocks);
            CrashProtocol.Fill(data, block, v);
            bool fua = (v & 1) == 1;
            bio.Init(BioOp.Write, (long)block * CrashProtocol.BlockSize >> Bio.SectorShift, fua ? BioFlags.Fua : BioFlags.None)
               .AddVec(buffer.First, 0, CrashProtocol.BlockSize);
            if (device.SubmitAndWait(bio) != BlockStatus.Ok) return 5;
            if (!fua && device.SubmitAndWait(bio.Init(BioOp.Flush, 0)) != BlockStatus.Ok) return 6;
            // One write(2) per line, so a kill never leaves half a line behind.
            stdout.Write(Encoding.ASCII.GetBytes($"ack {v} {block}.\n"));
            written[block] = v;
        }
        return 0;
    }

    /// <summary>Why a block read back is wrong (mixed, another block's, or not the version last written), or null.</summary>
    private static string? CheckRead(ReadOnlySpan<byte> data, int block, long expected)
    {
        long version = -1;
        for (int i = 0; i < CrashProtocol.BlockSize / 8; i++)
        {
            ulong word = BinaryPrimitives.ReadUInt64LittleEndian(data[(i * 8)..]);
            (long v, int b, int index) = word == 0 ? (0, block, i) : CrashProtocol.Decode(word);
            if (b != block || index != i) return $"read of block {block}: word {i} is word {index} of block {b}";
            if (version >= 0 && v != version) return $"read of block {block}: versions {version} and {v} mixed";
            version = v;
        }
        return expected != 0 && version != expected ? $"read of block {block}: version {version}, last written {expected}" : null;
    }

    /// <summary>
    /// Changes a raw namespace's bad-block list over and over until killed (or 60 s): step i marks
    /// block 2·(i mod 100) bad, and every 100th step clears them all, so at any moment the list is
    /// {0, 2, …, 2(k−1)} for some k. Prints "ack STEP" after each durable change.
    /// </summary>
    private static int BadBlocks(string path)
    {
        using PmemNamespace ns = PmemNamespace.Open(path);
        using Stream stdout = Console.OpenStandardOutput();
        long deadline = Environment.TickCount64 + 60_000;
        for (long i = 0; Environment.TickCount64 < deadline; i++)
        {
            long k = i % 101;
            if (k == 100) ns.ClearBadBlocks(0, 200, zeroData: false);
            else ns.AddBadBlocks(2 * k, 1);
            stdout.Write(Encoding.ASCII.GetBytes($"ack {i}\n"));
        }
        return 0;
    }
}
