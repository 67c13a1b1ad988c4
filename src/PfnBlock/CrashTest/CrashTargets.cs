using PfnBlock.CrashTest.Structures;

namespace PfnBlock.CrashTest;

/// <summary>The structures <c>pfnblock crashtest --structure</c> knows, by name.</summary>
public static class CrashTargets
{
    private static readonly Dictionary<string, Func<CrashTestOptions, ICrashTarget>> s_targets = new(StringComparer.Ordinal)
    {
        ["btt"] = o => new BttCrashTarget(o),
        ["namespace"] = o => new NamespaceCrashTarget(o),
        ["descriptors"] = o => new DescriptorCrashTarget(o),
    };

    /// <summary>Persistent structures planned but not yet in the tree; each gets a target when its issue lands.</summary>
    private static readonly string[] s_planned = ["writecache", "journal", "bitmap"];

    /// <summary>Names with a target.</summary>
    public static IReadOnlyCollection<string> Available => s_targets.Keys;
    /// <summary>Every name the command accepts: those with a target and those planned.</summary>
    public static IEnumerable<string> All => s_targets.Keys.Concat(s_planned);

    /// <summary>Creates the target for <paramref name="name"/>.</summary>
    /// <exception cref="NotSupportedException">The structure does not exist in the tree yet.</exception>
    /// <exception cref="ArgumentException">Unknown name.</exception>
    public static ICrashTarget Create(string name, CrashTestOptions options)
    {
        if (s_targets.TryGetValue(name, out Func<CrashTestOptions, ICrashTarget>? create)) return create(options);
        if (s_planned.Contains(name))
            throw new NotSupportedException($"structure '{name}' has no crash-test target yet: it is not in the tree (available: {string.Join(", ", Available)})");
        throw new ArgumentException($"unknown structure '{name}' (available: {string.Join(", ", Available)})");
    }
}
