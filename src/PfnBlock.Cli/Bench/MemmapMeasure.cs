using System.Diagnostics;
using System.Runtime.InteropServices;
using PfnBlock.Block;
using PfnBlock.Devices.Pmem;
using PfnBlock.Memory;
using PfnBlock.Namespaces;

namespace PfnBlock.Cli.Bench;

/// <summary>One descriptor map's costs, measured on a namespace of <see cref="MeasuredBytes"/> and extrapolated to <see cref="TargetBytes"/>.</summary>
/// <param name="Kind">The map.</param>
/// <param name="MeasuredBytes">Data bytes of the namespace the figures were measured on.</param>
/// <param name="TargetBytes">Data bytes the extrapolated figures are for.</param>
/// <param name="RssAnonDelta">Growth of the process's anonymous resident memory (RssAnon) when the namespace was opened: the map's DRAM as the kernel counts it.</param>
/// <param name="DramReported">DRAM the map and its pin store report for themselves right after open.</param>
/// <param name="DramAfterPins">DRAM the map reports after the pin benchmark touched random frames (grows only for on-demand).</param>
/// <param name="DeviceBytes">Namespace capacity the map reserves (device map only).</param>
/// <param name="OpenMs">Time to open the namespace (map the file, build or validate the map).</param>
/// <param name="LookupNs">Descriptor lookup of a random frame and its put, per call.</param>
/// <param name="PinUnpinNs">Pin and unpin of one random frame, per pair.</param>
/// <param name="DaxReadNs">One 4 KiB read through direct access: pin, copy 4 KiB out, unpin.</param>
/// <param name="CopyOnlyNs">The same 4 KiB copy without the pin (the floor under <paramref name="DaxReadNs"/>).</param>
public sealed record MemmapRow(DescriptorMapKind Kind, long MeasuredBytes, long TargetBytes, long RssAnonDelta, long DramReported, long DramAfterPins,
    long DeviceBytes, double OpenMs, double LookupNs, double PinUnpinNs, double DaxReadNs, double CopyOnlyNs)
{
    /// <summary>True when the target is larger than what was measured (figures scaled, not measured).</summary>
    public bool Extrapolated => TargetBytes > MeasuredBytes;

    /// <summary>DRAM at the target size right after open: the part that grows with frames scaled, a fixed part (pin tables, pools) kept.</summary>
    public long DramAtTarget => Scale(DramReported);
    /// <summary>DRAM at the target size once the same share of frames has been touched by pins.</summary>
    public long DramAfterPinsAtTarget => Scale(DramAfterPins);
    /// <summary>Device bytes at the target size: the reserve's own formula (header, checksums, 64 B per frame), not a scaling of its fixed parts.</summary>
    public long DeviceAtTarget => DeviceBytes == 0 ? 0 : Extrapolated ? DescriptorReserve.Needed(TargetBytes / Pfn.PageSize) : DeviceBytes;

    private long Scale(long bytes) => Kind switch
    {
        // Fixed-size: a pin table (none) or a descriptor pool (temporary) whatever the region's size.
        DescriptorMapKind.None or DescriptorMapKind.Temporary => bytes,
        _ => (long)((double)bytes * TargetBytes / MeasuredBytes),
    };
}

/// <summary>
/// Measures what each descriptor map costs on this machine (<c>pfnblock memmap</c>): namespaces of
/// every kind are created (sparse files: their data is never touched), opened, and put through
/// lookups, pins and 4 KiB direct-access reads on one thread.
/// </summary>
internal static unsafe class MemmapMeasure
{
    /// <summary>
    /// Measures <paramref name="kinds"/> on namespaces of <paramref name="measureBytes"/> in
    /// <paramref name="directory"/>, in <paramref name="rounds"/> rounds that visit every kind in
    /// turn (so drift in machine load hits all alike); each figure is the median of its rounds.
    /// DRAM and device figures are extrapolated to <paramref name="targetBytes"/>.
    /// </summary>
    public static List<MemmapRow> Run(IReadOnlyList<DescriptorMapKind> kinds, long measureBytes, long targetBytes, string directory, int operations, int rounds = 3, Action<string>? log = null)
    {
        // JIT and first-touch costs land here, not in the first kind's figures.
        foreach (DescriptorMapKind kind in kinds) Measure(kind, 8 << 20, 8 << 20, directory, 1000);
        var all = kinds.ToDictionary(k => k, _ => new List<MemmapRow>());
        for (int round = 0; round < rounds; round++)
            foreach (DescriptorMapKind kind in kinds)
            {
                log?.Invoke($"round {round + 1}/{rounds}: {DescriptorMaps.Name(kind)}");
                all[kind].Add(Measure(kind, measureBytes, targetBytes, directory, operations));
            }
        return [.. kinds.Select(k => Median(all[k]))];
    }

    private static MemmapRow Median(List<MemmapRow> rows)
    {
        static double M(IEnumerable<double> v)
        {
            double[] a = [.. v.Order()];
            return a.Length % 2 == 1 ? a[a.Length / 2] : (a[a.Length / 2 - 1] + a[a.Length / 2]) / 2;
        }
        MemmapRow first = rows[0];
        return first with
        {
            RssAnonDelta = (long)M(rows.Select(r => (double)r.RssAnonDelta)),
            OpenMs = M(rows.Select(r => r.OpenMs)),
            LookupNs = M(rows.Select(r => r.LookupNs)),
            PinUnpinNs = M(rows.Select(r => r.PinUnpinNs)),
            DaxReadNs = M(rows.Select(r => r.DaxReadNs)),
            CopyOnlyNs = M(rows.Select(r => r.CopyOnlyNs)),
        };
    }

    private static MemmapRow Measure(DescriptorMapKind kind, long measureBytes, long targetBytes, string directory, int operations)
    {
        string path = Path.Combine(directory, $"pfnblock-memmap-{Environment.ProcessId}-{DescriptorMaps.Name(kind)}");
        var space = new PhysicalAddressSpace();
        try
        {
            // Align 4 KiB: the data area is the measured size, whatever the map.
            long size = measureBytes + 2 * NamespaceInfoBlock.Size + (kind == DescriptorMapKind.Device ? DescriptorReserve.Needed(measureBytes / Pfn.PageSize + 1024) : 0);
            PmemNamespace.Create(path, new NamespaceCreateOptions { Size = size, Align = Pfn.PageSize, MapKind = kind, Force = true }, space).Dispose();
            Settle();
            long rssBefore = RssAnon();
            long t0 = Stopwatch.GetTimestamp();
            using var dev = new PmemDevice(PmemNamespace.Open(path, space));
            double openMs = Stopwatch.GetElapsedTime(t0).TotalMilliseconds;
            Settle();
            long rssDelta = RssAnon() - rssBefore;
            MemoryRegion region = dev.Namespace.Region;
            IPageDescriptorMap map = region.Descriptors;
            long dramReported = map.DramBytes + PinStoreBytes(region.Pins);
            long frames = region.FrameCount;

            uint[] order = RandomFrames(frames, operations);
            double lookup = TimePerOp(order, f =>
            {
                PageDescriptor* d = map.Get(f);
                if (d != null) map.Put(d);
            });
            IFramePins pins = region.Pins;
            double pin = TimePerOp(order, f =>
            {
                if (!pins.TryPin(f, 1, out long token)) throw new InvalidOperationException("pin refused with no fence up");
                pins.Unpin(f, 1, token);
            });
            long dramAfter = map.DramBytes + PinStoreBytes(pins);

            byte* buffer = (byte*)NativeMemory.AlignedAlloc(Pfn.PageSize, 64);
            try
            {
                byte* data = dev.Namespace.DataAddress;
                double copy = TimePerOp(order, f => Buffer.MemoryCopy(data + ((long)f << Pfn.PageShift), buffer, Pfn.PageSize, Pfn.PageSize));
                double dax = TimePerOp(order, f =>
                {
                    dev.DirectAccess(f, 1, out DaxRange range);
                    Buffer.MemoryCopy(range.Address, buffer, Pfn.PageSize, Pfn.PageSize);
                    range.Unpin();
                });
                return new MemmapRow(kind, region.Size, Math.Max(targetBytes, region.Size), rssDelta, dramReported, dramAfter, map.DeviceBytes,
                    openMs, lookup, pin, dax, copy);
            }
            finally { NativeMemory.AlignedFree(buffer); }
        }
        finally { File.Delete(path); }
    }

    /// <summary>DRAM of the pin store itself (the per-range table of none and temporary; descriptor pins add nothing).</summary>
    private static long PinStoreBytes(IFramePins pins) => pins switch
    {
        RangePinTable t => t.Bytes,
        TemporaryPins => new RangePinTable().Bytes,
        _ => 0,
    };

    private static uint[] RandomFrames(long frames, int count)
    {
        var random = new Random(42);
        var order = new uint[count];
        for (int i = 0; i < count; i++) order[i] = (uint)random.NextInt64(frames);
        return order;
    }

    /// <summary>Nanoseconds per call of <paramref name="op"/> over <paramref name="order"/>, after a warm-up pass over a tenth of it; the best of three passes.</summary>
    private static double TimePerOp(uint[] order, Action<uint> op)
    {
        for (int i = 0; i < order.Length / 10; i++) op(order[i]);
        double best = double.MaxValue;
        for (int pass = 0; pass < 3; pass++)
        {
            long t0 = Stopwatch.GetTimestamp();
            foreach (uint f in order) op(f);
            best = Math.Min(best, Stopwatch.GetElapsedTime(t0).TotalNanoseconds / order.Length);
        }
        return best;
    }

    private static void Settle()
    {
        GC.Collect();
        GC.WaitForPendingFinalizers();
        GC.Collect();
    }

    /// <summary>RssAnon of this process from /proc/self/status, in bytes.</summary>
    public static long RssAnon()
    {
        foreach (string line in File.ReadLines("/proc/self/status"))
            if (line.StartsWith("RssAnon:", StringComparison.Ordinal))
                return long.Parse(line.AsSpan(8).Trim().TrimEnd("kB").Trim(), System.Globalization.CultureInfo.InvariantCulture) * 1024;
        return 0;
    }
}
