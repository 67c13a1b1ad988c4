using PfnBlock.Block;
using PfnBlock.Devices;
using PfnBlock.Devices.Null;
using PfnBlock.Devices.Ram;

namespace PfnBlock.Tests.Devices;

/// <summary>Device specs as typed on the command line: good ones parse, bad ones say why.</summary>
public sealed class DeviceSpecTests
{
    [Theory]
    [InlineData("pmem:/dev/shm/x", "pmem", "/dev/shm/x")]
    [InlineData("file:/tmp/a:b", "file", "/tmp/a:b")]
    [InlineData("file:/tmp/a=b,buffered", "file", "/tmp/a=b")]
    [InlineData("file:[/tmp/a,b]", "file", "/tmp/a,b")]
    [InlineData("file:[/tmp/[x]],qd=8", "file", "/tmp/[x]")]
    [InlineData("ram:64M", "ram", "64M")]
    [InlineData("null:1G", "null", "1G")]
    public void SpecsParseIntoKindArgumentsAndOptions(string text, string kind, string argument)
    {
        DeviceSpec spec = DeviceSpec.Parse(text);
        Assert.Equal(kind, spec.Type!.Name);
        Assert.Equal(argument, spec.Arguments[0]);
        Assert.Equal(text, spec.Text);
        // The canonical form parses back to itself.
        Assert.Equal(spec.Key, DeviceSpec.Parse(spec.Key).Key);
    }

    [Theory]
    [InlineData("ram:65536k", "ram:64M")]
    [InlineData("file:/tmp/./x,qd=08,buffered", "file:/tmp/x,buffered,qd=8")]
    [InlineData("file:[/tmp/a,b]", "file:[/tmp/a,b]")]
    [InlineData("@fast", "@fast")]
    public void EqualDevicesHaveEqualKeys(string text, string key) => Assert.Equal(key, DeviceSpec.Parse(text).Key);

    [Theory]
    [InlineData("ram", "expected KIND:ARGS or @NAME")]
    [InlineData("ram:", "expected KIND:ARGS or @NAME")]
    [InlineData(":64M", "expected KIND:ARGS or @NAME")]
    [InlineData("@", "invalid device reference")]
    [InlineData("@a b", "invalid device reference")]
    [InlineData("disk:/dev/sda", "unknown device kind 'disk'")]
    [InlineData("RAM:64M", "unknown device kind 'RAM'")]
    [InlineData("ram:0", "invalid size '0'")]
    [InlineData("null:lots", "invalid size 'lots'")]
    [InlineData("file:/x,direct", "unknown option 'direct'")]
    [InlineData("file:/x,buffered=yes", "is a flag and takes no value")]
    [InlineData("file:/x,qd", "needs a value")]
    [InlineData("file:/x,qd=many", "not a non-negative integer")]
    [InlineData("file:/x,ro,ro", "given twice")]
    [InlineData("file:[/x", "unbalanced '['")]
    [InlineData("file:/x]", "unbalanced ']'")]
    [InlineData("file:a[b]", "'[' must open an item")]
    [InlineData("file:[a]b", "']' must close an item")]
    public void BadSpecsSayWhy(string text, string message) =>
        Assert.Contains(message, Assert.Throws<FormatException>(() => DeviceSpec.Parse(text)).Message);

    [Fact]
    public void OpeningWhatASpecNamesChecksIt()
    {
        using var set = new DeviceSet();
        IBlockDevice ram = set.Open("ram:1M");
        Assert.IsType<RamDevice>(ram);
        Assert.Equal(1L << 20, ram.CapacityBytes);
        IBlockDevice nul = set.Open("null:1G");
        Assert.IsType<NullDevice>(nul);
        Assert.Equal(2L << 20, nul.CapacitySectors);
        Assert.Throws<FileNotFoundException>(() => set.Open($"pmem:/dev/shm/pfnblock-test-missing-{Guid.NewGuid():N}"));
        string missing = $"/var/tmp/pfnblock-test-missing-{Guid.NewGuid():N}";
        Assert.Contains("No such file", Assert.ThrowsAny<IOException>(() => set.Open($"file:{missing}")).Message);
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
