using System.Runtime.InteropServices;
using CsCheck;
using PfnBlock.Memory;

namespace PfnBlock.Tests.Memory;

/// <summary>The persistence primitives copy and zero exactly the bytes asked, whatever the alignment (head, streamed body, tail).</summary>
public sealed unsafe class PersistentMemoryTests
{
    private const int Area = 3 * 4096;

    [Fact]
    public void NonTemporalCopyCopiesExactlyTheRange()
    {
        Gen.Select(Gen.Int[0, 200], Gen.Int[0, 200], Gen.Int[0, 2 * 4096]).Sample((dstOff, srcOff, length) =>
        {
            byte* src = (byte*)NativeMemory.AlignedAlloc(Area, 64);
            byte* dst = (byte*)NativeMemory.AlignedAlloc(Area, 64);
            try
            {
                var s = new Span<byte>(src, Area);
                var d = new Span<byte>(dst, Area);
                for (int i = 0; i < Area; i++) s[i] = (byte)(i * 31 + 7);
                d.Fill(0xEE);
                PersistentMemory.CopyNonTemporal(dst + dstOff, src + srcOff, (nuint)length);
                PersistentMemory.Drain();
                Assert.True(d[dstOff..(dstOff + length)].SequenceEqual(s[srcOff..(srcOff + length)]));
                Assert.True(d[..dstOff].IndexOfAnyExcept((byte)0xEE) < 0, "bytes before the range changed");
                Assert.True(d[(dstOff + length)..].IndexOfAnyExcept((byte)0xEE) < 0, "bytes after the range changed");
            }
            finally { NativeMemory.AlignedFree(src); NativeMemory.AlignedFree(dst); }
        });
    }

    [Fact]
    public void NonTemporalZeroClearsExactlyTheRange()
    {
        Gen.Select(Gen.Int[0, 200], Gen.Int[0, 2 * 4096]).Sample((off, length) =>
        {
            byte* p = (byte*)NativeMemory.AlignedAlloc(Area, 64);
            try
            {
                var span = new Span<byte>(p, Area);
                span.Fill(0xEE);
                PersistentMemory.ZeroNonTemporal(p + off, (nuint)length);
                PersistentMemory.Drain();
                Assert.True(span[off..(off + length)].IndexOfAnyExcept((byte)0) < 0, "range not zeroed");
                Assert.True(span[..off].IndexOfAnyExcept((byte)0xEE) < 0, "bytes before the range changed");
                Assert.True(span[(off + length)..].IndexOfAnyExcept((byte)0xEE) < 0, "bytes after the range changed");
            }
            finally { NativeMemory.AlignedFree(p); }
        });
    }

    [Fact]
    public void TheInstructionsInUseAreReported()
    {
        Assert.Contains(PersistentMemory.FlushInstruction, new[] { "clwb", "clflushopt", "clflush", "none" });
        Assert.Contains(PersistentMemory.CopyPath, new[] { "avx512", "avx2", "sse2", "scalar" });
        // Flushing and persisting a range leaves its data alone.
        byte* p = (byte*)NativeMemory.AlignedAlloc(256, 64);
        try
        {
            new Span<byte>(p, 256).Fill(0x42);
            PersistentMemory.Persist(p + 3, 200);
            PersistentMemory.Flush(p, 0);
            Assert.True(new Span<byte>(p, 256).IndexOfAnyExcept((byte)0x42) < 0);
        }
        finally { NativeMemory.AlignedFree(p); }
    }
}
