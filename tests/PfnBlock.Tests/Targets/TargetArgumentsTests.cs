using PfnBlock.Block;
using PfnBlock.Devices;
using PfnBlock.Tests.Block;

namespace PfnBlock.Tests.Targets;

/// <summary>
/// Every target prints its table line back (<c>dmsetup table</c>) in a form that opens the same
/// mapping again: the same text, and — for targets that store data — the same bytes at the same
/// places, read through the reopened table.
/// </summary>
public sealed class TargetArgumentsTests : IDisposable
{
    private readonly Scratch _scratch = new();
    private readonly DeviceSet _set = new();

    public void Dispose()
    {
        _set.Dispose();
        _scratch.Dispose();
    }

    /// <summary>Every registered target's samples (over RAM disks).</summary>
    public static TheoryData<string> TargetSamples
    {
        get
        {
            var data = new TheoryData<string>();
            foreach (string name in ConformanceSamples.SampleNames)
                if (name.Contains(" over ram: ", StringComparison.Ordinal)) data.Add(name);
            return data;
        }
    }

    [Theory, MemberData(nameof(TargetSamples))]
    public void ASamplesPrintedTableOpensTheSameMapping(string sample)
    {
        var first = (MappedDevice)ConformanceSamples.Open(sample, _scratch, _set);
        AssertReopensTheSame(first, (first.Features & DeviceFeatures.DiscardsData) == 0);
    }

    [Theory]
    [InlineData("0 2048 error", false)]
    [InlineData("0 2048 zero", false)]
    [InlineData("0 2048 linear {0} 0\n2048 1024 error\n3072 1024 zero\n4096 2048 linear {0} 2048", false)]
    [InlineData("0 2048 flakey {0} 8 3600 0 0", true)]
    [InlineData("0 2048 flakey {0} 8 0 7 2 error_reads drop_writes", false)] // always down
    [InlineData("0 2048 flakey {0} 8 3600 1 5 CORRUPT_BIO_BYTE 513 w 255 1", true)]
    [InlineData("0 2048 flakey {0} 8 3600 1 6 error_writes corrupt_bio_byte 9 r 0 0", true)]
    [InlineData("0 2048 delay {0} 16 5 {1} 0 6", false)] // reads and writes on different devices
    [InlineData("0 2048 delay {0} 16 0 {0} 16 6 {1} 8 7", true)]
    [InlineData("0 4096 striped 2 16 {0} 1024 {1} 0", true)]
    public void HandWrittenLinesPrintBackAndReopen(string lines, bool readsBackWrites)
    {
        string a = $"ram:4M,name=a-{Path.GetFileName(_scratch.NewPath("a"))}", b = $"ram:4M,name=b-{Path.GetFileName(_scratch.NewPath("b"))}";
        string text = string.Format(System.Globalization.CultureInfo.InvariantCulture, lines, a, b);
        var dev = (MappedDevice)_set.Open(Table(text));
        // Canonical forms: feature names in lower case, a zero feature count left out.
        string expected = text.Replace("CORRUPT_BIO_BYTE", "corrupt_bio_byte", StringComparison.Ordinal).Replace(" 3600 0 0", " 3600 0", StringComparison.Ordinal);
        Assert.Equal(expected, dev.TableText);
        AssertReopensTheSame(dev, readsBackWrites);
    }

    private string Table(string text)
    {
        string path = _scratch.NewPath("args.table");
        File.WriteAllText(path, text + "\n");
        return "table:" + path;
    }

    private void AssertReopensTheSame(MappedDevice first, bool readsBackWrites)
    {
        var again = (MappedDevice)_set.Open(Table(first.TableText));
        Assert.Equal(first.TableText, again.TableText);
        Assert.Equal(first.CapacitySectors, again.CapacitySectors);
        Assert.Equal(first.Features, again.Features);
        if (!readsBackWrites) return;
        // Both tables share their lower devices (one set), so bytes written through one read back through the other.
        using var buffers = new IoBuffers(first.AddressSpace, 4 << 20);
        var rng = new Random(1);
        for (int i = 0; i < 8; i++)
        {
            int sectors = rng.Next(1, 64);
            long sector = rng.NextInt64(0, first.CapacitySectors - sectors);
            int lbs = first.Limits.LogicalBlockSize >> Bio.SectorShift;
            sector -= sector % lbs;
            sectors = Math.Max(lbs, sectors - sectors % lbs);
            using IoBuffers.Layout data = buffers.NewLayout(rng, sectors << Bio.SectorShift);
            byte[] bytes = Stamp.Make(sector << Bio.SectorShift, sectors << Bio.SectorShift, i);
            data.Write(bytes);
            Assert.Equal(BlockStatus.Ok, TargetSeamProperties.RunOnce(first, data.AddTo(new Bio().Init(BioOp.Write, sector))));
            using IoBuffers.Layout back = buffers.NewLayout(rng, sectors << Bio.SectorShift);
            Assert.Equal(BlockStatus.Ok, TargetSeamProperties.RunOnce(again, back.AddTo(new Bio().Init(BioOp.Read, sector))));
            Assert.Equal(bytes, back.Read());
        }
    }
}
