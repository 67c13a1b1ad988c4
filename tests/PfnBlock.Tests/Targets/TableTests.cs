using PfnBlock.Block;
using PfnBlock.Devices;
using PfnBlock.Memory;
using PfnBlock.Targets.Linear;

namespace PfnBlock.Tests.Targets;

/// <summary>Table files as dmsetup takes them: what parses, what is refused and why, and what prints back.</summary>
public sealed class TableTests : IDisposable
{
    private readonly Scratch _scratch = new();
    private readonly DeviceSet _set = new();

    public void Dispose()
    {
        _set.Dispose();
        _scratch.Dispose();
    }

    private string Table(string text)
    {
        string path = _scratch.NewPath("t.table");
        File.WriteAllText(path, text);
        return "table:" + path;
    }

    [Fact]
    public void LinesConcatenateRangesAndPrintBack()
    {
        string a = _scratch.NewNamespace(4 << 20), b = _scratch.NewNamespace(4 << 20);
        var dev = Assert.IsType<MappedDevice>(_set.Open(Table($"""
            # two namespaces, back to back
            0    2048 linear pmem:{a} 0    # the first MiB of a
            2048 4096 linear pmem:{b} 2048
            """)));
        Assert.Equal(6144, dev.CapacitySectors);
        Assert.Equal($"0 2048 linear pmem:{a} 0\n2048 4096 linear pmem:{b} 2048", dev.TableText);
        Assert.True((dev.Features & DeviceFeatures.Dax) != 0);
        Assert.Equal(LinearTarget.TargetType, DeviceTypes.FindTarget("linear"));
        // The printed table opens the same mapping again (once the namespaces' claims are free).
        string printed = dev.TableText;
        _set.Dispose();
        using var other = new DeviceSet();
        var again = Assert.IsType<MappedDevice>(other.Open(Table(printed)));
        Assert.Equal(printed, again.TableText);
    }

    [Theory]
    [InlineData("", "has no lines")]
    [InlineData("# only a comment\n", "has no lines")]
    [InlineData("0 2048\n", "line 1: expected START LENGTH TARGET ARGS")]
    [InlineData("x 2048 linear ram:1M 0\n", "line 1: invalid start sector 'x'")]
    [InlineData("0 0 linear ram:1M 0\n", "line 1: invalid length '0'")]
    [InlineData("0 -5 linear ram:1M 0\n", "line 1: invalid length '-5'")]
    [InlineData("0 2048 mirror ram:1M 0\n", "line 1: unknown target type 'mirror'")]
    [InlineData("0 2048 linear ram:1M\n", "line 1: linear: Invalid argument count (expected 2, got 1)")]
    [InlineData("0 2048 linear ram:1M zero\n", "line 1: linear: Invalid device sector: 'zero'")]
    [InlineData("0 2048 linear ram:1M 1\n", "line 1: linear: Device too small")]
    [InlineData("0 2048 linear disk:/dev/sda 0\n", "line 1: linear: Device lookup failed: disk:/dev/sda: unknown device kind 'disk'")]
    [InlineData("0 1024 linear ram:1M 0\n2048 1024 linear ram:1M 1024\n", "line 2: gap before sector 2048")]
    [InlineData("0 1024 linear ram:1M 0\n512 1024 linear ram:1M 1024\n", "line 2: starts at sector 512, overlapping")]
    [InlineData("100 1024 linear ram:1M 0\n", "line 1: gap before sector 100")]
    public void BadTablesSayWhichLineAndWhy(string text, string message)
    {
        var e = Assert.Throws<FormatException>(() => _set.Open(Table(text)));
        Assert.Contains(message, e.Message);
        Assert.Empty(_set.OpenDevices);
    }

    [Fact]
    public void AMissingTableFileOrLowerDeviceIsAnIoError()
    {
        Assert.Contains("cannot read the table", Assert.Throws<IOException>(() => _set.Open("table:/nonexistent/pfnblock.table")).Message);
        var e = Assert.ThrowsAny<IOException>(() => _set.Open(Table("0 2048 linear pmem:/nonexistent/pmem0 0\n")));
        Assert.Contains("line 1", e.Message);
    }

    [Fact]
    public void LinesNotAlignedToTheLowerBlockSizeAreRefused()
    {
        string ns4k = _scratch.NewNamespace(4 << 20, sectorSize: 4096);
        Assert.Contains("not aligned to the 4096-byte blocks", Assert.Throws<FormatException>(() => _set.Open(Table($"0 2048 linear pmem:{ns4k} 4\n"))).Message);
        // Mixed block sizes stack at the larger one; every line must then be a whole number of its blocks.
        string mixed = Table($"0 2044 linear ram:1M 0\n2044 2048 linear pmem:{ns4k} 0\n");
        Assert.Contains("not aligned to the 4096-byte logical block size", Assert.Throws<FormatException>(() => _set.Open(mixed)).Message);
        var ok = _set.Open(Table($"0 2048 linear ram:1M 0\n2048 2048 linear pmem:{ns4k} 0\n"));
        Assert.Equal(4096, ok.Limits.LogicalBlockSize);
    }

    [Fact]
    public void LowerDevicesOfDifferentAddressSpacesCannotBeStacked()
    {
        using var other = new DeviceSet(new PhysicalAddressSpace());
        IBlockDevice elsewhere = other.Open("ram:1M");
        IBlockDevice here = _set.Open("ram:1M");
        var e = Assert.Throws<ArgumentException>(() => new MappedDevice("mixed",
        [
            new TableEntry(0, 2048, "linear", new Passthrough(here)),
            new TableEntry(2048, 2048, "linear", new Passthrough(elsewhere)),
        ]));
        Assert.Contains("another address space", e.Message);
    }

    [Fact]
    public void StackedLimitsTakeTheStrictestValueAndFeaturesNeedEveryPath()
    {
        IBlockDevice ram = _set.Open("ram:1M");
        IBlockDevice pmem = _set.Open($"pmem:{_scratch.NewNamespace(4 << 20, sectorSize: 4096)}");
        IBlockDevice file = _set.Open($"file:{_scratch.NewSizedFile("/var/tmp", 1 << 20)}");
        DeviceLimits l = StackedLimits.Limits([ram, pmem, file]);
        Assert.Equal(4096, l.LogicalBlockSize);
        Assert.Equal(Math.Min(ram.Limits.MaxBytesPerBio, file.Limits.MaxBytesPerBio), l.MaxBytesPerBio);
        Assert.Equal(file.Limits.DmaAlignment, l.DmaAlignment);
        DeviceFeatures f = StackedLimits.Features([ram, pmem]);
        Assert.True((f & DeviceFeatures.Synchronous) != 0);      // both complete inline
        Assert.True((f & DeviceFeatures.WriteCache) != 0);       // pmem needs flushes
        Assert.True((f & DeviceFeatures.Dax) == 0);              // RAM has no DAX here
        DeviceFeatures withFile = StackedLimits.Features([ram, pmem, file]);
        Assert.True((withFile & DeviceFeatures.Synchronous) == 0); // one asynchronous path is enough to lose it
        Assert.True((withFile & DeviceFeatures.Fua) != 0);
        Assert.Throws<ArgumentException>(() => StackedLimits.Limits([]));
    }

    /// <summary>A minimal target for building tables by hand.</summary>
    private sealed class Passthrough(IBlockDevice dev) : Target(dev)
    {
        public override MapResult Map(Bio bio, out IBlockDevice? lower)
        {
            lower = dev;
            return MapResult.Remapped;
        }

        public override string Arguments => dev.Name;
    }
}
