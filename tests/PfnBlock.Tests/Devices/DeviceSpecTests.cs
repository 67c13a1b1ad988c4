using PfnBlock.Block;
using PfnBlock.Devices;
using PfnBlock.Devices.Null;
using PfnBlock.Devices.Ram;

namespace PfnBlock.Tests.Devices;

/// <summary>Device specs as typed on the command line: good ones parse, bad ones say why.</summary>
public sealed class DeviceSpecTests
{
    [Theory]
    [InlineData("pmem:/dev/shm/x", DeviceKind.Pmem, "/dev/shm/x", 0L)]
    [InlineData("file:/tmp/a:b", DeviceKind.File, "/tmp/a:b", 0L)]
    [InlineData("ram:64M", DeviceKind.Ram, null, 64L << 20)]
    [InlineData("null:1G", DeviceKind.Null, null, 1L << 30)]
    public void SpecsParseAndPrintBack(string text, DeviceKind kind, string? path, long size)
    {
        DeviceSpec spec = DeviceSpec.Parse(text);
        Assert.Equal(new DeviceSpec(kind, path, size), spec);
        Assert.Equal(text, spec.ToString());
    }

    [Theory]
    [InlineData("ram", "expected pmem:PATH")]
    [InlineData("ram:", "expected pmem:PATH")]
    [InlineData(":64M", "expected pmem:PATH")]
    [InlineData("disk:/dev/sda", "unknown device kind 'disk'")]
    [InlineData("RAM:64M", "unknown device kind 'RAM'")]
    [InlineData("ram:0", "invalid size '0'")]
    [InlineData("null:lots", "invalid size 'lots'")]
    public void BadSpecsSayWhy(string text, string message) =>
        Assert.Contains(message, Assert.Throws<FormatException>(() => DeviceSpec.Parse(text)).Message);

    [Fact]
    public void OpeningWhatASpecNamesChecksIt()
    {
        using (IBlockDevice ram = DeviceSpec.Parse("ram:1M").Open())
        {
            Assert.IsType<RamDevice>(ram);
            Assert.Equal(1L << 20, ram.CapacityBytes);
        }
        using (IBlockDevice nul = DeviceSpec.Parse("null:1G").Open())
        {
            Assert.IsType<NullDevice>(nul);
            Assert.Equal(2L << 20, nul.CapacitySectors);
        }
        Assert.Throws<FileNotFoundException>(() => DeviceSpec.Parse($"pmem:/dev/shm/pfnblock-test-missing-{Guid.NewGuid():N}").Open());
        string missing = $"/var/tmp/pfnblock-test-missing-{Guid.NewGuid():N}";
        Assert.Contains("No such file", Assert.ThrowsAny<IOException>(() => DeviceSpec.Parse($"file:{missing}").Open()).Message);
    }

    [Theory]
    [InlineData(0L)]
    [InlineData(-4096L)]
    [InlineData(4097L)]
    [InlineData(512L)]
    public void RamDisksMustBeWholeFrames(long bytes) =>
        Assert.Contains("multiple of 4096", Assert.Throws<ArgumentException>(() => RamDevice.Create(bytes)).Message);

    [Theory]
    [InlineData(0L)]
    [InlineData(100L)]
    [InlineData(-512L)]
    public void NullDevicesMustBeWholeSectors(long bytes) =>
        Assert.Contains("multiple of 512", Assert.Throws<ArgumentException>(() => new NullDevice(bytes)).Message);
}
