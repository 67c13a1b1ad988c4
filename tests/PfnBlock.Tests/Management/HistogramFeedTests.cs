using CsCheck;
using PfnBlock.Block;
using PfnBlock.Management.Metrics;
using Prometheus;

namespace PfnBlock.Tests.Management;

/// <summary>
/// Feeding a prometheus-net histogram from cumulative bucket counts and an exact time sum: every
/// request lands in its true bucket and the histogram's sum is the true sum, over any number of
/// scrapes.
/// </summary>
public sealed class HistogramFeedTests
{
    /// <summary>Latencies (ticks) spread over the buckets: a few per bucket, anywhere inside it, the overflow bucket included.</summary>
    private static readonly Gen<long[]> s_scrape =
        Gen.Int[0, LatencyBuckets.Count - 1].SelectMany(b => Gen.Long[LatencyBuckets.LowerBoundTicks(b),
            b == LatencyBuckets.Count - 1 ? 2 * LatencyBuckets.LowerBoundTicks(b) : LatencyBuckets.UpperBoundTicks(b) - 1]).Array[0, 40];

    [Fact]
    public void EveryRequestLandsInItsBucketAndTheSumIsExact()
    {
        s_scrape.Array[1, 4].Sample(scrapes =>
        {
            CollectorRegistry registry = Prometheus.Metrics.NewCustomRegistry();
            Histogram histogram = Prometheus.Metrics.WithCustomRegistry(registry).CreateHistogram("h_seconds", "test",
                new HistogramConfiguration { Buckets = HistogramFeed.BucketBounds });
            var feed = new HistogramFeed();
            var counts = new long[LatencyBuckets.Count];
            long ticks = 0;
            var all = new List<long>();
            foreach (long[] latencies in scrapes)
            {
                foreach (long t in latencies) { counts[LatencyBuckets.Of(t)]++; ticks += t; all.Add(t); }
                feed.Update(histogram, counts, ticks);
            }
            using var text = new MemoryStream();
            registry.CollectAndExportAsTextAsync(text).GetAwaiter().GetResult();
            PrometheusText parsed = PrometheusText.Parse(System.Text.Encoding.UTF8.GetString(text.ToArray()));
            Assert.Equal(all.Count, parsed.Value("h_seconds_count"));
            double trueSum = LatencyBuckets.Seconds(ticks);
            Assert.True(Math.Abs(parsed.Value("h_seconds_sum") - trueSum) <= 1e-5 * trueSum + 1e-12, $"sum {parsed.Value("h_seconds_sum")} != {trueSum}");
            for (int b = 0; b < LatencyBuckets.Count - 1; b++)
            {
                double le = HistogramFeed.BucketBounds[b];
                // le is inclusive; a latency of whole ticks below the bucket's exclusive bound is within it.
                long expected = all.Count(t => t < LatencyBuckets.UpperBoundTicks(b));
                // Matched by value: the library writes le in its own number format.
                PrometheusText.Sample bucket = parsed.Families["h_seconds"].Samples.Single(s => s.Name == "h_seconds_bucket" && s.Labels["le"] != "+Inf"
                    && Math.Abs(double.Parse(s.Labels["le"], System.Globalization.CultureInfo.InvariantCulture) - le) <= 1e-9 * le);
                Assert.Equal(expected, bucket.Value);
            }
        }, iter: 200);
    }
}
