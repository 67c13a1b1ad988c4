using System.Buffers.Binary;
using System.Diagnostics;
using PfnBlock.Block;
using PfnBlock.CrashChild;
using PfnBlock.Devices.Pmem;
using Xunit.Abstractions;

namespace PfnBlock.Tests.Persistence;

/// <summary>
/// Persistence across processes: a child writes versioned blocks to a pmem namespace with FUA or
/// write+FLUSH and prints each version once it is acknowledged; the test SIGKILLs it at a random
/// moment, reopens the namespace (the claim must have died with the child) and checks that every
/// acknowledged write is there, whole.
/// </summary>
public sealed class CrashTests(ITestOutputHelper output) : IDisposable
{
    private const int Blocks = 256; // 1 MiB of 4 KiB blocks at the start of the data area
    private const int Rounds = 6;
    private static readonly TimeSpan Budget = TimeSpan.FromSeconds(45);

    private readonly Scratch _scratch = new();
    public void Dispose() => _scratch.Dispose();

    [Fact]
    public void AcknowledgedWritesSurviveSigkillAndTheClaimIsReleased()
    {
        string path = _scratch.NewNamespace(4 << 20);
        int seed = Random.Shared.Next();
        var rng = new Random(seed);
        // The versions each block may hold: exactly one once a write to it was acknowledged; the
        // write in flight at the kill may have landed in part, so its block may mix the two.
        var allowed = new HashSet<long>[Blocks];
        for (int b = 0; b < Blocks; b++) allowed[b] = [0];
        long next = 1;
        var clock = Stopwatch.StartNew();
        int rounds = 0;
        long totalAcks = 0;
        while (rounds < Rounds && clock.Elapsed < Budget)
        {
            List<(long Version, int Block)> acks = CrashWriter.RunAndKill(["write", path, seed.ToString(), next.ToString(), Blocks.ToString()], rng.Next(0, 250), $"seed {seed}, round {rounds}");
            Assert.True(acks.Count > 0, $"round {rounds}: the child acknowledged nothing (seed {seed})");
            for (int i = 0; i < acks.Count; i++)
            {
                (long v, int b) = acks[i];
                Assert.Equal(next + i, v); // acknowledged in order, none skipped
                Assert.Equal(CrashProtocol.BlockFor(seed, v, Blocks), b);
                allowed[b] = [v];
            }
            long inFlight = acks[^1].Version + 1;
            allowed[CrashProtocol.BlockFor(seed, inFlight, Blocks)].Add(inFlight);
            next = inFlight + 1;
            totalAcks += acks.Count;

            Verify(path, allowed, $"seed {seed}, round {rounds}, {acks.Count} acks");
            output.WriteLine($"round {rounds}: versions {acks[0].Version}..{acks[^1].Version} acknowledged, killed with {inFlight} in flight");
            rounds++;
        }
        Assert.True(rounds >= 3, $"only {rounds} rounds ran in {Budget.TotalSeconds} s");
        Assert.True(totalAcks > rounds, $"too few acknowledged writes ({totalAcks}) to mean anything");
    }

    /// <summary>Reopens the namespace (which needs the dead child's claim gone) and checks every block word by word.</summary>
    private static void Verify(string path, HashSet<long>[] allowed, string ctx)
    {
        using var device = PmemDevice.Open(path);
        using var buffers = new IoBuffers(device.AddressSpace, 2 << 20);
        using IoBuffers.Layout layout = buffers.Single(Blocks * CrashProtocol.BlockSize);
        Assert.Equal(BlockStatus.Ok, device.SubmitAndWait(layout.AddTo(new Bio().Init(BioOp.Read, 0))));
        byte[] data = layout.Read();
        for (int b = 0; b < Blocks; b++)
        {
            var seen = new HashSet<long>();
            for (int i = 0; i < CrashProtocol.WordsPerBlock; i++)
            {
                ulong word = BinaryPrimitives.ReadUInt64LittleEndian(data.AsSpan(b * CrashProtocol.BlockSize + i * 8));
                long version = 0;
                if (word != 0)
                {
                    (version, int block, int index) = CrashProtocol.Decode(word);
                    Assert.True(block == b && index == i, $"block {b} word {i} holds data of block {block} word {index} ({ctx})");
                }
                Assert.True(allowed[b].Contains(version),
                    $"block {b} word {i} holds version {version}; allowed {string.Join(",", allowed[b])} ({ctx})");
                seen.Add(version);
            }
            // A block whose last write was acknowledged is exactly that version: no sector of it mixes versions.
            if (allowed[b].Count == 1) Assert.Single(seen);
            // What is on the media now is what a later round must find (or overwrite).
            if (seen.Count == 1) allowed[b] = [seen.Single()];
        }
    }
}
