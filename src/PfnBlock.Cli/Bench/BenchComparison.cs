using System.Globalization;
using System.Text.Json.Nodes;
using PfnBlock.Block;

namespace PfnBlock.Cli.Bench;

/// <summary>
/// Two devices compared in one process, slice by slice: the workload runs for a short slice on A,
/// then on B, then on A again …, so both see the same machine state (CPU frequency, neighbours,
/// page placement) within a fraction of a second. The figure to quote is the median of the
/// per-pair ratios B/A, which a drifting machine moves far less than either device's own figure.
/// </summary>
internal sealed class BenchComparison(IBlockDevice a, IBlockDevice b, BenchOptions workload, int slices)
{
    /// <summary>Runs <c>slices</c> pairs, each device for runtime/slices seconds (after one unmeasured pair).</summary>
    public Result Run()
    {
        double slice = workload.RuntimeSeconds / slices;
        BenchOptions w = workload with { RuntimeSeconds = slice, RampSeconds = Math.Min(workload.RampSeconds, slice / 4) };
        _ = new BenchRunner(a, w).Run();
        _ = new BenchRunner(b, w).Run();
        var ra = new List<double>();
        var rb = new List<double>();
        var ratios = new List<double>();
        for (int i = 0; i < slices; i++)
        {
            // Alternate which goes first, so neither always follows the other.
            (BenchResult x, BenchResult y) = i % 2 == 0
                ? (Checked(new BenchRunner(a, w).Run()), Checked(new BenchRunner(b, w).Run()))
                : Swap(Checked(new BenchRunner(b, w).Run()), Checked(new BenchRunner(a, w).Run()));
            double fa = Figure(x), fb = Figure(y);
            ra.Add(fa);
            rb.Add(fb);
            ratios.Add(fb / fa);
        }
        return new Result(workload, a.Description, b.Description, Median(ra), Median(rb), Median(ratios), ratios.Min(), ratios.Max(), slices,
            IsIops(workload) ? "IOPS" : "bytes/s");

        static (BenchResult, BenchResult) Swap(BenchResult first, BenchResult second) => (second, first);
    }

    private static BenchResult Checked(BenchResult r) => r.Error is null ? r : throw new IOException(r.Error);

    private static bool IsIops(BenchOptions w) => w.BlockSize < 1 << 16;

    private double Figure(BenchResult r) => IsIops(workload)
        ? r.Read.Iops + r.Write.Iops
        : r.Read.BytesPerSecond + r.Write.BytesPerSecond;

    private static double Median(List<double> v)
    {
        double[] s = [.. v.Order()];
        return s.Length % 2 == 1 ? s[s.Length / 2] : (s[s.Length / 2 - 1] + s[s.Length / 2]) / 2;
    }

    /// <summary>The outcome: each device's median figure and the ratios B/A.</summary>
    internal sealed record Result(BenchOptions Options, string A, string B, double MedianA, double MedianB,
        double MedianRatio, double MinRatio, double MaxRatio, int Pairs, string Unit)
    {
        public override string ToString() => string.Create(CultureInfo.InvariantCulture,
            $"{Options.RwName} bs={Options.BlockSize} iodepth={Options.IoDepth} jobs={Options.Jobs}: A {MedianA:F0} {Unit}, B {MedianB:F0} {Unit}, " +
            $"B/A median of {Pairs} pairs {MedianRatio:F3} [{MinRatio:F3}..{MaxRatio:F3}]");

        public JsonObject ToJson() => new()
        {
            ["rw"] = Options.RwName,
            ["bs"] = Options.BlockSize,
            ["iodepth"] = Options.IoDepth,
            ["numjobs"] = Options.Jobs,
            ["unit"] = Unit,
            ["a"] = A,
            ["b"] = B,
            ["median_a"] = MedianA,
            ["median_b"] = MedianB,
            ["pairs"] = Pairs,
            ["ratio_median"] = MedianRatio,
            ["ratio_min"] = MinRatio,
            ["ratio_max"] = MaxRatio,
        };
    }
}
