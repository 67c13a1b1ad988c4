using System.Reflection;
using System.Reflection.Emit;
using PfnBlock.Block;

namespace PfnBlock.Tests;

/// <summary>
/// The library's layers depend only downwards (docs/DESIGN.md, "Layers"). Every type of the
/// PfnBlock assembly is read by reflection — base types, interfaces, fields, signatures, locals
/// and every type, method and field token in its IL — and each PfnBlock namespace it touches must
/// be one its layer may use.
/// </summary>
public sealed class LayeringTests
{
    // Layer (second namespace segment) → the layers below it that it may use. A new top-level
    // folder fails the test until it is given a row here.
    private static readonly Dictionary<string, string[]> s_allowed = new()
    {
        ["Common"] = [],
        ["Interop"] = ["Common"],
        ["Memory"] = ["Common", "Interop"],
        ["Namespaces"] = ["Common", "Interop", "Memory"],
        ["Block"] = ["Common", "Interop", "Memory"],
        ["Devices"] = ["Common", "Interop", "Memory", "Namespaces", "Block"],
        // Targets stack on devices: they open their lower devices through the registry in Devices.
        ["Targets"] = ["Common", "Interop", "Memory", "Block", "Devices"],
        ["Exports"] = ["Common", "Interop", "Memory", "Block"],
        // Operators' tools over a running server (metrics endpoint, control socket): they read the
        // devices of exported stacks and the exports; control commands for stacked targets (RAID
        // members) reach Targets.
        ["Management"] = ["Common", "Interop", "Memory", "Block", "Devices", "Targets", "Exports"],
        // The crash-state explorer: a tool layer over the persistent structures (only the CLI and tests use it).
        ["CrashTest"] = ["Common", "Interop", "Memory", "Namespaces"],
    };

    [Fact]
    public void EveryLayerDependsOnlyOnTheLayersBelowIt()
    {
        var violations = new SortedSet<string>(StringComparer.Ordinal);
        foreach (Type type in typeof(BlockDevice).Assembly.GetTypes())
        {
            string? layer = Layer(type.Namespace);
            if (layer is null) continue; // compiler-generated helpers (<PrivateImplementationDetails>)
            if (!s_allowed.TryGetValue(layer, out string[]? allowed))
            {
                violations.Add($"{type.Namespace}: layer '{layer}' has no rule in {nameof(LayeringTests)}");
                continue;
            }
            foreach (string used in ReferencedNamespaces(type))
            {
                string? usedLayer = Layer(used);
                if (usedLayer is null || usedLayer == layer || allowed.Contains(usedLayer)) continue;
                violations.Add($"{Outermost(type).FullName} ({layer}) uses {used} ({usedLayer})");
            }
        }
        Assert.True(violations.Count == 0, "upward dependencies:\n" + string.Join('\n', violations));
    }

    [Fact]
    public void TheScanSeesReferencesThatOnlyMethodBodiesMake()
    {
        // A reference only an IL token carries (no field, signature or local names the type).
        HashSet<string> used = ReferencedNamespaces(typeof(BodyOnlyReference));
        Assert.Contains("PfnBlock.Devices.Null", used);
        Assert.Contains("PfnBlock.Common", ReferencedNamespaces(typeof(GenericArgumentReference)));
    }

    private sealed class BodyOnlyReference
    {
        public static long Capacity() => new PfnBlock.Devices.Null.NullDevice(1 << 20).CapacitySectors;
    }

    private sealed class GenericArgumentReference
    {
        public static int Count() => new List<Func<string, long>> { PfnBlock.Common.SizeParser.Parse }.Count;
    }

    /// <summary>"Devices" for PfnBlock.Devices.Btt; null outside PfnBlock.</summary>
    private static string? Layer(string? ns)
    {
        if (ns is null || !ns.StartsWith("PfnBlock.", StringComparison.Ordinal)) return null;
        string rest = ns["PfnBlock.".Length..];
        int dot = rest.IndexOf('.');
        return dot < 0 ? rest : rest[..dot];
    }

    private static Type Outermost(Type t)
    {
        while (t.DeclaringType is not null) t = t.DeclaringType;
        return t;
    }

    private const BindingFlags All = BindingFlags.Public | BindingFlags.NonPublic | BindingFlags.Instance | BindingFlags.Static | BindingFlags.DeclaredOnly;

    private static HashSet<string> ReferencedNamespaces(Type type)
    {
        var found = new HashSet<string>(StringComparer.Ordinal);
        void Add(Type? t)
        {
            while (t is not null && (t.HasElementType))
                t = t.GetElementType();
            if (t is null || t.IsGenericParameter) return;
            if (t.Namespace is { } ns) found.Add(ns);
            if (t.IsGenericType)
                foreach (Type arg in t.GetGenericArguments()) Add(arg);
            if (t.IsFunctionPointer)
            {
                Add(t.GetFunctionPointerReturnType());
                foreach (Type p in t.GetFunctionPointerParameterTypes()) Add(p);
            }
        }
        void AddMember(MemberInfo? m)
        {
            switch (m)
            {
                case Type t: Add(t); break;
                case FieldInfo f: Add(f.DeclaringType); Add(f.FieldType); break;
                case MethodBase mb:
                    Add(mb.DeclaringType);
                    if (mb is MethodInfo mi)
                    {
                        Add(mi.ReturnType);
                        if (mi.IsGenericMethod) foreach (Type a in mi.GetGenericArguments()) Add(a);
                    }
                    foreach (ParameterInfo p in mb.GetParameters()) Add(p.ParameterType);
                    break;
            }
        }

        Add(type.BaseType);
        foreach (Type i in type.GetInterfaces()) Add(i);
        foreach (FieldInfo f in type.GetFields(All)) Add(f.FieldType);
        foreach (PropertyInfo p in type.GetProperties(All)) Add(p.PropertyType);
        foreach (EventInfo e in type.GetEvents(All)) Add(e.EventHandlerType);
        var methods = new List<MethodBase>(type.GetMethods(All));
        methods.AddRange(type.GetConstructors(All));
        foreach (MethodBase m in methods)
        {
            AddMember(m);
            MethodBody? body;
            try { body = m.GetMethodBody(); }
            catch (InvalidOperationException) { continue; }
            if (body is null) continue;
            foreach (LocalVariableInfo local in body.LocalVariables) Add(local.LocalType);
            foreach (int token in MemberTokens(body.GetILAsByteArray()!))
                AddMember(Resolve(m, token));
        }
        return found;
    }

    private static MemberInfo? Resolve(MethodBase m, int token)
    {
        Type[]? typeArgs = m.DeclaringType is { IsGenericType: true } d ? d.GetGenericArguments() : null;
        Type[]? methodArgs = m.IsGenericMethod ? m.GetGenericArguments() : null;
        try { return m.Module.ResolveMember(token, typeArgs, methodArgs); }
        catch (ArgumentException) { return null; } // a string or signature token, not a member
    }

    private static readonly OpCode[] s_oneByte = new OpCode[256];
    private static readonly OpCode[] s_twoByte = new OpCode[256];

    static LayeringTests()
    {
        foreach (FieldInfo f in typeof(OpCodes).GetFields(BindingFlags.Public | BindingFlags.Static))
        {
            var op = (OpCode)f.GetValue(null)!;
            ushort v = (ushort)op.Value;
            if (op.Size == 1) s_oneByte[v] = op;
            else s_twoByte[v & 0xFF] = op;
        }
    }

    /// <summary>The metadata tokens of every instruction that names a type, method or field.</summary>
    private static IEnumerable<int> MemberTokens(byte[] il)
    {
        int pc = 0;
        while (pc < il.Length)
        {
            OpCode op = il[pc] == 0xFE ? s_twoByte[il[++pc]] : s_oneByte[il[pc]];
            pc++;
            switch (op.OperandType)
            {
                case OperandType.InlineField:
                case OperandType.InlineMethod:
                case OperandType.InlineTok:
                case OperandType.InlineType:
                    yield return BitConverter.ToInt32(il, pc);
                    pc += 4;
                    break;
                case OperandType.InlineNone: break;
                case OperandType.ShortInlineBrTarget:
                case OperandType.ShortInlineI:
                case OperandType.ShortInlineVar: pc += 1; break;
                case OperandType.InlineVar: pc += 2; break;
                case OperandType.InlineI8:
                case OperandType.InlineR: pc += 8; break;
                case OperandType.InlineSwitch: pc += 4 + 4 * BitConverter.ToInt32(il, pc); break;
                default: pc += 4; break; // InlineBrTarget, InlineI, InlineSig, InlineString, ShortInlineR
            }
        }
    }
}
