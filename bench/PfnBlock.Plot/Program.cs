using System.Globalization;
using System.Text.Json.Nodes;
using ScottPlot;

namespace PfnBlock.Plot;

/// <summary>
/// Draws the benchmark plots of docs/ from the programs' own outputs, so that figures are
/// regenerated, not hand-copied:
/// <c>timeline OUT.png TITLE LABEL=BENCH.json…</c> — IOPS over time from <c>pfnblock bench --json</c>
/// (its <c>timeline</c> samples; one line per file, reads and writes summed);
/// <c>bars OUT.png TITLE XLABEL TABLE.tsv</c> — one bar per row <c>label TAB value [TAB min TAB max]</c>
/// (a ratio table: medians with their range as error bars, a line at 1.0 when the values are ratios);
/// <c>lines OUT.png TITLE XLABEL YLABEL TABLE.tsv</c> — one line per series over a log2 x axis, see <see cref="LinesPlot"/>;
/// <c>on-demand OUT.png</c> — measured here, see <see cref="OnDemandTouch"/>.
/// </summary>
public static class Program
{
    public static int Main(string[] args)
    {
        try
        {
            return args switch
            {
                ["timeline", string png, string title, .. var series] when series.Length > 0 => Timeline(png, title, series),
                ["bars", string png, string title, string xLabel, string tsv] => Bars(png, title, xLabel, tsv),
                ["lines", string png, string title, string xLabel, string yLabel, string tsv] => LinesPlot.Draw(png, title, xLabel, yLabel, tsv),
                ["on-demand", string png] => OnDemandTouch.Draw(png),
                _ => Usage(),
            };
        }
        catch (Exception e) when (e is IOException or FormatException or InvalidOperationException or UnauthorizedAccessException or System.Text.Json.JsonException)
        {
            Console.Error.WriteLine($"pfnblock-plot: {e.Message}");
            return 1;
        }
    }

    private static int Usage()
    {
        Console.Error.WriteLine("usage: pfnblock-plot timeline OUT.png TITLE LABEL=BENCH.json [LABEL=BENCH.json ...]");
        Console.Error.WriteLine("       pfnblock-plot bars OUT.png TITLE XLABEL TABLE.tsv   (rows: label TAB value [TAB min TAB max])");
        Console.Error.WriteLine("       pfnblock-plot lines OUT.png TITLE XLABEL YLABEL TABLE.tsv   (rows: series TAB x TAB y [TAB min TAB max]; x on a log2 axis)");
        Console.Error.WriteLine("       pfnblock-plot on-demand OUT.png   (measures the on-demand descriptor map's DRAM against frames touched)");
        return 2;
    }

    private static int Timeline(string png, string title, string[] series)
    {
        var plot = new ScottPlot.Plot();
        foreach (string item in series)
        {
            int eq = item.IndexOf('=', StringComparison.Ordinal);
            if (eq <= 0) throw new FormatException($"'{item}': expected LABEL=FILE.json");
            string label = item[..eq], file = item[(eq + 1)..];
            var xs = new List<double>();
            var ys = new List<double>();
            JsonNode root = JsonNode.Parse(File.ReadAllText(file)) ?? throw new FormatException($"{file}: empty");
            JsonArray jobs = root["jobs"]?.AsArray() ?? throw new FormatException($"{file}: no 'jobs' (not pfnblock bench --json output)");
            double offset = 0;
            foreach (JsonNode? job in jobs)
            {
                // Several workloads in one file are drawn one after the other.
                double last = 0;
                foreach (JsonNode? s in job?["timeline"]?.AsArray() ?? [])
                {
                    last = (double)s!["t"]!;
                    xs.Add(offset + last);
                    ys.Add((double)s["read_iops"]! + (double)s["write_iops"]!);
                }
                offset += last;
            }
            if (xs.Count == 0) throw new FormatException($"{file}: no timeline samples");
            var line = plot.Add.Scatter(xs.ToArray(), ys.ToArray());
            line.LegendText = label;
            line.MarkerSize = 0;
        }
        plot.Title(title);
        plot.XLabel("seconds");
        plot.YLabel("IOPS");
        plot.Axes.AutoScale();
        plot.Axes.SetLimitsY(0, plot.Axes.GetLimits().Top * 1.05); // rates start at zero, or a small dip looks like a collapse
        plot.ShowLegend(Alignment.LowerLeft);
        plot.SavePng(png, 1000, 500);
        Console.WriteLine(png);
        return 0;
    }

    private static int Bars(string png, string title, string xLabel, string tsv)
    {
        var rows = File.ReadAllLines(tsv).Where(l => l.Length > 0 && l[0] != '#').Select(Row).ToArray();
        if (rows.Length == 0) throw new FormatException($"{tsv}: no rows");
        var plot = new ScottPlot.Plot();
        for (int i = 0; i < rows.Length; i++)
        {
            (string _, double value, double min, double max) = rows[i];
            double position = rows.Length - 1 - i; // first row on top
            plot.Add.Bar(new Bar { Position = position, Value = value, Error = 0, Orientation = Orientation.Horizontal });
            if (!double.IsNaN(min))
            {
                var range = plot.Add.Line(min, position, max, position);
                range.LineWidth = 2;
                range.Color = Colors.Black;
            }
        }
        if (rows.All(r => r.Value is > 0 and < 10))
        {
            var one = plot.Add.VerticalLine(1);
            one.LinePattern = LinePattern.Dashed;
        }
        plot.Axes.Left.SetTicks([.. Enumerable.Range(0, rows.Length).Select(i => (double)(rows.Length - 1 - i))], [.. rows.Select(r => r.Label)]);
        plot.Axes.Margins(left: 0);
        plot.Title(title);
        plot.XLabel(xLabel);
        plot.SavePng(png, 1000, 120 + 40 * rows.Length);
        Console.WriteLine(png);
        return 0;
    }

    private static (string Label, double Value, double Min, double Max) Row(string line)
    {
        string[] f = line.Split('\t');
        if (f.Length is not (2 or 4)) throw new FormatException($"'{line}': expected label TAB value [TAB min TAB max]");
        double P(string s) => double.Parse(s, NumberStyles.Float, CultureInfo.InvariantCulture);
        return f.Length == 2 ? (f[0], P(f[1]), double.NaN, double.NaN) : (f[0], P(f[1]), P(f[2]), P(f[3]));
    }
}
