using PfnBlock.Block;
using PfnBlock.Exports.Nbd;
using Prometheus;

namespace PfnBlock.Management.Metrics;

/// <summary>
/// A server's metrics in prometheus-net's model (a registry of its own, none of the library's
/// default process metrics): per device of every exported stack and per export, counters, gauges
/// and latency histograms, labelled <c>device="SPEC"</c> and <c>export="NAME"</c>. Nothing here
/// runs per I/O: the values are read from the devices' per-thread counters and the exports'
/// counters when a scrape collects (a before-collect callback), so the I/O path keeps its plain
/// stores and allocates nothing.
/// </summary>
public sealed class ServerMetrics
{
    private static readonly string[] s_ops = ["read", "write", "discard", "flush"];

    private readonly ServerContext _server;
    private readonly Lock _lock = new();
    private readonly Dictionary<string, DeviceSeries> _devices = new(StringComparer.Ordinal);
    private readonly Dictionary<string, ExportSeries> _exports = new(StringComparer.Ordinal);

    private readonly Counter _deviceRequests, _deviceSectors, _deviceErrors, _deviceRequeues, _deviceBusy;
    private readonly Gauge _deviceInFlight, _deviceCapacity, _deviceInfo;
    private readonly Histogram _deviceLatency;
    private readonly Counter _nbdRequests, _nbdErrors, _nbdReadBytes, _nbdWrittenBytes, _nbdConnections, _nbdPolled;
    private readonly Gauge _nbdOpen, _exportInfo;
    private readonly Histogram _nbdLatency;
    private readonly Counter _refused, _evicted, _handshakeTimeouts;

    /// <summary>Creates the metrics of <paramref name="server"/>.</summary>
    public ServerMetrics(ServerContext server)
    {
        ArgumentNullException.ThrowIfNull(server);
        _server = server;
        Registry = Prometheus.Metrics.NewCustomRegistry();
        MetricFactory f = Prometheus.Metrics.WithCustomRegistry(Registry);
        string[] deviceOp = ["device", "op"], device = ["device"], export = ["export"];
        _deviceRequests = f.CreateCounter("pfnblock_device_requests_total", "Requests the device completed (as /sys/block/*/stat counts them; write includes write-zeroes).", deviceOp);
        _deviceSectors = f.CreateCounter("pfnblock_device_sectors_total", "512-byte sectors the device's completed requests moved, discarded or zeroed.", deviceOp);
        _deviceErrors = f.CreateCounter("pfnblock_device_errors_total", "Requests the device completed with an error (counted in requests_total too).", deviceOp);
        _deviceBusy = f.CreateCounter("pfnblock_device_busy_seconds_total", "Time the device had at least one request in flight (io_ticks; its rate is iostat's %util), to within 100 us per busy stretch.", device);
        _deviceLatency = f.CreateHistogram("pfnblock_device_request_seconds", "Time from a request entering the device to its completion.",
            new HistogramConfiguration { LabelNames = deviceOp, Buckets = HistogramFeed.BucketBounds });
        _deviceInFlight = f.CreateGauge("pfnblock_device_in_flight", "Requests submitted to the device and not yet completed (requeued ones excluded until resubmitted).", device);
        _deviceRequeues = f.CreateCounter("pfnblock_device_requeues_total", "Times the device answered Busy and the block layer requeued the request.", device);
        _deviceCapacity = f.CreateGauge("pfnblock_device_capacity_bytes", "Size of the device.", device);
        _deviceInfo = f.CreateGauge("pfnblock_device_info", "1 for every device served; name is the device's own short name.", ["device", "name"]);
        _exportInfo = f.CreateGauge("pfnblock_export_info", "1 for every export; device is the label of the device it serves.", ["export", "device"]);
        _nbdRequests = f.CreateCounter("pfnblock_nbd_requests_total", "NBD requests answered, by command.", ["export", "command"]);
        _nbdErrors = f.CreateCounter("pfnblock_nbd_errors_total", "NBD requests answered with an error.", export);
        _nbdReadBytes = f.CreateCounter("pfnblock_nbd_read_bytes_total", "Bytes returned by successful NBD reads.", export);
        _nbdWrittenBytes = f.CreateCounter("pfnblock_nbd_written_bytes_total", "Bytes stored by successful NBD writes.", export);
        _nbdPolled = f.CreateCounter("pfnblock_nbd_polled_receives_total", "Receives that found a request while the connection busy-polled (serve --busy-poll): sleeps saved.", export);
        _nbdLatency = f.CreateHistogram("pfnblock_nbd_request_seconds", "Server-side time of an NBD request, from parsing it to queueing its reply.",
            new HistogramConfiguration { LabelNames = export, Buckets = HistogramFeed.BucketBounds });
        _nbdConnections = f.CreateCounter("pfnblock_nbd_connections_total", "NBD connections that finished their handshake on the export.", export);
        _nbdOpen = f.CreateGauge("pfnblock_nbd_connections_open", "NBD connections being served on the export now.", export);
        _refused = f.CreateCounter("pfnblock_nbd_connections_refused_total", "Connections closed at once because every slot was taken by a served connection (--max-connections, --max-connections-per-source).");
        _evicted = f.CreateCounter("pfnblock_nbd_connections_evicted_total", "Connections dropped during their handshake to make room for a new one.");
        _handshakeTimeouts = f.CreateCounter("pfnblock_nbd_handshake_timeouts_total", "Connections dropped because their handshake took longer than --handshake-timeout.");
        Registry.AddBeforeCollectCallback(Update);
    }

    /// <summary>The registry the metrics live in.</summary>
    public CollectorRegistry Registry { get; }

    /// <summary>Collects now and returns the Prometheus text exposition format (version 0.0.4), UTF-8.</summary>
    public byte[] Scrape()
    {
        using var body = new MemoryStream();
        // One scrape at a time: the histograms are fed deltas since the previous scrape.
        lock (_lock) Registry.CollectAndExportAsTextAsync(body).GetAwaiter().GetResult();
        return body.ToArray();
    }

    private void Update()
    {
        lock (_lock)
        {
            IReadOnlyList<ServedDevice> devices = _server.ServedDevices();
            UpdateDevices(devices);
            UpdateExports(devices);
            if (_server.Server is { } nbd)
            {
                _refused.IncTo(nbd.ConnectionsRefused);
                _evicted.IncTo(nbd.ConnectionsEvicted);
                _handshakeTimeouts.IncTo(nbd.HandshakeTimeouts);
            }
        }
    }

    private void UpdateDevices(IReadOnlyList<ServedDevice> devices)
    {
        var seen = new HashSet<string>(StringComparer.Ordinal);
        foreach (ServedDevice d in devices)
        {
            seen.Add(d.Label);
            if (_devices.TryGetValue(d.Label, out DeviceSeries? series) && !ReferenceEquals(series.Device, d.Device))
            {
                // Another device under the same label: its counters start again from zero.
                RemoveDevice(d.Label, series);
                series = null;
            }
            if (series is null) _devices[d.Label] = series = new DeviceSeries(d.Device, d.Device.Name);

            DiskStatsSnapshot s = d.Device.Stats.Snapshot();
            DiskLatencySnapshot latency = d.Device.Stats.LatencySnapshot();
            ReadOnlySpan<OpStats> groups = [s.Read, s.Write, s.Discard, s.Flush];
            ReadOnlySpan<long[]> buckets = [latency.Read, latency.Write, latency.Discard, latency.Flush];
            for (int g = 0; g < s_ops.Length; g++)
            {
                _deviceRequests.WithLabels(d.Label, s_ops[g]).IncTo(groups[g].Ios);
                _deviceSectors.WithLabels(d.Label, s_ops[g]).IncTo(groups[g].Sectors);
                _deviceErrors.WithLabels(d.Label, s_ops[g]).IncTo(groups[g].Errors);
                series.Latency[g].Update(_deviceLatency.WithLabels(d.Label, s_ops[g]), buckets[g], groups[g].Ticks);
            }
            _deviceInFlight.WithLabels(d.Label).Set(s.InFlight);
            _deviceRequeues.WithLabels(d.Label).IncTo(s.Requeues);
            _deviceBusy.WithLabels(d.Label).IncTo(s.BusySeconds);
            _deviceCapacity.WithLabels(d.Label).Set(d.Device.CapacityBytes);
            _deviceInfo.WithLabels(d.Label, series.Name).Set(1);
        }
        foreach (string gone in _devices.Keys.Where(k => !seen.Contains(k)).ToList()) RemoveDevice(gone, _devices[gone]);
    }

    private void RemoveDevice(string label, DeviceSeries series)
    {
        foreach (string op in s_ops)
        {
            _deviceRequests.RemoveLabelled(label, op);
            _deviceSectors.RemoveLabelled(label, op);
            _deviceErrors.RemoveLabelled(label, op);
            _deviceLatency.RemoveLabelled(label, op);
        }
        _deviceInFlight.RemoveLabelled(label);
        _deviceRequeues.RemoveLabelled(label);
        _deviceBusy.RemoveLabelled(label);
        _deviceCapacity.RemoveLabelled(label);
        _deviceInfo.RemoveLabelled(label, series.Name);
        _devices.Remove(label);
    }

    private void UpdateExports(IReadOnlyList<ServedDevice> devices)
    {
        // Exports are only ever added to a registry, so a name keeps its export.
        foreach (NbdExport e in _server.Exports.All)
        {
            if (!_exports.TryGetValue(e.Name, out ExportSeries? series)) _exports[e.Name] = series = new ExportSeries();
            NbdStatsSnapshot s = e.Stats.Snapshot();
            foreach (NbdCommand c in NbdCommandNames.All) _nbdRequests.WithLabels(e.Name, NbdCommandNames.Of(c)).IncTo(s.Count(c));
            _nbdErrors.WithLabels(e.Name).IncTo(s.Errors);
            _nbdReadBytes.WithLabels(e.Name).IncTo(s.BytesRead);
            _nbdWrittenBytes.WithLabels(e.Name).IncTo(s.BytesWritten);
            _nbdPolled.WithLabels(e.Name).IncTo(s.PolledReceives);
            _nbdConnections.WithLabels(e.Name).IncTo(s.Connections);
            _nbdOpen.WithLabels(e.Name).Set(s.ConnectionsOpen);
            series.Latency.Update(_nbdLatency.WithLabels(e.Name), ToLatencyBuckets(s.LatencyHistogram), s.LatencyTicks);
            string device = devices.FirstOrDefault(d => ReferenceEquals(d.Device, e.Device))?.Label ?? e.Device.Name;
            _exportInfo.WithLabels(e.Name, device).Set(1);
        }
    }

    /// <summary>An export's fine log-linear histogram (nanoseconds) regrouped into <see cref="LatencyBuckets"/>: their powers of two are bucket edges of both.</summary>
    private static long[] ToLatencyBuckets(long[] fine)
    {
        var counts = new long[LatencyBuckets.Count];
        for (int i = 0; i < fine.Length; i++)
        {
            if (fine[i] == 0) continue;
            long ticks = (long)(NbdExportStats.BucketFloor(i) * (System.Diagnostics.Stopwatch.Frequency / 1e9));
            counts[LatencyBuckets.Of(ticks)] += fine[i];
        }
        return counts;
    }

    private sealed class DeviceSeries(IBlockDevice device, string name)
    {
        public readonly IBlockDevice Device = device;
        public readonly string Name = name;
        public readonly HistogramFeed[] Latency = [new(), new(), new(), new()];
    }

    private sealed class ExportSeries
    {
        public readonly HistogramFeed Latency = new();
    }
}
