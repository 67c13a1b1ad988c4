using System.CommandLine;
using System.Globalization;
using System.Text.Json;
using PfnBlock.CrashTest;

namespace PfnBlock.Cli.Commands;

/// <summary>
/// <c>pfnblock crashtest --structure S [--ops N] [--states M] [--seed S] [--json] [--replay SPEC]</c>:
/// explore the power-failure crash states of a persistent structure's workload.
/// </summary>
internal static class CrashTestCommand
{
    /// <summary>The command's name; <see cref="Program"/> enables persistence tracing before start-up when it is run.</summary>
    public const string Name = "crashtest";

    public static Command Create()
    {
        var structure = new Option<string>("--structure") { Description = "The persistent structure to test.", Required = true };
        structure.AcceptOnlyFromAmong([.. CrashTargets.All]);
        var ops = new Option<int>("--ops") { Description = "Operations in the workload.", DefaultValueFactory = _ => 100 };
        var states = new Option<long>("--states") { Description = "Crash states to explore (all of them when the model allows fewer).", DefaultValueFactory = _ => 10_000 };
        var seed = new Option<int>("--seed") { Description = "Seeds the workload and the sampling of crash states.", DefaultValueFactory = _ => 1 };
        var json = new Option<bool>("--json") { Description = "Print one JSON document." };
        var replay = new Option<string?>("--replay") { Description = "Rebuild and check one reproducer's state: CRASHPOINT:EVENT@HEXOFFSET+LENGTH,... (with the same --ops and --seed)." };
        var dir = new Option<string?>("--dir") { Description = "Directory for file-backed images (namespace); default /dev/shm." };
        var reproducers = new Option<int>("--reproducers") { Description = "Inconsistent states to print a reproducer for (all are counted).", DefaultValueFactory = _ => 10 };
        var cmd = new Command(Name, "Explore the crash states x86 persistence allows for a structure's workload (power failure at any point, stores reordered "
            + "between fences, torn at 8-byte words), run the structure's recovery on each and check its invariants; exit 1 when any state is inconsistent.")
        {
            structure, ops, states, seed, json, replay, dir, reproducers,
        };
        cmd.SetAction(r => Cli.Run(() =>
        {
            if (r.GetValue(ops) < 1) throw new ArgumentException("--ops must be at least 1");
            if (r.GetValue(states) < 0) throw new ArgumentException("--states must not be negative");
            if (r.GetValue(reproducers) < 0) throw new ArgumentException("--reproducers must not be negative");
            var options = new CrashTestOptions { Ops = r.GetValue(ops), States = r.GetValue(states), Seed = r.GetValue(seed), MaxReproducers = r.GetValue(reproducers) };
            if (r.GetValue(dir) is string d) options = options with { Directory = d };
            using ICrashTarget target = CrashTargets.Create(r.GetValue(structure)!, options);
            if (r.GetValue(replay) is string spec) return Replay(target, spec);
            CrashTestResult result = CrashExplorer.Run(target, options);
            if (r.GetValue(json)) PrintJson(result);
            else PrintText(result);
            return result.InconsistentStates == 0 ? 0 : Cli.ExitFailure;
        }));
        return cmd;
    }

    private static int Replay(ICrashTarget target, string spec)
    {
        (int point, List<LandedStore> landed) = CrashExplorer.ParseReplay(spec);
        string? failure = CrashExplorer.Replay(target, point, landed);
        Console.WriteLine(failure is null ? $"crash point {point}: consistent" : $"crash point {point}: INCONSISTENT: {failure}");
        return failure is null ? 0 : Cli.ExitFailure;
    }

    private static void PrintText(CrashTestResult r)
    {
        Console.WriteLine($"crashtest {r.Structure}: seed {r.Seed}, {r.Ops} ops, {r.TraceEvents} trace events ({r.StoreWords} store words, {r.Fences} fences), {r.CrashPoints} crash points");
        Console.WriteLine($"states explored: {r.StatesExplored} of {Possible(r.StatesPossible)} allowed ({(r.Exhaustive ? "exhaustive" : $"exhaustive at {r.ExhaustiveCrashPoints} of {r.CrashPoints} crash points, sampled beyond")})");
        Console.WriteLine($"inconsistent states: {r.InconsistentStates}");
        Console.WriteLine($"time: {r.ExploreSeconds:F2} s exploring ({r.StatesPerSecond:F0} states/s); workload {r.RecordSeconds * 1e3:F1} ms recorded, {r.UntracedSeconds * 1e3:F1} ms untraced");
        foreach (CrashReproducer p in r.Reproducers)
        {
            Console.WriteLine($"  inconsistent at crash point {p.CrashPoint} (after \"{p.After}\"): {p.Failure}");
            Console.WriteLine($"    reproduce: pfnblock crashtest --structure {r.Structure} --ops {r.Ops} --seed {p.Seed} --replay {p.ReplaySpec}");
        }
        if (r.InconsistentStates > r.Reproducers.Count) Console.WriteLine($"  ({r.InconsistentStates - r.Reproducers.Count} more not listed; --reproducers raises the limit)");
    }

    private static string Possible(double n) => n < 1e15 ? n.ToString("F0", CultureInfo.InvariantCulture) : n.ToString("0.##e+0", CultureInfo.InvariantCulture);

    private static void PrintJson(CrashTestResult r)
    {
        var doc = new
        {
            structure = r.Structure,
            seed = r.Seed,
            ops = r.Ops,
            trace_events = r.TraceEvents,
            store_words = r.StoreWords,
            fences = r.Fences,
            crash_points = r.CrashPoints,
            exhaustive_crash_points = r.ExhaustiveCrashPoints,
            states_possible = double.IsFinite(r.StatesPossible) ? r.StatesPossible : (double?)null, // null: more than a double holds (JSON has no infinity)
            states_explored = r.StatesExplored,
            inconsistent_states = r.InconsistentStates,
            exhaustive = r.Exhaustive,
            explore_seconds = r.ExploreSeconds,
            states_per_second = r.StatesPerSecond,
            record_seconds = r.RecordSeconds,
            untraced_seconds = r.UntracedSeconds,
            reproducers = r.Reproducers.Select(p => new { seed = p.Seed, crash_point = p.CrashPoint, after = p.After, failure = p.Failure, landed = p.Landed.Select(s => s.ToString()), replay = p.ReplaySpec }),
        };
        Console.WriteLine(JsonSerializer.Serialize(doc, new JsonSerializerOptions { WriteIndented = true }));
    }
}
