using System.Buffers.Binary;
using System.Text.Json;
using PfnBlock.Block;
using PfnBlock.Devices;
using PfnBlock.Exports.Nbd;
using PfnBlock.Namespaces;

namespace PfnBlock.Tests.Nbd;

/// <summary>
/// Sparse exports seen by real clients: block status (<c>nbdinfo --map</c>, <c>qemu-img map</c>)
/// shows holes and zeros, structured reads skip them (OFFSET_HOLE), and copies (<c>nbdcopy</c>,
/// <c>qemu-img convert</c>) come out byte-identical and sparse.
/// </summary>
public sealed class NbdSparseTests : IDisposable
{
    private const long Size = 32 << 20;
    private const long M = 1 << 20;

    private readonly Scratch _scratch = new();
    private readonly DeviceSet _set = new();

    public void Dispose()
    {
        _set.Dispose();
        _scratch.Dispose();
    }

    /// <summary>A device of each kind with an allocation map, <see cref="Size"/> bytes or a little more.</summary>
    private IBlockDevice Open(string kind)
    {
        string ns = _scratch.NewPath();
        switch (kind)
        {
            case "ram": return _set.Open($"ram:{Size >> 20}M");
            case "pmem":
                PmemNamespace.Create(ns, new NamespaceCreateOptions { Size = Size + M }).Dispose();
                return _set.Open("pmem:" + DeviceSpec.Quote(ns));
            case "btt":
                PmemNamespace.Create(ns, new NamespaceCreateOptions { Size = Size + 4 * M, Mode = NamespaceMode.Sector, SectorSize = 4096 }).Dispose();
                return _set.Open("pmem:" + DeviceSpec.Quote(ns));
            case "file":
                return _set.Open("file:" + DeviceSpec.Quote(_scratch.NewSizedFile(Scratch.Directory, Size, "sparse")));
            case "linear over pmem":
                PmemNamespace.Create(ns, new NamespaceCreateOptions { Size = Size + 2 * M }).Dispose();
                string table = _scratch.NewPath("t.table");
                File.WriteAllText(table, $"0 {Size >> 9} linear pmem:{DeviceSpec.Quote(ns)} 2048\n");
                return _set.Open("table:" + DeviceSpec.Quote(table));
            default: throw new ArgumentException(kind);
        }
    }

    /// <summary>Writes data at [1M, +64K) and [4M, +4K), zeros allocated at [8M, +1M) (NO_HOLE), and a discarded range at [12M, +2M) that held data.</summary>
    private static void Shape(string uri) => Tool.Run("qemu-io", "-f", "raw",
        "-c", "write -P 0xab 1M 64k",
        "-c", "write -P 0xcd 4M 4k",
        "-c", "write -P 0x11 8M 1M",
        "-c", "write -z 8M 1M",
        "-c", "write -P 0x22 12M 2M",
        "-c", "discard 12M 2M",
        "-c", "flush",
        uri);

    /// <summary>nbdinfo --map lines as (offset, length, type: bit 0 hole, bit 1 zero).</summary>
    private static List<(long Offset, long Length, int Type)> Map(string uri) =>
        [.. Tool.Run("nbdinfo", "--map", uri).Split('\n', StringSplitOptions.RemoveEmptyEntries)
            .Select(l => l.Split((char[])[' ', '\t'], StringSplitOptions.RemoveEmptyEntries))
            .Select(f => (long.Parse(f[0]), long.Parse(f[1]), int.Parse(f[2])))];

    /// <summary>The type of the byte at <paramref name="offset"/> in a map.</summary>
    private static int TypeAt(List<(long Offset, long Length, int Type)> map, long offset) =>
        map.Single(e => e.Offset <= offset && offset < e.Offset + e.Length).Type;

    [Theory]
    [InlineData("pmem")]
    [InlineData("ram")]
    [InlineData("btt")]
    [InlineData("file")]
    [InlineData("linear over pmem")]
    public void NbdinfoAndQemuImgMapShowHolesAndZeros(string kind)
    {
        using var server = new NbdTestServer(("disk", Open(kind), false));
        string uri = server.Uri("disk");
        Shape(uri);
        var map = Map(uri);
        // The map tiles the export.
        Assert.Equal(0, map[0].Offset);
        for (int i = 1; i < map.Count; i++) Assert.Equal(map[i - 1].Offset + map[i - 1].Length, map[i].Offset);
        Assert.Equal(server.Registry.Find("disk")!.Device.CapacityBytes, map[^1].Offset + map[^1].Length);

        // Data where data was written; zeros everywhere else, holes where the device has them.
        Assert.Equal(0, TypeAt(map, 1 * M));
        Assert.Equal(0, TypeAt(map, 1 * M + 60 * 1024));
        Assert.Equal(0, TypeAt(map, 4 * M));
        foreach (long zero in new[] { 0, 2 * M, 12 * M, 13 * M, 20 * M })
            Assert.True((TypeAt(map, zero) & 2) != 0, $"{kind}: {zero} should read as zeros: {string.Join("; ", map)}");
        // Allocated zeros (NO_HOLE) are never holes; a file device does not read its data to find them.
        Assert.Equal(kind == "file" ? 0 : 2, TypeAt(map, 8 * M));
        Assert.Equal(kind == "file" ? 0 : 2, TypeAt(map, 8 * M + M - 4096));
        // Never-written and discarded ranges are holes on devices that have them.
        int unwritten = kind == "ram" ? 2 : 3;
        Assert.Equal(unwritten, TypeAt(map, 20 * M));
        Assert.Equal(kind is "ram" or "btt" ? 2 : 3, TypeAt(map, 13 * M));

        // qemu-img map agrees: data (that is not zeros) only where it was written.
        using JsonDocument doc = JsonDocument.Parse(Tool.Run("qemu-img", "map", "--output=json", "-f", "raw", uri));
        long dataBytes = 0;
        foreach (JsonElement e in doc.RootElement.EnumerateArray())
        {
            long start = e.GetProperty("start").GetInt64(), length = e.GetProperty("length").GetInt64();
            if (!e.GetProperty("data").GetBoolean()) Assert.True(e.GetProperty("zero").GetBoolean());
            if (!e.GetProperty("data").GetBoolean() || e.GetProperty("zero").GetBoolean()) continue;
            if (kind == "file" && start >= 8 * M && start + length <= 9 * M) continue;
            dataBytes += length;
            Assert.True((start >= 1 * M && start + length <= 1 * M + 65536) || (start >= 4 * M && start + length <= 4 * M + 4096), $"{kind}: data at {start}+{length}");
        }
        Assert.Equal(65536 + 4096, dataBytes);
    }

    [Theory]
    [InlineData("pmem")]
    [InlineData("ram")]
    [InlineData("btt")]
    public void CopiesAreExactAndSparse(string kind)
    {
        using var server = new NbdTestServer(("disk", Open(kind), false));
        string uri = server.Uri("disk");
        Shape(uri);
        long size = server.Registry.Find("disk")!.Device.CapacityBytes;
        // What the export holds, built independently.
        string expected = Path.Combine(server.Directory, "expected.img");
        using (var f = new FileStream(expected, FileMode.Create))
        {
            f.SetLength(size);
            f.Position = 1 * M; f.Write(Enumerable.Repeat((byte)0xab, 65536).ToArray());
            f.Position = 4 * M; f.Write(Enumerable.Repeat((byte)0xcd, 4096).ToArray());
        }
        string hash = Tool.Sha256(expected, size);

        // The clients skip what block status calls zeros: they read little more than the data.
        NbdExportStats stats = server.Registry.Find("disk")!.Stats;
        long before = stats.Snapshot().BytesRead;
        string byNbdcopy = Path.Combine(server.Directory, "nbdcopy.img");
        File.Create(byNbdcopy).Dispose();
        Tool.Run("nbdcopy", uri, byNbdcopy);
        long read = stats.Snapshot().BytesRead - before;
        Assert.True(read <= 4 * M, $"{kind}: nbdcopy read {read} bytes of {size}");
        before = stats.Snapshot().BytesRead;
        string byQemu = Path.Combine(server.Directory, "convert.img");
        Tool.Run("qemu-img", "convert", "-f", "raw", "-O", "raw", uri, byQemu);
        read = stats.Snapshot().BytesRead - before;
        Assert.True(read <= 4 * M, $"{kind}: qemu-img convert read {read} bytes of {size}");

        foreach (string copy in new[] { byNbdcopy, byQemu })
        {
            Assert.Equal(size, new FileInfo(copy).Length);
            Assert.Equal(hash, Tool.Sha256(copy, size));
            // Only the data was written: the rest of the copy is holes (a little slack for filesystem granules).
            long allocated = AllocatedBytes(copy);
            Assert.True(allocated <= 4 * M, $"{kind}: {Path.GetFileName(copy)} has {allocated} bytes allocated of {size}");
        }
    }

    [Fact]
    public void StructuredReadsSendHolesAsHoleChunks()
    {
        using var server = new NbdTestServer(("disk", Open("pmem"), false), ("ram", Open("ram"), false));
        foreach (string export in new[] { "disk", "ram" })
        {
            using NbdRawClient c = NbdRawClient.Connect(server.SocketPath);
            c.Negotiate(export, structured: true);
            byte[] data = new byte[256 << 10];
            Array.Fill(data, (byte)0x3c, 64 << 10, 4096);
            c.Request(NbdCommand.Write, 0, 1, 1 * M, (uint)data.Length, data);
            Assert.Equal(NbdError.None, c.ReadReply(data).Error);

            // [1M, +64K) hole, 4K data, the rest hole: three chunks, only 4 KiB of data sent.
            byte[] back = new byte[data.Length];
            Array.Fill(back, (byte)0xee);
            c.Request(NbdCommand.Read, 0, 2, 1 * M, (uint)back.Length);
            (_, NbdError error, _, int n) = c.ReadReply(back);
            Assert.Equal((NbdError.None, data.Length), (error, n));
            Assert.Equal(data, back);
            Assert.Equal((2, 1), (c.HoleChunks, c.DataChunks));

            // With DF (don't fragment) the reply is one data chunk.
            c.Request(NbdCommand.Read, NbdCommandFlags.DontFragment, 3, 1 * M, (uint)back.Length);
            Assert.Equal(NbdError.None, c.ReadReply(back).Error);
            Assert.Equal(data, back);
            Assert.Equal((0, 1), (c.HoleChunks, c.DataChunks));

            // All zeros: one hole chunk.
            c.Request(NbdCommand.Read, 0, 4, 16 * M, 128 << 10);
            Assert.Equal(NbdError.None, c.ReadReply(back).Error);
            Assert.Equal((1, 0), (c.HoleChunks, c.DataChunks));

            // BLOCK_STATUS with REQ_ONE: the first extent only.
            using NbdRawClient s = NbdRawClient.Connect(server.SocketPath);
            s.Negotiate(export, structured: true, baseAllocation: true);
            byte[] status = new byte[1024];
            s.Request(NbdCommand.BlockStatus, NbdCommandFlags.ReqOne, 5, 1 * M, 256 << 10);
            (_, error, NbdChunkType chunk, n) = s.ReadReply(status);
            Assert.Equal((NbdError.None, NbdChunkType.BlockStatus, 12), (error, chunk, n));
            Assert.Equal(64u << 10, BinaryPrimitives.ReadUInt32BigEndian(status.AsSpan(4)));
            Assert.NotEqual(0u, BinaryPrimitives.ReadUInt32BigEndian(status.AsSpan(8)) & 2);
            s.Request(NbdCommand.BlockStatus, 0, 6, 1 * M, 256 << 10);
            (_, error, _, n) = s.ReadReply(status);
            Assert.Equal((NbdError.None, 4 + 3 * 8), (error, n));
            Assert.Equal(4096u, BinaryPrimitives.ReadUInt32BigEndian(status.AsSpan(12)));
            Assert.Equal(0u, BinaryPrimitives.ReadUInt32BigEndian(status.AsSpan(16)));
        }
    }

    /// <summary>Bytes the file occupies on its filesystem (st_blocks × 512), from stat.</summary>
    private static long AllocatedBytes(string path) => long.Parse(Tool.Run("stat", "-c", "%b", path).Trim()) * 512;
}
