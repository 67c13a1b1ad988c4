using PfnBlock.Block;
using PfnBlock.Devices;
using PfnBlock.Namespaces;

namespace PfnBlock.Tests.Support;

/// <summary>
/// Every registered device kind's samples and every registered target's samples (as one-line
/// tables over RAM disks and over pmem namespaces), plus stacks two and three deep: the devices
/// the conformance suite runs on. A device or target joins by registering; nothing here names one.
/// </summary>
public static class ConformanceSamples
{
    /// <summary>Size of each lower device a target sample stacks on.</summary>
    public const long LowerBytes = 16 << 20;
    private const string StackPrefix = "stack: ";

    static ConformanceSamples() => DeviceTypes.RegisterAssembly(typeof(ConformanceSamples).Assembly);

    /// <summary>Names of every sample, for <c>MemberData</c>.</summary>
    public static TheoryData<string> Names
    {
        get
        {
            var data = new TheoryData<string>();
            foreach (string n in All()) data.Add(n);
            return data;
        }
    }

    /// <summary>Names of every sample, as strings.</summary>
    public static IEnumerable<string> SampleNames => All();

    /// <summary>Every sample name crossed with <paramref name="values"/>.</summary>
    public static TheoryData<string, T> Cross<T>(params T[] values)
    {
        var data = new TheoryData<string, T>();
        foreach (string n in All())
            foreach (T v in values) data.Add(n, v);
        return data;
    }

    private static IEnumerable<string> All()
    {
        foreach (DeviceType t in DeviceTypes.All)
            foreach (DeviceSample s in t.Samples) yield return $"{t.Name}: {s.Name}";
        foreach (TargetType t in DeviceTypes.Targets)
            foreach (TargetSample s in t.Samples)
                foreach (string lower in new[] { "ram", "pmem" }) yield return $"{t.Name} over {lower}: {s.Name}";
        yield return StackPrefix + "linear over linear over pmem";
        yield return StackPrefix + "linear over clone over linear over busyram";
        yield return StackPrefix + "striped over linear over pmem";
        yield return StackPrefix + "linear over striped over flakey (up) over pmem";
        // Only where the rbd: device has a sample, i.e. a test cluster is up ($PFNBLOCK_CEPH_CONF).
        if (DeviceTypes.Find("rbd")?.Samples.Count > 0) yield return StackPrefix + RbdCacheStack;
    }

    private const string RbdCacheStack = "writecache over rbd (pmem cache, fresh image)";

    /// <summary>Makes the sample's files under <paramref name="scratch"/> and opens it in <paramref name="set"/>.</summary>
    public static IBlockDevice Open(string name, Scratch scratch, DeviceSet set) => set.Open(Spec(name, scratch));

    /// <summary>Makes the sample's files under <paramref name="scratch"/> and returns its spec.</summary>
    public static string Spec(string name, Scratch scratch)
    {
        var ctx = new SampleContext(scratch.NewDirectory("sample"), scratch.NewDirectory("sample", "/var/tmp"));
        if (name.StartsWith(StackPrefix, StringComparison.Ordinal)) return Stack(name[StackPrefix.Length..], ctx);
        int colon = name.IndexOf(": ", StringComparison.Ordinal);
        string kind = name[..colon], sample = name[(colon + 2)..];
        int over = kind.IndexOf(" over ", StringComparison.Ordinal);
        if (over < 0)
        {
            DeviceType type = DeviceTypes.Find(kind) ?? throw new ArgumentException($"no device kind '{kind}'");
            return type.Samples.Single(s => s.Name == sample).Create(ctx);
        }
        TargetType target = DeviceTypes.FindTarget(kind[..over]) ?? throw new ArgumentException($"no target '{kind[..over]}'");
        string[] lower = [.. Enumerable.Range(0, 4).Select(i => LowerSpec(kind[(over + 6)..], ctx, i))];
        int extra = lower.Length;
        TargetLine line = target.Samples.Single(s => s.Name == sample).Line(new TargetSampleContext(lower, LowerBytes >> Bio.SectorShift)
        {
            NewPmem = () => LowerSpec("pmem", ctx, extra++),
        });
        return Table(ctx, $"0 {line.Sectors} {target.Name} {line.Arguments}");
    }

    private static string LowerSpec(string kind, SampleContext ctx, int i)
    {
        if (kind == "ram") return $"ram:{LowerBytes >> 20}M,name={Path.GetFileName(ctx.Directory)}-{i}";
        string path = ctx.NewPath($"lower{i}");
        PmemNamespace.Create(path, new NamespaceCreateOptions { Size = LowerBytes + (1 << 20) }).Dispose();
        return "pmem:" + DeviceSpec.Quote(path);
    }

    private static string Stack(string name, SampleContext ctx)
    {
        long sectors = LowerBytes >> Bio.SectorShift;
        switch (name)
        {
            case "linear over linear over pmem":
            {
                string inner = Table(ctx, $"0 {sectors} linear {LowerSpec("pmem", ctx, 0)} 0");
                return Table(ctx, $"0 {sectors - 2048} linear {DeviceSpec.Quote(inner)} 2048");
            }
            case "linear over clone over linear over busyram":
            {
                string bottom = Table(ctx, $"0 {sectors} linear busyram:{LowerBytes >> 20}M,percent=20 0");
                string middle = Table(ctx, $"0 {sectors} clone {bottom} 16");
                return Table(ctx, $"0 {sectors} linear {middle} 0");
            }
            case "striped over linear over pmem":
            {
                string a = Table(ctx, $"0 {sectors} linear {LowerSpec("pmem", ctx, 0)} 0");
                string b = Table(ctx, $"0 {sectors} linear {LowerSpec("pmem", ctx, 1)} 0");
                return Table(ctx, $"0 {sectors} striped 2 64 {DeviceSpec.Quote(a)} 0 {DeviceSpec.Quote(b)} 2048");
            }
            case "linear over striped over flakey (up) over pmem":
            {
                string a = Table(ctx, $"0 {sectors} flakey {LowerSpec("pmem", ctx, 0)} 0 3600 0");
                string b = Table(ctx, $"0 {sectors} flakey {LowerSpec("pmem", ctx, 1)} 0 86400 1 1 error_writes");
                string striped = Table(ctx, $"0 {sectors} striped 2 8 {DeviceSpec.Quote(a)} 0 {DeviceSpec.Quote(b)} 0");
                return Table(ctx, $"0 {sectors - 2048} linear {DeviceSpec.Quote(striped)} 2048");
            }
            case RbdCacheStack:
            {
                // The rbd: sample makes a fresh 16 MiB image on the test cluster; the cache is a pmem namespace.
                string image = DeviceTypes.Find("rbd")!.Samples[0].Create(ctx);
                return Table(ctx, $"0 {sectors} writecache p {image} {LowerSpec("pmem", ctx, 0)} 4096 0");
            }
            default: throw new ArgumentException($"no stack '{name}'");
        }
    }

    private static string Table(SampleContext ctx, params string[] lines)
    {
        string path = ctx.NewPath("t.table");
        File.WriteAllLines(path, lines);
        return "table:" + DeviceSpec.Quote(path);
    }
}
