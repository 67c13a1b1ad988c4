namespace PfnBlock.Common;

/// <summary>Sizes as people write them: 4096, 4k, 64M, 1G, 1T (binary units; an optional trailing B or iB).</summary>
public static class SizeParser
{
    /// <summary>Parses a size.</summary>
    /// <exception cref="FormatException">Not a size, or not positive.</exception>
    public static long Parse(string text)
    {
        string t = text.Trim();
        if (t.EndsWith("iB", StringComparison.OrdinalIgnoreCase)) t = t[..^2];
        else if (t.EndsWith('B') || t.EndsWith('b')) t = t[..^1];
        int shift = 0;
        if (t.Length > 0)
        {
            shift = char.ToLowerInvariant(t[^1]) switch { 'k' => 10, 'm' => 20, 'g' => 30, 't' => 40, _ => 0 };
            if (shift != 0) t = t[..^1];
        }
        if (!long.TryParse(t, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out long n) || n <= 0)
            throw new FormatException($"invalid size '{text}': expected a positive number with an optional k, M, G or T suffix");
        if (n > long.MaxValue >> shift) throw new FormatException($"size '{text}' is too large");
        return n << shift;
    }

    /// <summary>Formats a size with the largest exact binary unit.</summary>
    public static string Format(long bytes)
    {
        foreach ((int shift, string unit) in new[] { (40, "T"), (30, "G"), (20, "M"), (10, "k") })
            if (bytes >= 1L << shift && (bytes & ((1L << shift) - 1)) == 0) return $"{bytes >> shift}{unit}";
        return bytes.ToString(System.Globalization.CultureInfo.InvariantCulture);
    }
}
