using System.CommandLine;
using System.Text.Json;
using PfnBlock.Block;
using PfnBlock.Common;
using PfnBlock.Devices;
using PfnBlock.Devices.Pmem;
using PfnBlock.Exports.Copy;
using PfnBlock.Memory;

namespace PfnBlock.Cli.Commands;

/// <summary><c>pfnblock copy --from SPEC --to SPEC</c>: dd between devices, O_DIRECT straight into or out of pinned pmem frames.</summary>
internal static class CopyCommand
{
    public static Command Create()
    {
        Option<DeviceSpec?> from = Cli.DeviceOption("The device to read (e.g. file:/var/tmp/disk.img, pmem:/dev/shm/ns0).", "--from");
        Option<DeviceSpec?> to = Cli.DeviceOption("The device to write; a file: spec whose file does not exist yet is created with the copy's size.", "--to");
        from.Required = to.Required = true;
        Option<long> size = Cli.SizeOption("--size", "Bytes to copy (default: the smaller of the two devices).", 0);
        Option<long> bs = Cli.SizeOption("--bs", "Bytes per I/O, a multiple of 4096 (default 1M).", 1 << 20);
        var depth = new Option<int>("--iodepth") { Description = "I/Os in flight (default 4).", DefaultValueFactory = _ => 4 };
        var json = new Option<bool>("--json") { Description = "Print the result as JSON." };
        var fixedBuffers = new Option<bool>("--fixed-buffers")
        {
            Description = "Register the pmem side's frames with the O_DIRECT file's io_uring as fixed buffers, up to 1 GiB at a time (READ_FIXED/WRITE_FIXED: no page pinning per I/O; a discard of the window waits until the copy leaves it). Measured no faster for a one-pass copy.",
        };
        var poll = new Option<bool>("--poll")
        {
            Description = "The copy's thread reaps an io_uring file's completions itself (polled bios on its own ring) instead of the file's ring thread completing each chunk and waking it. Measured no faster.",
        };
        var cmd = new Command("copy", "Copy between two devices; an O_DIRECT file reads straight into pinned pmem frames (no bounce buffer) and writes straight out of them.")
        {
            from, to, size, bs, depth, json, fixedBuffers, poll,
        };
        cmd.SetAction(r => Cli.Run(() =>
        {
            long bytes = r.GetValue(size);
            if (r.GetValue(bs) > int.MaxValue) throw new ArgumentException($"--bs {r.GetValue(bs)} is too large");
            using var devices = new DeviceSet();
            IBlockDevice source = devices.Acquire(r.GetValue(from)!).Device;
            DeviceSpec toSpec = r.GetValue(to)!;
            CreateMissingFile(toSpec, bytes != 0 ? bytes : source.CapacityBytes);
            IBlockDevice destination = devices.Acquire(toSpec).Device;
            var copy = new DeviceCopy(source, destination, new DeviceCopyOptions
            {
                Size = bytes != 0 ? bytes : null,
                BlockSize = (int)r.GetValue(bs),
                QueueDepth = r.GetValue(depth),
                FixedBuffers = r.GetValue(fixedBuffers),
                Poll = r.GetValue(poll),
            });
            bool live = !r.GetValue(json) && !Console.IsErrorRedirected;
            long lastDraw = 0;
            DeviceCopyResult result = copy.Run(done =>
            {
                // A progress bar on the terminal, redrawn every 1 % at most.
                if (!live || (done - lastDraw) * 100 < copy.Size && done != copy.Size) return;
                lastDraw = done;
                int filled = (int)(done * 40 / copy.Size);
                Console.Error.Write($"\r[{new string('#', filled)}{new string('.', 40 - filled)}] {SizeParser.Format(done)} / {SizeParser.Format(copy.Size)}");
            });
            if (live) Console.Error.WriteLine();
            string map = MapOf(result.Path == CopyPath.IntoPinnedFrames ? destination : source);
            if (r.GetValue(json))
            {
                var doc = new
                {
                    bytes = result.Bytes,
                    path = result.Path switch { CopyPath.IntoPinnedFrames => "into-pinned-frames", CopyPath.FromPinnedFrames => "from-pinned-frames", _ => "bounce" },
                    descriptor_map = map,
                    pinned_bytes = result.PinnedBytes,
                    bounce_bytes = result.BounceBytes,
                    cpu_copied_bytes = result.CpuCopiedBytes,
                    registered_bytes = result.RegisteredBytes,
                    registration_errno = result.RegistrationErrno,
                    polled_bytes = result.PolledBytes,
                    seconds = result.Elapsed.TotalSeconds,
                    bytes_per_second = result.BytesPerSecond,
                };
                Console.WriteLine(JsonSerializer.Serialize(doc, new JsonSerializerOptions { WriteIndented = true }));
                return 0;
            }
            Console.WriteLine($"copied {result.Bytes} bytes ({SizeParser.Format(result.Bytes)}) in {result.Elapsed.TotalSeconds:F3} s, {result.BytesPerSecond / (1 << 20):F0} MiB/s");
            Console.WriteLine($"  from {source.Description}");
            Console.WriteLine($"  to   {destination.Description}");
            Console.WriteLine(result.Path switch
            {
                CopyPath.IntoPinnedFrames => $"  path: reads straight into pinned destination frames (pins kept by descriptor map '{map}')",
                CopyPath.FromPinnedFrames => $"  path: writes straight out of pinned source frames (pins kept by descriptor map '{map}')",
                _ => "  path: through a DRAM bounce buffer (neither device gives direct access)",
            });
            Console.WriteLine($"  pinned bytes {result.PinnedBytes}, bounce-buffer bytes {result.BounceBytes}, CPU-copied bytes {result.CpuCopiedBytes}, completed on the copy's thread {result.PolledBytes}");
            if (result.Path != CopyPath.Bounce && r.GetValue(fixedBuffers))
                Console.WriteLine($"  registered with io_uring as fixed buffers: {result.RegisteredBytes} bytes" +
                    (result.RegistrationErrno != 0 ? $" (registration refused: {System.Runtime.InteropServices.Marshal.GetPInvokeErrorMessage(result.RegistrationErrno)}, errno {result.RegistrationErrno})" : ""));
            return 0;
        }));
        return cmd;
    }

    /// <summary>dd creates its output file: a <c>file:</c> destination that does not exist is made <paramref name="bytes"/> long.</summary>
    private static void CreateMissingFile(DeviceSpec spec, long bytes)
    {
        if (spec.Type?.Name != "file" || spec.Arguments.Count == 0 || File.Exists(spec.Arguments[0]) || Directory.Exists(spec.Arguments[0])) return;
        using FileStream f = new(spec.Arguments[0], FileMode.CreateNew, FileAccess.Write);
        f.SetLength(bytes);
    }

    private static string MapOf(IBlockDevice device) =>
        device is PmemDevice pmem ? DescriptorMaps.Name(pmem.Namespace.Region.Descriptors.Kind) : "-";
}
