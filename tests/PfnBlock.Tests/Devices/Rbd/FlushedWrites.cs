using System.Net;
using PfnBlock.Exports.Nbd;
using PfnBlock.Tests.Nbd;

namespace PfnBlock.Tests.Devices.Rbd;

/// <summary>
/// An NBD client for the SIGKILL tests: writes random distinct 4 KiB blocks (each at most once per
/// round, stamped with the round, so its expected contents are unambiguous), flushing every eight,
/// until the server dies; records what was sent and what a flush acknowledged.
/// </summary>
internal sealed class FlushedWriteWriter(int port, int round, int seed, int blocks)
{
    /// <summary>Bytes per block.</summary>
    public const int BlockSize = 4096;
    private readonly List<int> _written = [];
    private readonly List<int> _flushed = [];
    /// <summary>Flushes acknowledged so far.</summary>
    public int FlushedCount;
    /// <summary>Set when the writer failed before any flush was acknowledged (the server was not serving).</summary>
    public Exception? Failure;

    /// <summary>The round this writer stamps its blocks with.</summary>
    public int Round => round;

    /// <summary>What block <paramref name="block"/> holds once round <paramref name="round"/>'s write to it landed.</summary>
    public static byte[] Contents(int block, int round) => Stamp.Make((long)block * BlockSize, BlockSize, round);

    /// <summary>Blocks whose write and a later flush were acknowledged.</summary>
    public int[] Flushed() { lock (_flushed) return [.. _flushed]; }
    /// <summary>Blocks whose write was sent (it may have landed, acknowledged or not).</summary>
    public int[] Written() { lock (_written) return [.. _written]; }

    /// <summary>Runs on a dedicated thread until the connection fails.</summary>
    public void Run()
    {
        var rng = new Random(seed);
        var pending = new List<int>();
        NbdRawClient? c = null;
        try
        {
            c = NbdRawClient.ConnectTcp(new IPEndPoint(IPAddress.Loopback, port));
            c.Socket.NoDelay = true; // header and payload go in two sends: no Nagle wait between
            c.Negotiate("disk");
            byte[] reply = new byte[16];
            ulong cookie = 0;
            int[] order = [.. Enumerable.Range(0, blocks).OrderBy(_ => rng.Next())];
            foreach (int b in order)
            {
                lock (_written) _written.Add(b);
                c.Request(NbdCommand.Write, 0, ++cookie, (ulong)b * BlockSize, BlockSize, Contents(b, round));
                if (c.ReadReply(reply).Error != NbdError.None) return;
                pending.Add(b);
                if (pending.Count < 8) continue;
                c.Request(NbdCommand.Flush, 0, ++cookie, 0, 0);
                if (c.ReadReply(reply).Error != NbdError.None) return;
                lock (_flushed) _flushed.AddRange(pending);
                pending.Clear();
                Interlocked.Increment(ref FlushedCount);
            }
        }
        catch (Exception e)
        {
            // The server was killed mid-request: expected.
            if (Volatile.Read(ref FlushedCount) == 0) Failure = e;
        }
        finally { c?.Dispose(); }
    }

    /// <summary>
    /// Checks an image's bytes (read by <c>rbd export</c>) after this writer's server was killed and
    /// everything it acknowledged was made to reach the image: every block written in a flushed batch
    /// holds this round's data, every other block written holds this round's data or what
    /// <paramref name="durable"/> says it held before (the round of its last known write, 0 for
    /// zeros), and a sample of untouched blocks still holds theirs. Updates
    /// <paramref name="durable"/>; returns how many flushed writes were checked.
    /// </summary>
    public int Check(byte[] image, int[] durable, string context)
    {
        int[] flushed = Flushed();
        foreach (int b in flushed) durable[b] = round;
        foreach (int b in Written())
        {
            ReadOnlySpan<byte> got = image.AsSpan(b * BlockSize, BlockSize);
            bool isNew = got.SequenceEqual(Contents(b, round));
            bool isOld = durable[b] == 0 ? got.IndexOfAnyExcept((byte)0) < 0 : got.SequenceEqual(Contents(b, durable[b]));
            Assert.True(isNew || (isOld && durable[b] != round), $"{context}: block {b} holds neither the flushed write nor an older one");
            if (isNew) durable[b] = round;
        }
        for (int b = 0; b < durable.Length; b += 97)
            if (durable[b] != 0 && durable[b] != round)
                Assert.True(image.AsSpan(b * BlockSize, BlockSize).SequenceEqual(Contents(b, durable[b])), $"{context}: block {b} lost");
        return flushed.Length;
    }
}
