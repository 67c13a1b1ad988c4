using PfnBlock.Block;
using PfnBlock.Devices;
using PfnBlock.Devices.Pmem;
using PfnBlock.Devices.Ram;
using PfnBlock.Memory;

namespace PfnBlock.Tests.Devices;

/// <summary>Opening specs in a set: sharing of equal specs, names, cycles, release order.</summary>
public sealed class DeviceSetTests : IDisposable
{
    private readonly Scratch _scratch = new();

    public void Dispose() => _scratch.Dispose();

    private string Table(params string[] lines)
    {
        string path = _scratch.NewPath("set.table");
        File.WriteAllLines(path, lines);
        return path;
    }

    [Fact]
    public void ARamDiskKeepsTheDescriptorMapItsSpecAsksForAndRefusesOneItCannotHold()
    {
        using var set = new DeviceSet();
        var dense = (RamDevice)set.Open("ram:16M,name=rd,map=dense");
        Assert.Equal(DescriptorMapKind.Dense, dense.Arena.Descriptors.Kind);
        Assert.Contains("dense descriptor map", dense.Description);
        var huge = (RamDevice)set.Open("ram:16M,name=rh,map=huge");
        Assert.Equal(DescriptorMapKind.Huge, huge.Arena.Descriptors.Kind);
        Assert.Equal(DescriptorMapKind.None, ((RamDevice)set.Open("ram:16M,name=rn")).Arena.Descriptors.Kind);
        Assert.Contains("map=device", Assert.ThrowsAny<Exception>(() => set.Open("ram:16M,name=rx,map=device")).Message);
        Assert.Contains("unknown descriptor map", Assert.ThrowsAny<Exception>(() => set.Open("ram:16M,name=ry,map=bogus")).Message);
    }

    [Fact]
    public void EqualSpecsShareOneDeviceUntilTheLastHandleGoes()
    {
        string ns = _scratch.NewNamespace(4 << 20);
        using var set = new DeviceSet();
        DeviceHandle a = set.Acquire($"pmem:{ns}");
        // Written differently, the same namespace: one open device, so its exclusive claim holds once.
        DeviceHandle b = set.Acquire($"pmem:{Path.GetDirectoryName(ns)}/./{Path.GetFileName(ns)}");
        Assert.Same(a.Device, b.Device);
        Assert.Single(set.OpenDevices);
        a.Dispose();
        a.Dispose(); // idempotent
        Assert.Equal(BlockStatus.Ok, b.Device.SubmitAndWait(new Bio().Init(BioOp.Flush, 0)));
        b.Dispose();
        Assert.Empty(set.OpenDevices);
        Assert.Equal(BlockStatus.IoError, b.Device.SubmitAndWait(new Bio().Init(BioOp.Flush, 0)));
    }

    [Fact]
    public void TwoTableLinesMayNameOneNamespace()
    {
        string ns = _scratch.NewNamespace(4 << 20);
        string table = Table($"0 2048 linear pmem:{ns} 2048", $"2048 2048 linear pmem:{ns} 0");
        using var set = new DeviceSet();
        var top = Assert.IsType<MappedDevice>(set.Open($"table:{table}"));
        Assert.Equal(4096, top.CapacitySectors);
        Assert.Equal(2, set.OpenDevices.Count); // the table and the one namespace under both lines
        Assert.Contains("linear pmem:", top.TableText);
    }

    [Fact]
    public void NamesReferToDefinedSpecs()
    {
        string ns = _scratch.NewNamespace(4 << 20);
        using var set = new DeviceSet();
        set.Define("fast", $"pmem:{ns}");
        set.Define("alias", "@fast");
        string table = Table("0 4096 linear @alias 0");
        var top = Assert.IsType<MappedDevice>(set.Open($"table:{table}"));
        Assert.Same(set.Open("@fast"), top.Table[0].Target.Devices[0]);
        Assert.IsType<PmemDevice>(set.Open("@fast"));
        Assert.Contains("unknown device '@slow'", Assert.Throws<ArgumentException>(() => set.Open("@slow")).Message);
        Assert.Contains("defined twice", Assert.Throws<ArgumentException>(() => set.Define("fast", "ram:1M")).Message);
        Assert.Contains("invalid device name", Assert.Throws<ArgumentException>(() => set.Define("a b", "ram:1M")).Message);
        set.Define("loop1", "@loop2");
        set.Define("loop2", "@loop1");
        Assert.Contains("in a circle", Assert.Throws<ArgumentException>(() => set.Open("@loop1")).Message);
    }

    [Fact]
    public void ADeviceStackedOnItselfIsRefused()
    {
        string a = _scratch.NewPath("a.table"), b = _scratch.NewPath("b.table");
        File.WriteAllText(a, $"0 2048 linear table:{b} 0\n");
        File.WriteAllText(b, $"0 2048 linear table:{a} 0\n");
        using var set = new DeviceSet();
        var e = Assert.Throws<FormatException>(() => set.Open($"table:{a}"));
        Assert.Contains("stacked on itself", e.Message);
        Assert.Empty(set.OpenDevices);
        File.WriteAllText(a, $"0 2048 linear table:{a} 0\n");
        Assert.Contains("stacked on itself", Assert.Throws<FormatException>(() => set.Open($"table:{a}")).Message);
    }

    [Fact]
    public void AFailedOpenReleasesWhatItOpened()
    {
        string ns = _scratch.NewNamespace(4 << 20);
        string table = Table($"0 2048 linear pmem:{ns} 0", "2048 4096 linear ram:1M 0"); // the RAM disk is too small
        using var set = new DeviceSet();
        var e = Assert.Throws<FormatException>(() => set.Open($"table:{table}"));
        Assert.Contains("line 2: linear: Device too small", e.Message);
        Assert.Empty(set.OpenDevices);
        // The namespace's claim went with it: it opens again at once.
        using IBlockDevice again = PmemDevice.Open(ns);
    }

    [Fact]
    public void DisposingTheSetReleasesStacksBeforeWhatTheyStandOn()
    {
        string ns = _scratch.NewNamespace(4 << 20);
        string table = Table($"0 4096 linear pmem:{ns} 0");
        var set = new DeviceSet();
        IBlockDevice top = set.Open($"table:{table}");
        IBlockDevice lower = ((MappedDevice)top).Table[0].Target.Devices[0];
        set.Dispose();
        Assert.Equal(BlockStatus.IoError, top.SubmitAndWait(new Bio().Init(BioOp.Flush, 0)));
        Assert.Equal(BlockStatus.IoError, lower.SubmitAndWait(new Bio().Init(BioOp.Flush, 0)));
        Assert.Throws<ObjectDisposedException>(() => set.Open("ram:1M"));
    }

    [Fact]
    public void EveryRegisteredKindHasHelpAndTheHelpNamesThemAll()
    {
        string help = DeviceTypes.HelpText();
        foreach (DeviceType t in DeviceTypes.All)
        {
            Assert.False(string.IsNullOrWhiteSpace(t.Summary), t.Name);
            Assert.Contains(t.Usage, help);
            Assert.All(t.Arguments, a => Assert.False(string.IsNullOrWhiteSpace(a.Help)));
            Assert.All(t.Options, o => Assert.False(string.IsNullOrWhiteSpace(o.Help)));
        }
        foreach (TargetType t in DeviceTypes.Targets) Assert.Contains(t.Usage, help);
        Assert.Contains("linear DEVICE OFFSET", help);
        foreach (string kind in new[] { "pmem", "sector", "ram", "null", "file", "table" }) Assert.NotNull(DeviceTypes.Find(kind));
    }
}
