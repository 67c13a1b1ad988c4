using System.Globalization;
using System.Reflection;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Text;
using PfnBlock.Interop;

namespace PfnBlock.Tests.Interop;

/// <summary>
/// The hand-laid interop structs and constants against the system headers, as Tmds.LibC checks
/// its own: a generated C program prints <c>offsetof</c>/<c>sizeof</c> of every field of every
/// struct in <c>Interop/</c> and the value of every C constant we declare, gcc compiles it against
/// &lt;linux/io_uring.h&gt;, &lt;sys/stat.h&gt; and the rest, and the output is compared with
/// <see cref="Marshal.OffsetOf(Type, string)"/>, the managed sizes and our constants. gcc is
/// required (test.sh installs it): without it the test fails.
/// </summary>
public sealed class InteropLayoutTests
{
    /// <summary>A C# struct and the C struct it mirrors; <c>Renames</c> maps C# field names that differ from C's.</summary>
    private sealed record CStruct(Type Type, string CName, Dictionary<string, string>? Renames = null);

    private static readonly CStruct[] s_structs =
    [
        new(typeof(io_sqring_offsets), "struct io_sqring_offsets"),
        new(typeof(io_cqring_offsets), "struct io_cqring_offsets"),
        new(typeof(io_uring_params), "struct io_uring_params"),
        new(typeof(io_uring_sqe), "struct io_uring_sqe"),
        new(typeof(io_uring_cqe), "struct io_uring_cqe"),
        new(typeof(io_uring_probe_op), "struct io_uring_probe_op"),
        new(typeof(io_uring_probe), "struct io_uring_probe"),
        new(typeof(io_uring_rsrc_register), "struct io_uring_rsrc_register"),
        new(typeof(io_uring_rsrc_update2), "struct io_uring_rsrc_update2"),
        new(typeof(iovec), "struct iovec"),
        new(typeof(statx_t), "struct statx"),
        new(typeof(Libc.IoVec), "struct iovec", new() { ["Base"] = "iov_base", ["Length"] = "iov_len" }),
        new(typeof(Libc.MsgHdr), "struct msghdr", new()
        {
            ["Name"] = "msg_name", ["NameLen"] = "msg_namelen", ["Iov"] = "msg_iov", ["IovLen"] = "msg_iovlen",
            ["Control"] = "msg_control", ["ControlLen"] = "msg_controllen", ["Flags"] = "msg_flags",
        }),
        new(typeof(Libc.PollFd), "struct pollfd", new() { ["Fd"] = "fd", ["Events"] = "events", ["Revents"] = "revents" }),
        new(typeof(Libc.fiemap_hdr), "struct fiemap"),
        new(typeof(Libc.fiemap_extent), "struct fiemap_extent", new()
        {
            ["fe_reserved64_0"] = "fe_reserved64[0]", ["fe_reserved64_1"] = "fe_reserved64[1]",
            ["fe_reserved_0"] = "fe_reserved[0]", ["fe_reserved_1"] = "fe_reserved[1]", ["fe_reserved_2"] = "fe_reserved[2]",
        }),
    ];

    // The classes whose public integer constants carry C names and values.
    private static readonly Type[] s_constantHolders = [typeof(Libc), typeof(IoUring)];

    private const string Headers = """
        #define _GNU_SOURCE
        #include <errno.h>
        #include <fcntl.h>
        #include <limits.h>
        #include <poll.h>
        #include <stddef.h>
        #include <stdio.h>
        #include <sys/eventfd.h>
        #include <sys/file.h>
        #include <sys/mman.h>
        #include <sys/socket.h>
        #include <sys/stat.h>
        #include <sys/syscall.h>
        #include <sys/uio.h>
        #include <sys/vfs.h>
        #include <linux/falloc.h>
        #include <linux/fiemap.h>
        #include <linux/io_uring.h>
        #include <linux/magic.h>
        """;

    [Fact]
    public void EveryInteropStructIsChecked()
    {
        // A struct added to Interop/ without a row above would go unchecked.
        Type[] structs = [.. typeof(Libc).Assembly.GetTypes().Where(t =>
            t.Namespace == "PfnBlock.Interop" && t.IsValueType && !t.IsEnum && !t.Name.Contains('<'))];
        Assert.NotEmpty(structs);
        Assert.Empty(structs.Except(s_structs.Select(s => s.Type)));
    }

    [Fact]
    public void StructLayoutsAndConstantsMatchTheSystemHeaders()
    {
        var expected = new Dictionary<string, long>(StringComparer.Ordinal);
        var c = new StringBuilder(Headers).AppendLine().AppendLine("int main(void)\n{");
        foreach (CStruct s in s_structs)
        {
            string key = KeyOf(s.Type);
            expected[$"{key} sizeof"] = SizeOf(s.Type);
            c.AppendLine($"    printf(\"{key} sizeof %zu\\n\", sizeof({s.CName}));");
            foreach (FieldInfo f in s.Type.GetFields(BindingFlags.Instance | BindingFlags.Public | BindingFlags.NonPublic))
            {
                string cField = s.Renames?.GetValueOrDefault(f.Name) ?? f.Name;
                expected[$"{key}.{f.Name} offsetof"] = Marshal.OffsetOf(s.Type, f.Name).ToInt64();
                expected[$"{key}.{f.Name} sizeof"] = FieldSize(f);
                c.AppendLine($"    printf(\"{key}.{f.Name} offsetof %zu\\n\", offsetof({s.CName}, {cField}));");
                c.AppendLine($"    printf(\"{key}.{f.Name} sizeof %zu\\n\", sizeof((({s.CName} *)0)->{cField}));");
            }
        }
        foreach (Type holder in s_constantHolders)
        {
            foreach (FieldInfo f in holder.GetFields(BindingFlags.Public | BindingFlags.Static))
            {
                if (!f.IsLiteral || f.GetRawConstantValue() is not IConvertible value || value is string) continue;
                string key = $"{holder.Name}.{f.Name}";
                expected[key] = value.ToInt64(CultureInfo.InvariantCulture);
                c.AppendLine($"    printf(\"{key} %lld\\n\", (long long)({f.Name}));");
            }
        }
        // Libc.fstatfs takes a raw buffer of 32 longs and reads f_type from its first 8 bytes.
        c.AppendLine("    printf(\"statfs.f_type offsetof %zu\\n\", offsetof(struct statfs, f_type));");
        c.AppendLine("    printf(\"statfs.f_type sizeof %zu\\n\", sizeof(((struct statfs *)0)->f_type));");
        c.AppendLine("    printf(\"statfs fits %d\\n\", sizeof(struct statfs) <= 32 * sizeof(long));");
        expected["statfs.f_type offsetof"] = 0;
        expected["statfs.f_type sizeof"] = 8;
        expected["statfs fits"] = 1;
        c.AppendLine("    return 0;\n}");

        Dictionary<string, long> actual = CompileAndRun(c.ToString());
        string[] mismatches =
        [
            .. expected.Where(e => !actual.TryGetValue(e.Key, out long a) || a != e.Value)
                .Select(e => $"{e.Key}: C# {e.Value}, C {(actual.TryGetValue(e.Key, out long a) ? a : "missing")}"),
        ];
        Assert.True(mismatches.Length == 0, "interop declarations differ from the system headers:\n" + string.Join('\n', mismatches));
        Assert.Equal(expected.Count, actual.Count);
    }

    private static string KeyOf(Type t) => t.DeclaringType is { } outer ? $"{outer.Name}.{t.Name}" : t.Name;

    private static long SizeOf(Type t) =>
        t.IsPointer ? IntPtr.Size : (int)typeof(Unsafe).GetMethod(nameof(Unsafe.SizeOf))!.MakeGenericMethod(t).Invoke(null, null)!;

    private static long FieldSize(FieldInfo f) =>
        f.GetCustomAttribute<FixedBufferAttribute>() is { } fixedBuffer
            ? SizeOf(fixedBuffer.ElementType) * fixedBuffer.Length
            : SizeOf(f.FieldType);

    private static Dictionary<string, long> CompileAndRun(string program)
    {
        string dir = Directory.CreateTempSubdirectory("pfnblock-layout-").FullName;
        try
        {
            string src = Path.Combine(dir, "layout.c"), exe = Path.Combine(dir, "layout");
            File.WriteAllText(src, program);
            (int exit, string output, string err) = Run("gcc", "-std=gnu11", "-o", exe, src);
            Assert.True(exit == 0, $"gcc could not compile the layout check:\n{err}{output}\n--- program ---\n{program}");
            (exit, output, err) = Run(exe);
            Assert.True(exit == 0, $"the layout check failed to run: {err}");
            var values = new Dictionary<string, long>(StringComparer.Ordinal);
            foreach (string line in output.Split('\n', StringSplitOptions.RemoveEmptyEntries))
            {
                int space = line.LastIndexOf(' ');
                values[line[..space]] = long.Parse(line[(space + 1)..], CultureInfo.InvariantCulture);
            }
            return values;
        }
        finally { Directory.Delete(dir, recursive: true); }
    }

    private static (int Exit, string Out, string Err) Run(string file, params string[] args)
    {
        try { return PfnBlock.Tests.Btt.BttScratch.RunProcess(file, args); }
        catch (System.ComponentModel.Win32Exception e)
        {
            throw new Xunit.Sdk.XunitException($"cannot run {file} ({e.Message}); test.sh installs gcc");
        }
    }
}
