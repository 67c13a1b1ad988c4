using System.Diagnostics;
using System.Globalization;
using System.Numerics;
using System.Text;

namespace PfnBlock.Exports.Nbd;

/// <summary>
/// Per-export counters shared by all its connections: requests by command, bytes moved, errors
/// and a latency histogram (request parsed to reply queued). Updating costs a few interlocked
/// adds and no allocation.
/// </summary>
public sealed class NbdExportStats
{
    private const int CommandSlots = 8;
    private const int SubBits = 4;
    private const int Sub = 1 << SubBits;
    private const int Buckets = Sub + (64 - SubBits) * Sub;

    private readonly long[] _requests = new long[CommandSlots];
    private readonly long[] _latency = new long[Buckets];
    private long _bytesRead;
    private long _bytesWritten;
    private long _errors;
    private long _connections;
    private long _connectionsClosed;
    private long _latencyTicks;
    private long _polledReceives;

    /// <summary>Counts a finished request.</summary>
    /// <param name="command">The command.</param>
    /// <param name="error">Its result.</param>
    /// <param name="length">Its length in bytes.</param>
    /// <param name="elapsedTicks">Stopwatch ticks from parsing it to queueing its reply.</param>
    public void Record(NbdCommand command, NbdError error, uint length, long elapsedTicks)
    {
        int slot = (int)command;
        if ((uint)slot < CommandSlots) Interlocked.Increment(ref _requests[slot]);
        if (error != NbdError.None) Interlocked.Increment(ref _errors);
        else if (command == NbdCommand.Read) Interlocked.Add(ref _bytesRead, length);
        else if (command == NbdCommand.Write) Interlocked.Add(ref _bytesWritten, length);
        long ns = elapsedTicks <= 0 ? 0 : (long)(elapsedTicks * (1e9 / Stopwatch.Frequency));
        Interlocked.Increment(ref _latency[BucketOf(ns)]);
        Interlocked.Add(ref _latencyTicks, Math.Max(elapsedTicks, 0));
    }

    /// <summary>Counts an accepted connection.</summary>
    public void ConnectionOpened() => Interlocked.Increment(ref _connections);

    /// <summary>Counts the end of a connection <see cref="ConnectionOpened"/> counted.</summary>
    public void ConnectionClosed() => Interlocked.Increment(ref _connectionsClosed);

    /// <summary>Counts a receive that found data while the connection was busy-polling (<see cref="NbdServerOptions.BusyPoll"/>): a sleep and a wake-up saved.</summary>
    public void PolledReceive() => Interlocked.Increment(ref _polledReceives);

    /// <summary>A consistent-enough copy of the counters.</summary>
    public NbdStatsSnapshot Snapshot()
    {
        var requests = new long[CommandSlots];
        for (int i = 0; i < CommandSlots; i++) requests[i] = Volatile.Read(ref _requests[i]);
        var hist = new long[Buckets];
        for (int i = 0; i < Buckets; i++) hist[i] = Volatile.Read(ref _latency[i]);
        // Closed before opened: a connection ending between the two reads is never counted open.
        long closed = Volatile.Read(ref _connectionsClosed);
        return new NbdStatsSnapshot(requests, Volatile.Read(ref _bytesRead), Volatile.Read(ref _bytesWritten),
            Volatile.Read(ref _errors), Volatile.Read(ref _connections), hist)
        {
            ConnectionsOpen = Volatile.Read(ref _connections) - closed,
            LatencyTicks = Volatile.Read(ref _latencyTicks),
            PolledReceives = Volatile.Read(ref _polledReceives),
        };
    }

    internal static int BucketOf(long ns)
    {
        if (ns < Sub) return (int)Math.Max(ns, 0);
        int msb = 63 - BitOperations.LeadingZeroCount((ulong)ns);
        int e = msb - SubBits;
        return Sub + e * Sub + (int)((ns >> e) & (Sub - 1));
    }

    internal static long BucketFloor(int bucket)
    {
        if (bucket < Sub) return bucket;
        int e = (bucket - Sub) / Sub;
        long mantissa = (bucket - Sub) % Sub;
        return (Sub + mantissa) << e;
    }
}

/// <summary>A copy of an export's counters.</summary>
/// <param name="Requests">Requests by command number (READ 0 … BLOCK_STATUS 7).</param>
/// <param name="BytesRead">Bytes returned by successful reads.</param>
/// <param name="BytesWritten">Bytes stored by successful writes.</param>
/// <param name="Errors">Requests answered with an error.</param>
/// <param name="Connections">Connections that entered transmission.</param>
/// <param name="LatencyHistogram">Request counts by latency bucket.</param>
public sealed record NbdStatsSnapshot(long[] Requests, long BytesRead, long BytesWritten, long Errors, long Connections, long[] LatencyHistogram)
{
    /// <summary>Connections in transmission now.</summary>
    public long ConnectionsOpen { get; init; }

    /// <summary>The latency of all requests, summed, in <see cref="Stopwatch"/> ticks.</summary>
    public long LatencyTicks { get; init; }

    /// <summary>Receives that found data while their connection was busy-polling (<see cref="NbdServerOptions.BusyPoll"/>).</summary>
    public long PolledReceives { get; init; }

    /// <summary>Requests of one command.</summary>
    public long Count(NbdCommand command) => (int)command < Requests.Length ? Requests[(int)command] : 0;

    /// <summary>All requests.</summary>
    public long Total => Requests.Sum();

    /// <summary>The latency (ns, bucket floor) below which <paramref name="fraction"/> of requests finished.</summary>
    public long LatencyPercentile(double fraction)
    {
        long total = LatencyHistogram.Sum();
        if (total == 0) return 0;
        long rank = (long)Math.Ceiling(fraction * total);
        long seen = 0;
        for (int i = 0; i < LatencyHistogram.Length; i++)
        {
            seen += LatencyHistogram[i];
            if (seen >= rank) return NbdExportStats.BucketFloor(i);
        }
        return NbdExportStats.BucketFloor(LatencyHistogram.Length - 1);
    }

    /// <summary>One line for people.</summary>
    public override string ToString()
    {
        var sb = new StringBuilder();
        CultureInfo c = CultureInfo.InvariantCulture;
        sb.Append(c, $"connections {Connections}, requests {Total}: read {Count(NbdCommand.Read)} ({BytesRead / 1048576.0:F1} MiB)");
        sb.Append(c, $", write {Count(NbdCommand.Write)} ({BytesWritten / 1048576.0:F1} MiB), flush {Count(NbdCommand.Flush)}");
        sb.Append(c, $", trim {Count(NbdCommand.Trim)}, zero {Count(NbdCommand.WriteZeroes)}, cache {Count(NbdCommand.Cache)}");
        sb.Append(c, $", block-status {Count(NbdCommand.BlockStatus)}; errors {Errors}");
        if (Total > 0)
            sb.Append(c, $"; latency p50 {LatencyPercentile(0.5) / 1000.0:F1} us, p99 {LatencyPercentile(0.99) / 1000.0:F1} us, p99.9 {LatencyPercentile(0.999) / 1000.0:F1} us");
        return sb.ToString();
    }
}
