using PfnBlock.Memory;
using ScottPlot;

namespace PfnBlock.Plot;

/// <summary>
/// <c>on-demand OUT.png</c>: Jerome's vmemmap-on-fault, measured when drawn. The DRAM an
/// on-demand descriptor map holds (Rss of its reservation, from /proc/self/smaps) after pins on a
/// growing share of random frames of a 4 GiB region, against the model 1 − (1 − f)^64 (a 4 KiB
/// page holds 64 descriptors) and the dense and huge maps' fixed cost. Prints the points as TSV.
/// </summary>
internal static class OnDemandTouch
{
    private const long Frames = (4L << 30) / Pfn.PageSize;
    private const int DescriptorsPerPage = Pfn.PageSize / PageDescriptor.Size;

    public static int Draw(string png)
    {
        double[] shares = [0.00001, 0.00003, 0.0001, 0.0003, 0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0];
        var measured = new List<double>();
        var random = new Random(8);
        Console.WriteLine("share_of_frames_pinned\ton_demand_dram_bytes\tmodel_bytes");
        foreach (double share in shares)
        {
            using var map = new OnDemandDescriptorMap(Frames);
            IFramePins pins = FramePins.Create(map, Frames);
            long n = (long)(share * Frames);
            for (long i = 0; i < n; i++)
            {
                long f = share >= 1.0 ? i : random.NextInt64(Frames);
                if (pins.TryPin(f, 1, out long token)) pins.Unpin(f, 1, token);
            }
            measured.Add(map.DramBytes);
            Console.WriteLine($"{share}\t{map.DramBytes}\t{Model(share):F0}");
        }

        double[] xs = [.. shares.Select(s => Math.Log10(s * 100))];
        static double Mib(double b) => Math.Log10(Math.Max(b, 1024) / (1 << 20));
        var plot = new ScottPlot.Plot();
        var points = plot.Add.Scatter(xs, [.. measured.Select(Mib)]);
        points.LegendText = "on-demand, measured (Rss of the reservation)";
        points.MarkerSize = 8;
        var model = plot.Add.Scatter(xs, [.. shares.Select(s => Mib(Model(s)))]);
        model.LegendText = "model: 1 - (1 - f)^64 of the memmap";
        model.LinePattern = LinePattern.Dashed;
        model.MarkerSize = 0;
        var dense = plot.Add.HorizontalLine(Mib(Frames * PageDescriptor.Size));
        dense.LegendText = "dense (64 B per 4 KiB, always)";
        var huge = plot.Add.HorizontalLine(Mib(Frames / 512 * PageDescriptor.Size));
        huge.LegendText = "huge (64 B per 2 MiB, before splits)";
        huge.LinePattern = LinePattern.Dotted;
        plot.Title("On-demand memmap of a 4 GiB region: DRAM after pins on random frames");
        plot.XLabel("frames pinned at least once (% of the region, log)");
        plot.YLabel("descriptor DRAM (MiB, log)");
        plot.Axes.Bottom.TickGenerator = new ScottPlot.TickGenerators.NumericAutomatic { IntegerTicksOnly = true, LabelFormatter = v => $"{Math.Pow(10, v):G3}%" };
        plot.Axes.Left.TickGenerator = new ScottPlot.TickGenerators.NumericAutomatic { IntegerTicksOnly = true, LabelFormatter = v => $"{Math.Pow(10, v):G3}" };
        plot.ShowLegend(Alignment.LowerRight);
        plot.SavePng(png, 900, 520);
        Console.Error.WriteLine($"wrote {png}");
        return 0;
    }

    private static double Model(double share) => (1 - Math.Pow(1 - share, DescriptorsPerPage)) * Frames * PageDescriptor.Size;
}
