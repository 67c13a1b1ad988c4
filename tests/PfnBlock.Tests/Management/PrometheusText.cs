using System.Globalization;
using System.Text;
using System.Text.RegularExpressions;

namespace PfnBlock.Tests.Management;

/// <summary>
/// A strict parser of the Prometheus text exposition format (version 0.0.4) for the tests: every
/// line must be a HELP, TYPE or other comment, or a sample; names, labels, escapes and values
/// must be well-formed; each family's samples come together after its TYPE; a series appears
/// once; a histogram's buckets are cumulative with a <c>+Inf</c> bucket equal to its
/// <c>_count</c>. Anything else throws <see cref="FormatException"/> naming the line.
/// </summary>
internal sealed partial class PrometheusText
{
    /// <summary>One sample: metric name (with a histogram's suffix), labels, value.</summary>
    public sealed record Sample(string Name, IReadOnlyDictionary<string, string> Labels, double Value)
    {
        public string Key => Name + "{" + string.Join(",", Labels.OrderBy(l => l.Key, StringComparer.Ordinal).Select(l => $"{l.Key}={l.Value}")) + "}";
    }

    /// <summary>A metric family: name, type, help and its samples.</summary>
    public sealed record Family(string Name, string Type, string? Help, List<Sample> Samples);

    public Dictionary<string, Family> Families { get; } = new(StringComparer.Ordinal);

    public static PrometheusText Parse(string text)
    {
        if (text.Length > 0 && !text.EndsWith('\n')) throw new FormatException("the exposition does not end with a newline");
        var result = new PrometheusText();
        var help = new Dictionary<string, string>(StringComparer.Ordinal);
        var seenSeries = new HashSet<string>(StringComparer.Ordinal);
        var closed = new HashSet<string>(StringComparer.Ordinal);
        Family? current = null;
        string[] lines = text.Split('\n');
        for (int i = 0; i < lines.Length - 1; i++)
        {
            string line = lines[i];
            string where = $"line {i + 1} '{line}'";
            if (line.Length == 0) continue;
            if (line.StartsWith('#'))
            {
                Match m = CommentLine().Match(line);
                if (!m.Success) continue; // a free comment
                string name = m.Groups[2].Value, rest = m.Groups[3].Value;
                if (!MetricName().IsMatch(name)) throw new FormatException($"{where}: bad metric name");
                if (m.Groups[1].Value == "HELP")
                {
                    if (!help.TryAdd(name, Unescape(rest, allowQuote: false, where))) throw new FormatException($"{where}: second HELP for {name}");
                    continue;
                }
                if (rest is not ("counter" or "gauge" or "histogram" or "summary" or "untyped")) throw new FormatException($"{where}: unknown type '{rest}'");
                if (result.Families.ContainsKey(name)) throw new FormatException($"{where}: second TYPE for {name}");
                if (current is not null) closed.Add(current.Name);
                current = new Family(name, rest, help.GetValueOrDefault(name), []);
                result.Families.Add(name, current);
                continue;
            }
            Sample s = ParseSample(line, where);
            string family = FamilyOf(s.Name, result);
            if (current is null || current.Name != family)
            {
                if (closed.Contains(family) || result.Families.ContainsKey(family)) throw new FormatException($"{where}: samples of {family} are not together");
                throw new FormatException($"{where}: sample before its family's TYPE line");
            }
            if (current.Type == "histogram" && s.Name == family) throw new FormatException($"{where}: a histogram sample without _bucket/_sum/_count");
            if (s.Name.EndsWith("_bucket", StringComparison.Ordinal) && current.Type == "histogram" && !s.Labels.ContainsKey("le"))
                throw new FormatException($"{where}: a bucket without le");
            if (!seenSeries.Add(s.Key)) throw new FormatException($"{where}: series {s.Key} appears twice");
            current.Samples.Add(s);
        }
        foreach (Family f in result.Families.Values.Where(f => f.Type == "histogram")) CheckHistogram(f);
        return result;
    }

    private static string FamilyOf(string sample, PrometheusText result)
    {
        foreach (string suffix in (string[])["_bucket", "_sum", "_count"])
            if (sample.EndsWith(suffix, StringComparison.Ordinal) && result.Families.TryGetValue(sample[..^suffix.Length], out Family? f) && f.Type is "histogram" or "summary")
                return f.Name;
        return sample;
    }

    private static void CheckHistogram(Family f)
    {
        foreach (IGrouping<string, Sample> series in f.Samples.GroupBy(s => SeriesKeyWithoutLe(s)))
        {
            Sample[] buckets = [.. series.Where(s => s.Name == f.Name + "_bucket")];
            Sample? count = series.SingleOrDefault(s => s.Name == f.Name + "_count");
            Sample? sum = series.SingleOrDefault(s => s.Name == f.Name + "_sum");
            if (count is null || sum is null || buckets.Length == 0) throw new FormatException($"{f.Name} {series.Key}: a histogram needs buckets, _sum and _count");
            double previousLe = double.NegativeInfinity, previous = 0;
            foreach (Sample b in buckets.OrderBy(b => ParseValue(b.Labels["le"], "le")))
            {
                double le = ParseValue(b.Labels["le"], "le");
                if (le == previousLe) throw new FormatException($"{f.Name} {series.Key}: le {le} twice");
                if (b.Value < previous) throw new FormatException($"{f.Name} {series.Key}: bucket le={le} holds {b.Value} < {previous}: not cumulative");
                previousLe = le;
                previous = b.Value;
            }
            if (!double.IsPositiveInfinity(previousLe)) throw new FormatException($"{f.Name} {series.Key}: no +Inf bucket");
            if (previous != count.Value) throw new FormatException($"{f.Name} {series.Key}: +Inf bucket {previous} != _count {count.Value}");
        }
    }

    private static string SeriesKeyWithoutLe(Sample s) =>
        string.Join(",", s.Labels.Where(l => l.Key != "le").OrderBy(l => l.Key, StringComparer.Ordinal).Select(l => $"{l.Key}={l.Value}"));

    private static Sample ParseSample(string line, string where)
    {
        int i = 0;
        while (i < line.Length && line[i] is not ('{' or ' ')) i++;
        string name = line[..i];
        if (!MetricName().IsMatch(name)) throw new FormatException($"{where}: bad metric name '{name}'");
        var labels = new Dictionary<string, string>(StringComparer.Ordinal);
        if (i < line.Length && line[i] == '{')
        {
            i++;
            while (true)
            {
                if (i < line.Length && line[i] == '}') { i++; break; }
                int eq = line.IndexOf('=', i);
                if (eq < 0) throw new FormatException($"{where}: label without '='");
                string label = line[i..eq];
                if (!LabelName().IsMatch(label) || label.StartsWith("__", StringComparison.Ordinal)) throw new FormatException($"{where}: bad label name '{label}'");
                if (eq + 1 >= line.Length || line[eq + 1] != '"') throw new FormatException($"{where}: label value not quoted");
                var value = new StringBuilder();
                int j = eq + 2;
                for (; j < line.Length && line[j] != '"'; j++)
                {
                    if (line[j] != '\\') { value.Append(line[j]); continue; }
                    if (++j >= line.Length) throw new FormatException($"{where}: dangling escape");
                    value.Append(line[j] switch { '\\' => '\\', '"' => '"', 'n' => '\n', _ => throw new FormatException($"{where}: bad escape \\{line[j]}") });
                }
                if (j >= line.Length) throw new FormatException($"{where}: unterminated label value");
                if (!labels.TryAdd(label, value.ToString())) throw new FormatException($"{where}: label {label} twice");
                i = j + 1;
                if (i < line.Length && line[i] == ',') { i++; continue; }
                if (i < line.Length && line[i] == '}') { i++; break; }
                throw new FormatException($"{where}: expected ',' or '}}' after a label");
            }
        }
        if (i >= line.Length || line[i] != ' ') throw new FormatException($"{where}: no value");
        string[] fields = line[(i + 1)..].Split(' ');
        if (fields.Length is < 1 or > 2 || fields.Any(f => f.Length == 0)) throw new FormatException($"{where}: expected 'value [timestamp]'");
        double v = ParseValue(fields[0], where);
        if (fields.Length == 2 && !long.TryParse(fields[1], NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out _))
            throw new FormatException($"{where}: bad timestamp");
        return new Sample(name, labels, v);
    }

    private static double ParseValue(string text, string where) => text switch
    {
        "+Inf" => double.PositiveInfinity,
        "-Inf" => double.NegativeInfinity,
        "NaN" => double.NaN,
        _ => double.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture, out double d) ? d : throw new FormatException($"{where}: bad value '{text}'"),
    };

    private static string Unescape(string text, bool allowQuote, string where)
    {
        var sb = new StringBuilder();
        for (int i = 0; i < text.Length; i++)
        {
            if (text[i] != '\\') { sb.Append(text[i]); continue; }
            if (++i >= text.Length) throw new FormatException($"{where}: dangling escape");
            sb.Append(text[i] switch { '\\' => '\\', 'n' => '\n', '"' when allowQuote => '"', _ => throw new FormatException($"{where}: bad escape") });
        }
        return sb.ToString();
    }

    /// <summary>The value of the one sample named <paramref name="name"/> with exactly <paramref name="labels"/> (name=value pairs).</summary>
    public double Value(string name, params (string Name, string Value)[] labels)
    {
        Sample? s = Find(name, labels);
        return s?.Value ?? throw new Xunit.Sdk.XunitException($"no sample {name}{{{string.Join(",", labels.Select(l => $"{l.Name}=\"{l.Value}\""))}}}");
    }

    public Sample? Find(string name, params (string Name, string Value)[] labels)
    {
        foreach (Family f in Families.Values)
            foreach (Sample s in f.Samples)
                if (s.Name == name && s.Labels.Count == labels.Length && labels.All(l => s.Labels.TryGetValue(l.Name, out string? v) && v == l.Value))
                    return s;
        return null;
    }

    [GeneratedRegex(@"^# (HELP|TYPE) (\S+) ?(.*)$")]
    private static partial Regex CommentLine();
    [GeneratedRegex(@"^[a-zA-Z_:][a-zA-Z0-9_:]*$")]
    private static partial Regex MetricName();
    [GeneratedRegex(@"^[a-zA-Z_][a-zA-Z0-9_]*$")]
    private static partial Regex LabelName();
}
