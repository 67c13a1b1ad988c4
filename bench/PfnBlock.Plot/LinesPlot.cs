using System.Globalization;
using ScottPlot;

namespace PfnBlock.Plot;

/// <summary>
/// <c>lines OUT.png TITLE XLABEL YLABEL TABLE.tsv</c>: one line per series over a log2 x axis,
/// from rows <c>series TAB x TAB y [TAB min TAB max]</c> (a header row starting "series" and
/// lines starting '#' are skipped); the min..max of each point is drawn as a vertical bar. Made for
/// bench/tlb-bench.sh: IOPS against the working set, one line per page size and workload.
/// </summary>
internal static class LinesPlot
{
    public static int Draw(string png, string title, string xLabel, string yLabel, string tsv)
    {
        var points = File.ReadAllLines(tsv)
            .Where(l => l.Length > 0 && l[0] != '#' && !l.StartsWith("series\t", StringComparison.Ordinal))
            .Select(Point).ToArray();
        if (points.Length == 0) throw new FormatException($"{tsv}: no rows");
        var plot = new ScottPlot.Plot();
        // Reads solid, writes dashed, one colour per first word of the series name ("KIND WORKLOAD").
        var palette = new ScottPlot.Palettes.Category10();
        var kinds = new List<string>();
        foreach (var series in points.GroupBy(p => p.Series))
        {
            string kind = series.Key.Split(' ')[0];
            if (!kinds.Contains(kind)) kinds.Add(kind);
            var sorted = series.OrderBy(p => p.X).ToArray();
            double[] xs = [.. sorted.Select(p => Math.Log2(p.X))];
            var line = plot.Add.Scatter(xs, [.. sorted.Select(p => p.Y)]);
            line.LegendText = series.Key;
            line.MarkerSize = 6;
            line.Color = palette.GetColor(kinds.IndexOf(kind));
            if (series.Key.Contains("write", StringComparison.Ordinal)) line.LinePattern = LinePattern.Dashed;
            foreach (var p in sorted.Where(p => !double.IsNaN(p.Min)))
            {
                var range = plot.Add.Line(Math.Log2(p.X), p.Min, Math.Log2(p.X), p.Max);
                range.Color = line.Color;
                range.LineWidth = 1;
            }
        }
        plot.Axes.Bottom.TickGenerator = new ScottPlot.TickGenerators.NumericAutomatic
        {
            IntegerTicksOnly = true,
            LabelFormatter = v => Math.Pow(2, v).ToString("G6", CultureInfo.InvariantCulture),
        };
        plot.Axes.AutoScale();
        plot.Axes.SetLimitsY(0, plot.Axes.GetLimits().Top * 1.05); // rates from zero: a 3 % gap must look like 3 %
        plot.Title(title);
        plot.XLabel(xLabel);
        plot.YLabel(yLabel);
        plot.ShowLegend(Alignment.LowerLeft);
        plot.SavePng(png, 1000, 560);
        Console.WriteLine(png);
        return 0;
    }

    private static (string Series, double X, double Y, double Min, double Max) Point(string line)
    {
        string[] f = line.Split('\t');
        if (f.Length is not (3 or 5)) throw new FormatException($"'{line}': expected series TAB x TAB y [TAB min TAB max]");
        double P(string s) => double.Parse(s, NumberStyles.Float, CultureInfo.InvariantCulture);
        return f.Length == 3 ? (f[0], P(f[1]), P(f[2]), double.NaN, double.NaN) : (f[0], P(f[1]), P(f[2]), P(f[3]), P(f[4]));
    }
}
