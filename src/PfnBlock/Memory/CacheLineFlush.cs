using System.Runtime.Intrinsics.X86;
using PfnBlock.Interop;

namespace PfnBlock.Memory;

/// <summary>
/// Cache-line write-back for persistence. .NET exposes no CLWB, CLFLUSHOPT or CLFLUSH intrinsic,
/// so this builds a ten-instruction loop in an executable page at startup, using the best
/// instruction the CPU reports (CPUID leaf 7: CLWB, then CLFLUSHOPT; leaf 1: CLFLUSH), and calls
/// it through an unmanaged function pointer.
/// </summary>
internal static unsafe class CacheLineFlush
{
    private static readonly delegate* unmanaged[SuppressGCTransition]<byte*, byte*, void> s_flush;

    /// <summary>The instruction in use: "clwb", "clflushopt", "clflush" or "none".</summary>
    public static string Instruction { get; }

    static CacheLineFlush()
    {
        (byte[]? op, string name) = Pick();
        Instruction = name;
        if (op is null) return;
        // loop: cmp rdi,rsi; jae done; <flush [rdi]>; add rdi,64; jmp loop; done: ret
        byte[] code =
        [
            0x48, 0x39, 0xF7,               // cmp rdi, rsi
            0x73, 0x00,                     // jae done (patched below)
            .. op,                          // clwb/clflushopt/clflush [rdi]
            0x48, 0x83, 0xC7, 0x40,         // add rdi, 64
            0xEB, 0x00,                     // jmp loop (patched below)
            0xC3,                           // ret
        ];
        code[4] = (byte)(op.Length + 4 + 2);
        int jmpAt = 5 + op.Length + 4;
        code[jmpAt + 1] = unchecked((byte)(-(jmpAt + 2)));
        nint page = Libc.mmap(0, 4096, Libc.PROT_READ | Libc.PROT_WRITE, Libc.MAP_PRIVATE | Libc.MAP_ANONYMOUS, -1, 0);
        if (page == Libc.MAP_FAILED) { Instruction = "none"; return; }
        code.CopyTo(new Span<byte>((void*)page, code.Length));
        if (Libc.mprotect(page, 4096, Libc.PROT_READ | Libc.PROT_EXEC) != 0) { Instruction = "none"; return; }
        s_flush = (delegate* unmanaged[SuppressGCTransition]<byte*, byte*, void>)page;
    }

    private static (byte[]? Op, string Name) Pick()
    {
        if (!X86Base.IsSupported) return (null, "none");
        (_, int ebx7, _, _) = X86Base.CpuId(7, 0);
        if ((ebx7 & (1 << 24)) != 0) return ([0x66, 0x0F, 0xAE, 0x37], "clwb");       // clwb [rdi]: 66 0F AE /6
        if ((ebx7 & (1 << 23)) != 0) return ([0x66, 0x0F, 0xAE, 0x3F], "clflushopt"); // clflushopt [rdi]: 66 0F AE /7
        (_, _, _, int edx1) = X86Base.CpuId(1, 0);
        if ((edx1 & (1 << 19)) != 0) return ([0x0F, 0xAE, 0x3F], "clflush");            // clflush [rdi]: 0F AE /7
        return (null, "none");
    }

    /// <summary>Writes back every cache line overlapping [start, start+length).</summary>
    public static void Flush(byte* start, nuint length)
    {
        if (PmemTrace.Enabled) PmemTrace.Flushed(start, length);
        if (s_flush == null || length == 0) return;
        byte* first = (byte*)((nint)start & ~(nint)63);
        s_flush(first, start + length);
    }
}
