using PfnBlock.Block;
using Prometheus;

namespace PfnBlock.Management.Metrics;

/// <summary>
/// Feeds one labelled prometheus-net histogram from cumulative counts in <see cref="LatencyBuckets"/>
/// kept elsewhere (a device's per-thread counters, an export's histogram) and their exact time sum,
/// at scrape time: the I/O path never calls into the library. prometheus-net's histograms only
/// take observations, so each scrape observes each bucket's new requests at one value inside
/// that bucket, the same fraction of the way up in every bucket, chosen so that the values add
/// up to the exact time the requests took. Every request so lands in its true bucket and the
/// histogram's <c>_sum</c> stays exact (averages such as await are right, not bucket midpoints).
/// </summary>
internal sealed class HistogramFeed
{
    // A sliver above a bucket's lower bound: a value exactly on it would count in the bucket below (le is inclusive).
    private const double MinFraction = 1e-6;

    private readonly long[] _last = new long[LatencyBuckets.Count];
    private long _lastTicks;

    /// <summary>The upper bounds (seconds) of every bucket but the last, which Prometheus's <c>+Inf</c> bucket stands for.</summary>
    public static double[] BucketBounds { get; } =
        [.. Enumerable.Range(0, LatencyBuckets.Count - 1).Select(b => LatencyBuckets.Seconds(LatencyBuckets.UpperBoundTicks(b)))];

    /// <summary>Observes what was added since the last call: <paramref name="counts"/> are cumulative requests per bucket, <paramref name="ticks"/> their cumulative time.</summary>
    public void Update(IHistogram histogram, ReadOnlySpan<long> counts, long ticks)
    {
        Span<long> delta = stackalloc long[LatencyBuckets.Count];
        double low = 0, high = 0;
        for (int b = 0; b < LatencyBuckets.Count; b++)
        {
            // Counters only grow; one that went down belongs to a device replaced under the same label.
            delta[b] = Math.Max(counts[b] - _last[b], 0);
            _last[b] = counts[b];
            (double lo, double hi) = Range(b);
            low += delta[b] * lo;
            high += delta[b] * hi;
        }
        double seconds = LatencyBuckets.Seconds(Math.Max(ticks - _lastTicks, 0));
        _lastTicks = ticks;
        if (high <= 0) return;
        // Sums and bucket counts are read apart, so they may disagree by a request or two: clamp.
        double fraction = Math.Clamp((seconds - low) / (high - low), MinFraction, 1);
        for (int b = 0; b < LatencyBuckets.Count; b++)
        {
            if (delta[b] == 0) continue;
            (double lo, double hi) = Range(b);
            histogram.Observe(lo + fraction * (hi - lo), delta[b]);
        }
    }

    private static (double Low, double High) Range(int bucket)
    {
        double lo = LatencyBuckets.Seconds(LatencyBuckets.LowerBoundTicks(bucket));
        // The last bucket has no upper bound; a doubling stands in for it (it is reported as +Inf).
        double hi = bucket == LatencyBuckets.Count - 1 ? 2 * lo : LatencyBuckets.Seconds(LatencyBuckets.UpperBoundTicks(bucket));
        return (lo, hi);
    }
}
