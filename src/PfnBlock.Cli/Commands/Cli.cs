using System.CommandLine;
using PfnBlock.Common;
using PfnBlock.Devices;

namespace PfnBlock.Cli.Commands;

/// <summary>Shared pieces of the commands: option parsers and the error policy.</summary>
internal static class Cli
{
    /// <summary>Exit code for a bad argument or refused request.</summary>
    public const int ExitUsage = 2;
    /// <summary>Exit code for a failure while running.</summary>
    public const int ExitFailure = 1;

    /// <summary>
    /// Runs a command body, turning the expected failures (bad input, I/O errors, refusals) into
    /// one line on stderr and a non-zero exit code; anything else is a bug and keeps its trace.
    /// </summary>
    public static int Run(Func<int> body)
    {
        try { return body(); }
        catch (Exception e) when (e is ArgumentException or FormatException or NotSupportedException)
        {
            Console.Error.WriteLine($"pfnblock: error: {e.Message}");
            return ExitUsage;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or InvalidOperationException or OutOfMemoryException)
        {
            Console.Error.WriteLine($"pfnblock: error: {e.Message}");
            return ExitFailure;
        }
    }

    /// <summary>An option taking a size such as 64M or 1G.</summary>
    public static Option<long> SizeOption(string name, string description, long? defaultValue = null)
    {
        var option = new Option<long>(name)
        {
            Description = description,
            CustomParser = r =>
            {
                string text = r.Tokens.Count > 0 ? r.Tokens[0].Value : "";
                try { return SizeParser.Parse(text); }
                catch (FormatException e) { r.AddError(e.Message); return 0; }
            },
        };
        if (defaultValue is long d) option.DefaultValueFactory = _ => d;
        else option.Required = true;
        return option;
    }

    /// <summary>An option taking a device spec.</summary>
    public static Option<DeviceSpec?> DeviceOption(string description, string name = "--device")
    {
        return new Option<DeviceSpec?>(name)
        {
            Description = description,
            CustomParser = r =>
            {
                string text = r.Tokens.Count > 0 ? r.Tokens[0].Value : "";
                try { return DeviceSpec.Parse(text); }
                catch (FormatException e) { r.AddError(e.Message); return null; }
            },
        };
    }

    /// <summary>The directory for default namespaces: $PFNBLOCK_DATA_DIR, else /dev/shm/pfnblock (pmem emulated on tmpfs), else ~/.local/share/pfnblock.</summary>
    public static string DataDirectory()
    {
        string? env = Environment.GetEnvironmentVariable("PFNBLOCK_DATA_DIR");
        string dir = !string.IsNullOrEmpty(env) ? env
            : Directory.Exists("/dev/shm") ? "/dev/shm/pfnblock"
            : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.LocalApplicationData), "pfnblock");
        Directory.CreateDirectory(dir);
        return dir;
    }
}
