using System.Reflection;

namespace PfnBlock.Management.Control;

/// <summary>
/// The commands a control socket answers, by name. <see cref="CreateDefault"/> holds every
/// <see cref="IRegisteredControlCommand"/> of the library; embedders and tests may
/// <see cref="Register"/> more.
/// </summary>
public sealed class ControlCommandRegistry
{
    private readonly Lock _lock = new();
    private readonly Dictionary<string, ControlCommand> _commands = new(StringComparer.Ordinal);

    /// <summary>A registry of every command the library defines.</summary>
    public static ControlCommandRegistry CreateDefault()
    {
        var registry = new ControlCommandRegistry();
        foreach (Type t in typeof(ControlCommandRegistry).Assembly.GetTypes())
        {
            if (t.IsAbstract || t.IsInterface || !typeof(IRegisteredControlCommand).IsAssignableFrom(t)) continue;
            PropertyInfo p = t.GetProperty(nameof(IRegisteredControlCommand.Command), BindingFlags.Public | BindingFlags.Static)
                ?? throw new InvalidOperationException($"{t.FullName} implements {nameof(IRegisteredControlCommand)} without a public static Command");
            registry.Register((ControlCommand)p.GetValue(null)!);
        }
        return registry;
    }

    /// <summary>Adds a command.</summary>
    /// <exception cref="ArgumentException">Its name is empty, has white space, or is taken.</exception>
    public void Register(ControlCommand command)
    {
        ArgumentNullException.ThrowIfNull(command);
        if (command.Name.Length == 0 || command.Name.Any(char.IsWhiteSpace))
            throw new ArgumentException($"invalid control command name '{command.Name}'");
        lock (_lock)
            if (!_commands.TryAdd(command.Name, command)) throw new ArgumentException($"control command '{command.Name}' is registered twice");
    }

    /// <summary>The command called <paramref name="name"/>, or null.</summary>
    public ControlCommand? Find(string name)
    {
        lock (_lock) return _commands.GetValueOrDefault(name);
    }

    /// <summary>Every command, by name.</summary>
    public IReadOnlyList<ControlCommand> All
    {
        get { lock (_lock) return [.. _commands.Values.OrderBy(c => c.Name, StringComparer.Ordinal)]; }
    }
}
