using System.Globalization;
using PfnBlock.Block;
using PfnBlock.Devices;

namespace PfnBlock.Targets.Table;

/// <summary>
/// The <c>table:FILE</c> device kind: a <see cref="MappedDevice"/> built from a device-mapper table
/// file whose lines are what <c>dmsetup create --table</c> takes — <c>START LENGTH TARGET ARGS…</c>
/// in 512-byte sectors — with lower devices named by spec (or <c>@NAME</c>) where dmsetup takes a
/// /dev path. Several lines concatenate ranges; <c>#</c> starts a comment.
/// </summary>
/// <example><code>
/// # 2 GiB: the first GiB of namespace a, then the first GiB of namespace b
/// 0       2097152 linear pmem:/dev/shm/a 0
/// 2097152 2097152 linear pmem:/dev/shm/b 0
/// </code></example>
public sealed class TableDevice : IRegisteredDevice
{
    private TableDevice() { }

    /// <inheritdoc/>
    public static DeviceType Type { get; } = new()
    {
        Name = "table",
        Summary = "a stack of targets from a device-mapper table file (lines: START LENGTH TARGET ARGS; see the targets below)",
        Arguments = [new("FILE", ArgumentKind.Path, "the table file")],
        Options = [new("name", ArgumentKind.Text, "the device's name (default: the file name)", "NAME")],
        Open = (spec, ctx) => Open(spec.Arguments[0], spec.Option("name") ?? Path.GetFileNameWithoutExtension(spec.Arguments[0]), ctx),
        Samples = [new("two linear lines over two RAM disks", s =>
        {
            string table = s.NewPath("two-lines.table");
            string a = Path.GetFileName(s.NewPath("a")), b = Path.GetFileName(s.NewPath("b"));
            File.WriteAllText(table, $"# two RAM disks, back to back\n0 16384 linear ram:8M,name={a} 0\n16384 16384 linear ram:8M,name={b} 0\n");
            return "table:" + DeviceSpec.Quote(table);
        })],
    };

    /// <summary>Parses <paramref name="path"/> and builds its mapped device; lower devices come through <paramref name="ctx"/>.</summary>
    /// <exception cref="FormatException">A line does not parse, a target refuses its arguments, or the lines do not tile the device.</exception>
    /// <exception cref="IOException">The file or a lower device cannot be read or opened.</exception>
    public static MappedDevice Open(string path, string name, DeviceOpenContext ctx)
    {
        string[] lines;
        try { lines = File.ReadAllLines(path); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new IOException($"table:{path}: cannot read the table: {e.Message}", e);
        }
        return Open($"table:{path}", lines, name, ctx);
    }

    /// <summary>Parses one table line's syntax without opening anything: start, length, a known target, and its arguments.</summary>
    /// <returns>Null for a blank or comment line.</returns>
    /// <exception cref="FormatException">The line does not parse; the message starts with <paramref name="where"/>.</exception>
    public static (long Begin, long Length, TargetType Type, string[] Args)? ParseLine(string line, string where)
    {
        int hash = line.IndexOf('#');
        if (hash >= 0) line = line[..hash];
        string[] words = line.Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries);
        if (words.Length == 0) return null;
        if (words.Length < 3) throw new FormatException($"{where}: expected START LENGTH TARGET ARGS");
        if (!long.TryParse(words[0], NumberStyles.None, CultureInfo.InvariantCulture, out long begin))
            throw new FormatException($"{where}: invalid start sector '{words[0]}'");
        if (!long.TryParse(words[1], NumberStyles.None, CultureInfo.InvariantCulture, out long length) || length == 0)
            throw new FormatException($"{where}: invalid length '{words[1]}' (a positive number of sectors)");
        TargetType type = DeviceTypes.FindTarget(words[2])
            ?? throw new FormatException($"{where}: unknown target type '{words[2]}' (known: {string.Join(", ", DeviceTypes.Targets.Select(t => t.Name))})");
        return (begin, length, type, words[3..]);
    }

    /// <summary>Builds a mapped device from table lines (from a file, or inline in a stack configuration).</summary>
    /// <param name="source">Where the lines come from, for messages (<c>table:/etc/a.table</c>, <c>device 'both'</c>).</param>
    /// <param name="lines">The table lines.</param>
    /// <param name="name">The device's name.</param>
    /// <param name="ctx">Opens the lower devices.</param>
    public static MappedDevice Open(string source, IReadOnlyList<string> lines, string name, DeviceOpenContext ctx)
    {
        var entries = new List<TableEntry>();
        try
        {
            for (int i = 0; i < lines.Count; i++)
            {
                string where = $"{source} line {i + 1}";
                if (ParseLine(lines[i], where) is not var (begin, length, type, args)) continue;
                Target target;
                try { target = type.Create(new TargetContext(ctx, begin, length, args)); }
                catch (TargetException e) { throw new FormatException($"{where}: {type.Name}: {e.Message}", e); }
                catch (IOException e) { throw new IOException($"{where}: {type.Name}: {e.Message}", e); }
                entries.Add(new TableEntry(begin, length, type.Name, target));
            }
            if (entries.Count == 0) throw new FormatException($"{source}: the table has no lines");
            IDisposable lower = ctx.TakeAcquired();
            try { return new MappedDevice(name, entries, lower, ctx.AddressSpace); }
            catch (ArgumentException e)
            {
                foreach (TableEntry entry in entries) entry.Target.Dispose();
                entries.Clear();
                lower.Dispose();
                throw new FormatException($"{source}: {e.Message}", e);
            }
        }
        catch
        {
            foreach (TableEntry e in entries) e.Target.Dispose();
            throw;
        }
    }
}
