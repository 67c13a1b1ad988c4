using System.Numerics;
using CsCheck;
using PfnBlock.Memory;
using PfnBlock.Namespaces;

namespace PfnBlock.Tests.Namespaces;

/// <summary>
/// The info block codec: valid blocks round-trip, and a block with a correct checksum but any
/// field values (a crafted or buggy writer) is accepted only if it describes a namespace that fits.
/// </summary>
public sealed class NamespaceInfoBlockProperties
{
    private static readonly Gen<long> GenOffset = Gen.Frequency(
        (3, Gen.Long[0, 64L << 20].Select(v => v & ~4095L)),
        (1, Gen.Long),
        (1, Gen.OneOf(long.MaxValue & ~4095L, long.MinValue, 4096L, (1L << 62) + 4096)));

    private static readonly Gen<NamespaceInfoBlock> GenAnyBlock =
        Gen.Select(GenOffset, GenOffset, GenOffset, GenOffset, GenOffset, Gen.OneOf(4096u, 8192u, 1u << 21, 3000u, 0u),
            Gen.OneOf(512u, 4096u, 1000u), Gen.Int[0, 6],
            (nsSize, dataOff, dataSize, mapOff, mapSize, align, sector, kind) => new NamespaceInfoBlock
            {
                Uuid = Guid.NewGuid(), NamespaceSize = nsSize, DataOffset = dataOff, DataSize = dataSize, MapOffset = mapOff, MapSize = mapSize,
                Align = align, SectorSize = sector, Mode = kind == 6 ? (NamespaceMode)9 : NamespaceMode.Raw, MapKind = (DescriptorMapKind)(kind % 6),
            });

    [Fact]
    public void AnAcceptedBlockAlwaysDescribesANamespaceThatFits()
    {
        Gen.Select(GenAnyBlock, Gen.Long[3 * 4096, 1L << 40]).Sample((block, deviceSize) =>
        {
            byte[] raw = new byte[NamespaceInfoBlock.Size];
            block.Write(raw);
            if (!NamespaceInfoBlock.TryParse(raw, deviceSize, out NamespaceInfoBlock? info, out string? error))
            {
                Assert.False(string.IsNullOrEmpty(error));
                return;
            }
            // Exact arithmetic: no field combination may wrap around.
            var ns = new BigInteger(info!.NamespaceSize);
            Assert.True(ns >= 3 * NamespaceInfoBlock.Size && ns <= deviceSize, $"namespace size {ns} on a {deviceSize}-byte device");
            Assert.True(info.DataOffset >= NamespaceInfoBlock.Size && info.DataOffset % info.Align == 0);
            Assert.True(info.DataSize > 0 && info.DataSize % Pfn.PageSize == 0);
            Assert.True(new BigInteger(info.DataOffset) + info.DataSize <= ns - NamespaceInfoBlock.Size,
                $"data area [{info.DataOffset}, +{info.DataSize}) runs past the backup block of a {ns}-byte namespace");
            Assert.True(info.MapSize >= 0, $"negative descriptor reserve {info.MapSize}");
            if (info.MapSize != 0)
                Assert.True(info.MapOffset >= NamespaceInfoBlock.Size && new BigInteger(info.MapOffset) + info.MapSize <= info.DataOffset,
                    $"descriptor reserve [{info.MapOffset}, +{info.MapSize}) overlaps the data area at {info.DataOffset}");
        }, iter: 5000);
    }

    [Fact]
    public void ValidBlocksRoundTrip()
    {
        Gen.Select(Gen.Long[3, 1 << 14], Gen.Int[0, 9], Gen.OneOf(512u, 4096u), Gen.String[Gen.Char['a', 'z'], 0, 64], Gen.Bool)
            .Sample((pages, alignLog, sector, name, dense) =>
        {
            uint align = 4096u << alignLog;
            long dataOffset = align;
            long size = dataOffset + pages * 4096 + 4096;
            var block = new NamespaceInfoBlock
            {
                Uuid = Guid.NewGuid(), ParentUuid = Guid.NewGuid(), NamespaceSize = size, DataOffset = dataOffset, DataSize = pages * 4096,
                Align = align, Mode = NamespaceMode.Raw, SectorSize = sector, Name = name,
                MapKind = dense ? DescriptorMapKind.Dense : DescriptorMapKind.None, Minor = 7,
            };
            byte[] raw = new byte[NamespaceInfoBlock.Size];
            block.Write(raw);
            Assert.True(NamespaceInfoBlock.TryParse(raw, size, out NamespaceInfoBlock? back, out string? error), error);
            Assert.Equal(block, back);
            Assert.False(NamespaceInfoBlock.TryParse(raw, size - 4096, out _, out _)); // the device shrank under it
        });
    }

    [Fact]
    public void ChecksumIsFletcher64OverLittleEndianWords()
    {
        // lo += w; hi += lo over u32 words: for words 1, 2, 3: lo = 6, hi = 1 + 3 + 6 = 10.
        byte[] data = [1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0];
        Assert.Equal(10UL << 32 | 6, Fletcher64.Compute(data));
        Assert.Equal(Fletcher64.Compute([1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0]), Fletcher64.ComputeSkipping([1, 0, 0, 0, 9, 9, 9, 9, 9, 9, 9, 9, 3, 0, 0, 0], 4));
        Assert.Throws<ArgumentException>(() => Fletcher64.Compute([1, 2, 3]));
    }
}
