using System.CommandLine;
using System.Net;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using System.Security.Cryptography.X509Certificates;
using PfnBlock.Block;
using PfnBlock.Cli.Config;
using PfnBlock.Devices;
using PfnBlock.Exports.Nbd;
using PfnBlock.Management;
using PfnBlock.Management.Control;
using PfnBlock.Management.Metrics;
using PfnBlock.Namespaces;

namespace PfnBlock.Cli.Commands;

/// <summary><c>pfnblock serve</c>: exports devices over NBD until SIGINT or SIGTERM.</summary>
internal static class ServeCommand
{
    private const string DefaultExport = "pmem0";
    private const long DefaultNamespaceSize = 1L << 30;

    public static Command Create()
    {
        var exports = new Option<string[]>("--export")
        {
            Description = $"An export as NAME=SPEC ({DeviceTypes.SpecSummary}, or @NAME of a --device; 'pfnblock devices' lists every kind); repeatable. " +
                          "Default: pmem0 = a 1 GiB namespace in the data directory, created if missing.",
            AllowMultipleArgumentsPerToken = false,
        };
        var defines = new Option<string[]>("--device")
        {
            Description = "Define a device as NAME=SPEC, for exports and table lines to name as @NAME; repeatable.",
            AllowMultipleArgumentsPerToken = false,
        };
        var config = new Option<string?>("--config")
        {
            Description = "A YAML file describing the whole stack (namespaces to create if missing, named devices and tables, exports, listen " +
                          "addresses), validated as a whole before anything is opened; replaces --export, --device and --listen.",
        };
        var check = new Option<bool>("--check") { Description = "With --config: validate the stack and print what it would serve, then exit without creating or opening anything." };
        var listen = new Option<string[]>("--listen")
        {
            Description = "Where to listen: tcp:HOST:PORT or unix:PATH; repeatable. Default: tcp:127.0.0.1:10809.",
        };
        var readOnly = new Option<bool>("--read-only") { Description = "Refuse writes on every export (EPERM)." };
        var statsInterval = new Option<int>("--stats-interval") { Description = "Print per-export statistics every SECONDS (0: only at shutdown).", DefaultValueFactory = _ => 0 };
        var maxConnections = new Option<int>("--max-connections")
        {
            Description = "Connections served at once; when all are taken, the oldest one still in its handshake is dropped to make room.",
            DefaultValueFactory = _ => 64,
        };
        var maxPerSource = new Option<int>("--max-connections-per-source")
        {
            Description = "Connections from one IP address at once (0: no limit; Unix-socket clients are not counted).",
            DefaultValueFactory = _ => 0,
        };
        var handshakeTimeout = new Option<double>("--handshake-timeout")
        {
            Description = "Seconds a client may take from connecting to the end of option haggling (TLS included).",
            DefaultValueFactory = _ => 5,
        };
        Option<long> memoryBudget = Cli.SizeOption("--memory-budget",
            "Memory of all connection buffers together (at least 1M per --max-connections plus 64M); given back when connections idle or end.", 256L << 20);
        var busyPoll = new Option<int>("--busy-poll")
        {
            Description = "Microseconds a connection keeps polling its socket for the next request before it sleeps (0: sleep at once). Spends CPU to save the wake-up of a queue-depth-1 client's next request.",
            DefaultValueFactory = _ => 0,
        };
        var spliceReads = new Option<long>("--splice-reads")
        {
            Description = "Read data of a direct-access device from this size up goes to a Unix-socket client by reference (vmsplice/splice), not copied (default 64K); 0: always copy.",
            DefaultValueFactory = _ => 64 << 10,
            CustomParser = r =>
            {
                string text = r.Tokens.Count > 0 ? r.Tokens[0].Value : "";
                try { return text == "0" ? 0 : Common.SizeParser.Parse(text); }
                catch (FormatException e) { r.AddError(e.Message); return 0; }
            },
        };
        var tlsCert = new Option<string?>("--tls-cert") { Description = "PEM certificate (chain) offered by STARTTLS." };
        var tlsKey = new Option<string?>("--tls-key") { Description = "PEM private key of --tls-cert." };
        var tls = new Option<string>("--tls") { Description = "With a certificate: 'allow' (clients choose) or 'require' (plaintext options are refused).", DefaultValueFactory = _ => "allow" };
        tls.AcceptOnlyFromAmong("allow", "require");
        var metrics = new Option<string?>("--metrics")
        {
            Description = "Serve Prometheus metrics at http://ADDRESS/metrics: tcp:HOST:PORT (HOST an IP address) or PORT (on 127.0.0.1). Default: none.",
        };
        var control = new Option<string?>("--control")
        {
            Description = "The control socket that 'pfnblock stat' and 'pfnblock ctl' talk to: a Unix socket PATH (mode 0600), or 'none'. " +
                          $"Default: {ControlSocketName} in the data directory (skipped with a warning if another server has it).",
        };
        var cmd = new Command("serve", "Serve devices to NBD clients (qemu, nbd-client, libnbd tools, fio) until SIGINT/SIGTERM.")
        {
            exports, defines, config, check, listen, readOnly, statsInterval, maxConnections, maxPerSource, handshakeTimeout, memoryBudget, spliceReads, busyPoll, tlsCert, tlsKey, tls,
            metrics, control,
        };
        cmd.SetAction(r => Cli.Run(() =>
        {
            bool tlsRequired = r.GetValue(tls) == "require";
            var limits = new NbdServerOptions
            {
                MaxConnections = Positive(r.GetValue(maxConnections), "--max-connections"),
                MaxConnectionsPerSource = r.GetValue(maxPerSource) >= 0 ? r.GetValue(maxPerSource)
                    : throw new ArgumentException("--max-connections-per-source must not be negative"),
                HandshakeTimeout = r.GetValue(handshakeTimeout) is > 0 and <= 3600 and double t ? TimeSpan.FromSeconds(t)
                    : throw new ArgumentException("--handshake-timeout must be between 0 and 3600 seconds"),
                MemoryBudget = r.GetValue(memoryBudget),
                SpliceReadBytes = r.GetValue(spliceReads) is >= 0 and <= int.MaxValue and long splice ? (int)splice
                    : throw new ArgumentException("--splice-reads must be between 0 and 2G"),
                BusyPoll = r.GetValue(busyPoll) is >= 0 and < 1_000_000 and int us ? TimeSpan.FromMicroseconds(us)
                    : throw new ArgumentException("--busy-poll must be between 0 and 999999 microseconds"),
                TlsCertificate = LoadCertificate(r.GetValue(tlsCert), r.GetValue(tlsKey), tlsRequired),
                TlsRequired = tlsRequired,
                Log = m => Console.Error.WriteLine($"pfnblock: {m}"),
            };
            var operators = new OperatorOptions(r.GetValue(metrics) is { } m ? MetricsEndpoint.ParseAddress(m) : null, r.GetValue(control));
            if (r.GetValue(config) is string file)
            {
                if ((r.GetValue(exports)?.Length ?? 0) + (r.GetValue(defines)?.Length ?? 0) + (r.GetValue(listen)?.Length ?? 0) > 0)
                    throw new ArgumentException("--config describes the exports, devices and listen addresses; do not also give --export, --device or --listen");
                StackConfig stack = StackConfig.Load(file);
                if (r.GetValue(check)) return PrintPlan(stack);
                return Serve(stack, r.GetValue(readOnly), r.GetValue(statsInterval), limits, operators);
            }
            if (r.GetValue(check)) throw new ArgumentException("--check needs --config");
            return Serve(r.GetValue(exports) ?? [], r.GetValue(defines) ?? [], r.GetValue(listen) ?? [], r.GetValue(readOnly), r.GetValue(statsInterval), limits, operators);
        }));
        return cmd;
    }

    private static X509Certificate2? LoadCertificate(string? certPath, string? keyPath, bool required)
    {
        if (certPath is null && keyPath is null)
            return required ? throw new ArgumentException("--tls require needs --tls-cert and --tls-key") : null;
        if (certPath is null || keyPath is null) throw new ArgumentException("--tls-cert and --tls-key go together");
        try { return X509Certificate2.CreateFromPemFile(certPath, keyPath); }
        catch (System.Security.Cryptography.CryptographicException e)
        {
            throw new IOException($"cannot load TLS certificate '{certPath}' with key '{keyPath}': {e.Message}", e);
        }
    }

    private static int Positive(int value, string option) => value > 0 ? value : throw new ArgumentException($"{option} must be positive");

    /// <summary>The file name of the default control socket in the data directory.</summary>
    public const string ControlSocketName = "control.sock";

    /// <summary>The control socket <c>serve</c>, <c>stat</c> and <c>ctl</c> use when not told: <see cref="ControlSocketName"/> in the data directory.</summary>
    public static string DefaultControlSocket() => Path.Combine(Cli.DataDirectory(), ControlSocketName);

    /// <summary>What <c>serve</c> offers its operators besides NBD.</summary>
    /// <param name="Metrics">Where to serve Prometheus metrics, or null.</param>
    /// <param name="Control">The control socket path as given (null: the default; "none": no socket).</param>
    private sealed record OperatorOptions(NbdListenAddress? Metrics, string? Control);

    private static int Serve(string[] exportArgs, string[] defineArgs, string[] listenArgs, bool readOnly, int statsInterval, NbdServerOptions limits, OperatorOptions operators)
    {
        if (statsInterval < 0) throw new ArgumentException("--stats-interval must not be negative");
        List<NbdListenAddress> addresses = listenArgs.Length == 0 ? [NbdListenAddress.Default] : [.. listenArgs.Select(NbdListenAddress.Parse)];
        // --read-only reaches the devices too: namespaces and files are opened O_RDONLY with a shared claim.
        using var devices = new DeviceSet(readOnly: readOnly);
        foreach (string define in defineArgs)
        {
            (string name, string text) = SplitNameSpec(define, "--device", "fast=pmem:/dev/shm/pmem0");
            devices.Define(name, text);
        }
        List<(string Name, DeviceSpec Spec)> specs = exportArgs.Length == 0 ? [DefaultNamespace()] : [.. exportArgs.Select(ParseExport)];
        var registry = new NbdExportRegistry();
        foreach ((string name, DeviceSpec spec) in specs)
        {
            IBlockDevice device = devices.Acquire(spec).Device;
            registry.Add(new NbdExport(name, device, readOnly, $"{spec.Text} served by pfnblock"));
        }
        return Run(devices, registry, addresses, statsInterval, limits, operators);
    }

    private static int Serve(StackConfig stack, bool readOnly, int statsInterval, NbdServerOptions limits, OperatorOptions operators)
    {
        if (statsInterval < 0) throw new ArgumentException("--stats-interval must not be negative");
        if (!readOnly) stack.CreateMissingNamespaces(Console.WriteLine);
        using var devices = new DeviceSet(readOnly: readOnly);
        stack.Define(devices);
        var registry = new NbdExportRegistry();
        foreach (StackConfig.ExportDecl e in stack.Exports)
        {
            IBlockDevice device = devices.Acquire(e.Device).Device;
            registry.Add(new NbdExport(e.Name, device, readOnly || e.ReadOnly, e.Description ?? $"{e.Device} served by pfnblock"));
        }
        return Run(devices, registry, stack.Listen.Count == 0 ? [NbdListenAddress.Default] : stack.Listen, statsInterval, limits, operators);
    }

    /// <summary>What a stack would serve, without creating or opening anything (<c>--check</c>).</summary>
    private static int PrintPlan(StackConfig stack)
    {
        Console.WriteLine($"{stack.Source}: valid");
        foreach (StackConfig.NamespaceDecl n in stack.Namespaces)
            Console.WriteLine($"namespace {n.Path}: {n.Size} bytes, {n.Mode.ToString().ToLowerInvariant()}{(File.Exists(n.Path) ? " (exists)" : " (to create)")}");
        foreach (StackConfig.DeviceDecl d in stack.Devices)
        {
            if (d.Spec is not null) Console.WriteLine($"device @{d.Name}: {d.Spec}");
            else
            {
                Console.WriteLine($"device @{d.Name}: table");
                foreach (string line in d.Table!) Console.WriteLine($"  {line}");
            }
        }
        foreach (StackConfig.ExportDecl e in stack.Exports) Console.WriteLine($"export {e.Name}: {e.Device}{(e.ReadOnly ? ", read-only" : "")}");
        foreach (NbdListenAddress a in stack.Listen.Count == 0 ? [NbdListenAddress.Default] : stack.Listen) Console.WriteLine($"listen {a}");
        return 0;
    }

    private static int Run(DeviceSet devices, NbdExportRegistry registry, IReadOnlyList<NbdListenAddress> addresses, int statsInterval, NbdServerOptions limits, OperatorOptions operators)
    {
        using var stop = new ManualResetEventSlim();
        using PosixSignalRegistration sigint = PosixSignalRegistration.Create(PosixSignal.SIGINT, c => { c.Cancel = true; stop.Set(); });
        using PosixSignalRegistration sigterm = PosixSignalRegistration.Create(PosixSignal.SIGTERM, c => { c.Cancel = true; stop.Set(); });
        using var server = new NbdServer(registry, limits);
        IReadOnlyList<EndPoint> bound = server.Start(addresses);
        var context = new ServerContext(devices, registry, server) { Listening = [.. bound.Select(ep => new NbdListenAddress(ep).ToString())] };
        // Declared after the server, so disposed before it: no scrape or command runs while it drains.
        using MetricsEndpoint? metricsEndpoint = operators.Metrics is null ? null : new MetricsEndpoint(new ServerMetrics(context), limits.Log);
        IPEndPoint? metricsBound = operators.Metrics is null ? null : metricsEndpoint!.Start(operators.Metrics);
        using ControlServer? controlServer = StartControl(operators.Control, context, limits.Log);

        foreach (NbdExport e in registry.All)
            Console.WriteLine($"export {e.Name}: {e.Description}, {e.Size} bytes{(e.ReadOnly ? ", read-only" : "")}");
        foreach (EndPoint ep in bound) PrintClientCommands(ep, registry.All[0].Name);
        if (metricsBound is not null) Console.WriteLine($"metrics at http://{new NbdListenAddress(metricsBound).ToString()[4..]}/metrics");
        if (controlServer is not null) Console.WriteLine($"control socket {controlServer.Path} (pfnblock stat --control {controlServer.Path}; pfnblock ctl help --control {controlServer.Path})");
        if (limits.TlsCertificate is { } certificate)
            Console.WriteLine($"TLS {(limits.TlsRequired ? "required" : "offered")} with certificate {certificate.Subject} (clients use nbds:// or nbds+unix:// URIs)");
        Console.WriteLine("serving; Ctrl-C or SIGTERM stops (in-flight requests finish, exports are flushed)");

        while (!stop.Wait(statsInterval > 0 ? TimeSpan.FromSeconds(statsInterval) : Timeout.InfiniteTimeSpan))
            PrintStats(registry);

        Console.WriteLine("stopping: draining connections and flushing exports");
        bool drained = server.Stop();
        if (!drained) Console.Error.WriteLine("pfnblock: warning: some connections did not finish within 30 s");
        PrintStats(registry);
        return 0;
    }

    /// <summary>Starts the control socket: an explicit path must work; the default one is skipped with a warning when another server holds it.</summary>
    private static ControlServer? StartControl(string? path, ServerContext context, Action<string>? log)
    {
        if (path == "none") return null;
        bool explicitPath = path is not null;
        path ??= DefaultControlSocket();
        var control = new ControlServer(context, log: log);
        try
        {
            control.Start(path);
            return control;
        }
        catch (IOException e) when (!explicitPath)
        {
            control.Dispose();
            Console.Error.WriteLine($"pfnblock: warning: no control socket: {e.Message} (choose one with --control PATH)");
            return null;
        }
        catch
        {
            control.Dispose();
            throw;
        }
    }

    private static (string, DeviceSpec) DefaultNamespace()
    {
        string path = Path.Combine(Cli.DataDirectory(), DefaultExport);
        if (!File.Exists(path))
        {
            using PmemNamespace ns = PmemNamespace.Create(path, new NamespaceCreateOptions { Size = DefaultNamespaceSize, Name = DefaultExport });
            Console.WriteLine($"created {path}: 1 GiB pmem namespace, {ns.DataSize} bytes of data after its info blocks and 2 MiB alignment ({ns.PersistenceDescription})");
        }
        return (DefaultExport, DeviceSpec.Parse("pmem:" + DeviceSpec.Quote(path)));
    }

    private static (string, DeviceSpec) ParseExport(string text)
    {
        (string name, string spec) = SplitNameSpec(text, "export", "pmem0=pmem:/dev/shm/pmem0");
        return (name, DeviceSpec.Parse(spec));
    }

    private static (string Name, string Spec) SplitNameSpec(string text, string what, string example)
    {
        int eq = text.IndexOf('=');
        if (eq <= 0 || eq == text.Length - 1) throw new FormatException($"invalid {what} '{text}': expected NAME=SPEC, e.g. {example}");
        return (text[..eq], text[(eq + 1)..]);
    }

    private static void PrintClientCommands(EndPoint ep, string export)
    {
        if (ep is UnixDomainSocketEndPoint unix)
        {
            string uri = $"nbd+unix:///{export}?socket={unix}";
            Console.WriteLine($"listening on unix:{unix}");
            Console.WriteLine($"  nbdinfo '{uri}'");
            Console.WriteLine($"  qemu-img info '{uri}'");
            Console.WriteLine($"  nbd-client -unix {unix} /dev/nbd0 -N {export}");
            return;
        }
        var ip = (IPEndPoint)ep;
        string host = ip.AddressFamily == AddressFamily.InterNetworkV6 ? $"[{ip.Address}]" : ip.Address.ToString();
        Console.WriteLine($"listening on tcp:{host}:{ip.Port}");
        Console.WriteLine($"  qemu-img info nbd://{host}:{ip.Port}/{export}");
        Console.WriteLine($"  nbdinfo nbd://{host}:{ip.Port}/{export}");
        Console.WriteLine($"  nbd-client {ip.Address} {ip.Port} /dev/nbd0 -N {export}");
    }

    private static void PrintStats(NbdExportRegistry registry)
    {
        foreach (NbdExport e in registry.All) Console.WriteLine($"stats {e.Name}: {e.Stats.Snapshot()}");
    }
}
