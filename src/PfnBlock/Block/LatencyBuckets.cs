using System.Diagnostics;
using System.Numerics;
using System.Runtime.CompilerServices;

namespace PfnBlock.Block;

/// <summary>
/// The latency buckets every device counts its completed requests in: powers of two of
/// <see cref="Stopwatch"/> ticks (nanoseconds on Linux). Bucket 0 holds everything below 256
/// ticks, bucket <c>k</c> (1 … 30) the range [2^(k+7), 2^(k+8)), and the last one everything from
/// 2^38 ticks (about 275 s) up. Finding a bucket is one <c>lzcnt</c> and a minimum, cheap enough
/// for every I/O at every level of a stack; the factor of two is as fine as an operator's view
/// of latency needs (Prometheus, iostat's await come from the exact time sums kept beside it).
/// </summary>
public static class LatencyBuckets
{
    /// <summary>How many buckets a histogram has (the last one is unbounded above).</summary>
    public const int Count = 32;

    private const int FirstShift = 8;

    /// <summary>The bucket of a request that took <paramref name="ticks"/> Stopwatch ticks (a negative time, which the monotonic clock never gives, lands in the last).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static int Of(long ticks) =>
        Math.Min(BitOperations.Log2((ulong)ticks | ((1UL << FirstShift) - 1)) - (FirstShift - 1), Count - 1);

    /// <summary>The exclusive upper bound of bucket <paramref name="bucket"/> in ticks; <see cref="long.MaxValue"/> for the last.</summary>
    public static long UpperBoundTicks(int bucket)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(bucket);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(bucket, Count);
        return bucket == Count - 1 ? long.MaxValue : 1L << (bucket + FirstShift);
    }

    /// <summary>The inclusive lower bound of bucket <paramref name="bucket"/> in ticks.</summary>
    public static long LowerBoundTicks(int bucket) => bucket == 0 ? 0 : UpperBoundTicks(bucket - 1);

    /// <summary>Converts Stopwatch ticks to seconds.</summary>
    public static double Seconds(long ticks) => (double)ticks / Stopwatch.Frequency;
}
