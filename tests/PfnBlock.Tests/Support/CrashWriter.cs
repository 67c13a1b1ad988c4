using System.Collections.Concurrent;
using System.Diagnostics;

namespace PfnBlock.Tests.Support;

/// <summary>Runs the crash child's writer and SIGKILLs it: the acknowledgements it printed before it died.</summary>
public static class CrashWriter
{
    /// <summary>Starts the crash child's writer with <paramref name="args"/> (write PATH … or write-spec SPEC …), waits for its first acknowledgement, lets it run <paramref name="runMs"/> more and at least until <paramref name="minAcks"/> acknowledgements, kills it and returns every acknowledgement it printed.</summary>
    public static List<(long Version, int Block)> RunAndKill(string[] args, int runMs, string ctx, int minAcks = 1)
    {
        using Process child = ChildProcess.Start(ChildProcess.CrashChildDll, args);
        Task<string> stderr = child.StandardError.ReadToEndAsync();
        var lines = new BlockingCollection<string>();
        // A thread of its own, not the thread pool: other tests may keep every pool thread blocked
        // for seconds, and the child's first line must be read while it is fresh.
        var reader = new Thread(() =>
        {
            while (child.StandardOutput.ReadLine() is string line) lines.Add(line);
            lines.CompleteAdding();
        }) { IsBackground = true };
        reader.Start();
        try
        {
            // The first acknowledgement proves the child is writing; then kill at a random moment.
            if (!lines.TryTake(out string? firstLine, TimeSpan.FromSeconds(30)))
                Assert.Fail($"the child printed nothing ({ctx}); exited: {child.HasExited}");
            var acks = new List<string> { firstLine! };
            Thread.Sleep(runMs);
            // On a loaded machine the child may not have got as far as the caller needs: wait for that many acks.
            while (acks.Count < minAcks && lines.TryTake(out string? more, TimeSpan.FromSeconds(30))) acks.Add(more);
            Assert.True(acks.Count >= minAcks, $"the child acknowledged {acks.Count} writes, fewer than {minAcks} ({ctx})");
            Assert.False(child.HasExited, $"the child stopped by itself ({ctx})");
            child.Kill(); // SIGKILL
            child.WaitForExit();
            reader.Join();
            acks.AddRange(lines);
            Assert.Equal(137, child.ExitCode); // 128 + SIGKILL: it did not exit on its own
            // Lines are written with one write(2) each; a line without its final '.' would mean a torn ack.
            return [.. acks.Select(l =>
            {
                Assert.True(l.StartsWith("ack ", StringComparison.Ordinal) && l.EndsWith('.'), $"bad ack line '{l}' ({ctx}): {stderr.Result}");
                string[] f = l[4..^1].Split(' ');
                return (long.Parse(f[0]), int.Parse(f[1]));
            })];
        }
        finally
        {
            if (!child.HasExited) { child.Kill(); child.WaitForExit(); }
        }
    }

}
