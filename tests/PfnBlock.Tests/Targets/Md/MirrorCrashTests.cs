using System.Buffers.Binary;
using PfnBlock.Block;
using PfnBlock.CrashChild;
using PfnBlock.Targets.Md;

namespace PfnBlock.Tests.Targets.Md;

/// <summary>
/// A mirror SIGKILLed while it writes: a child process writes versioned blocks through an
/// <c>md:</c> array of two pmem namespaces and is killed; then the legs are inspected raw (every
/// region the child wrote has its bit set in the write-intent bitmap on both legs; regions with
/// the bit clear are identical on both legs and untouched), and the array is assembled: it
/// resyncs exactly the dirty regions, every acknowledged write reads back, and afterwards the
/// legs are identical.
/// </summary>
public sealed class MirrorCrashTests : IDisposable
{
    private const int Blocks = 256;              // the child writes the first 1 MiB of the array
    private const long BitmapChunk = 64 << 10;   // 16 regions hold what the child writes
    private readonly MdHarness _h = new();

    public void Dispose() => _h.Dispose();

    [Fact]
    public void AfterAKillOnlyTheBitmapsDirtyRegionsAreResyncedAndTheLegsAgree()
    {
        string[] m = _h.Members(2);
        MdSuperblock sb = _h.Create(1, m, bitmapChunk: BitmapChunk);
        string spec = MdHarness.Spec(m);
        List<(long Version, int Block)> acks = RunAndKill(spec, seed: 7, runMs: 150);
        Assert.NotEmpty(acks);

        // Raw legs, before anything assembles them.
        long dataBytes = (long)sb.Size << Bio.SectorShift;
        byte[][] legs = [.. m.Select(leg => _h.MemberData(leg, (long)sb.DataOffset, (long)sb.Size))];
        int regions = (int)((dataBytes + BitmapChunk - 1) / BitmapChunk);
        bool[][] bits = [.. m.Select(leg => BitmapBits(leg, sb, regions))];
        Assert.False(MdExamine.Examine(_h.Open(m[0])).Superblock.IsClean); // it was killed, not stopped
        int dirty = bits[0].Count(b => b);
        for (int r = 0; r < regions; r++)
        {
            Assert.True(bits[0][r] == bits[1][r], $"the legs' bitmaps differ at region {r}");
            var span = new Range((int)(r * BitmapChunk), (int)Math.Min((r + 1) * BitmapChunk, dataBytes));
            bool written = legs.Any(l => l.AsSpan(span).ContainsAnyExcept((byte)0));
            if (written) Assert.True(bits[0][r], $"region {r} was written but its bit is clear");
            if (!bits[0][r]) Assert.True(legs[0].AsSpan(span).SequenceEqual(legs[1].AsSpan(span)), $"clean region {r} differs between the legs");
            if (r * BitmapChunk >= Blocks * CrashProtocol.BlockSize) Assert.False(written, $"region {r}, beyond what the child wrote, was touched");
        }
        Assert.InRange(dirty, 1, Blocks * CrashProtocol.BlockSize / BitmapChunk);

        // Assembly resyncs the dirty regions only.
        _h.Reopen();
        MdArray array = MdArray.Of(_h.Open(spec))!;
        Assert.Contains(array.Log, l => l.Contains($"unclean stop: {dirty} of {regions} region(s) will be resynced (from the write-intent bitmap)", StringComparison.Ordinal));
        Assert.True(array.WaitForSync(TimeSpan.FromSeconds(60)), "the resync did not finish");
        Assert.Equal(dirty * (BitmapChunk >> Bio.SectorShift), array.ResyncedSectors);

        // Every acknowledged write is there: a block holds its last acknowledged version, or the one in flight at the kill.
        var last = new Dictionary<int, long>();
        foreach ((long v, int b) in acks) last[b] = v;
        long inFlight = acks[^1].Version + 1;
        int inFlightBlock = CrashProtocol.BlockFor(7, inFlight, Blocks);
        byte[] data = _h.Read(_h.Open(spec), 0, Blocks * CrashProtocol.BlockSize);
        foreach ((int b, long v) in last)
        {
            long found = (long)(BinaryPrimitives.ReadUInt64LittleEndian(data.AsSpan(b * CrashProtocol.BlockSize)) >> 32);
            Assert.True(found == v || (b == inFlightBlock && found == inFlight), $"block {b} holds version {found}, acknowledged {v}");
        }
        _h.Reopen();
        byte[] leg0 = _h.MemberData(m[0], (long)sb.DataOffset, (long)sb.Size), leg1 = _h.MemberData(m[1], (long)sb.DataOffset, (long)sb.Size);
        Assert.True(leg0.AsSpan().SequenceEqual(leg1), "the legs differ after the resync");
        Assert.True(MdExamine.Examine(_h.Open(m[1])).Superblock.IsClean);
    }

    /// <summary>The bitmap bits of member <paramref name="leg"/> as stored on it.</summary>
    private bool[] BitmapBits(string leg, MdSuperblock sb, int regions)
    {
        long at = ((long)sb.SuperOffset + sb.BitmapOffset) << Bio.SectorShift;
        byte[] area = _h.Read(_h.Open(leg), at, 4096);
        return [.. Enumerable.Range(0, regions).Select(r => (area[MdBitmapSuperblock.Bytes + r / 8] & (1 << (r % 8))) != 0)];
    }

    /// <summary>Runs the child writer on <paramref name="spec"/>, kills it <paramref name="runMs"/> after its first acknowledgement (and not before <paramref name="minAcks"/> of them) and returns its acknowledgements.</summary>
    internal static List<(long Version, int Block)> RunAndKill(string spec, int seed, int runMs, int blocks = Blocks, int minAcks = 1) =>
        CrashWriter.RunAndKill(["write-spec", spec, seed.ToString(), "1", blocks.ToString()], runMs, $"md writer, seed {seed}", minAcks);
}
