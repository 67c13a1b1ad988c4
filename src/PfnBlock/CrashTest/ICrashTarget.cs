namespace PfnBlock.CrashTest;

/// <summary>
/// A persistent structure the crash-state explorer can test: the seam a new structure plugs into
/// (one file implementing this, one line in <see cref="CrashTargets"/>).
/// </summary>
/// <remarks>
/// <para>The explorer snapshots <see cref="Image"/> as the base, calls <see cref="Run"/> (the
/// workload, deterministic for a seed) with tracing on, and checks that replaying the trace onto
/// the base gives the final image (so no store escaped the traced primitives). Then, for each crash
/// state the persistence model allows, it writes that state into <see cref="Image"/> and calls
/// <see cref="Verify"/>, which runs the structure's own recovery and its invariants.</para>
/// <para>Verify may store to the image (recovery repairs); the explorer undoes those stores, which
/// it sees because they go through the traced primitives.</para>
/// </remarks>
public unsafe interface ICrashTarget : IDisposable
{
    /// <summary>The structure's name (<c>pfnblock crashtest --structure</c>).</summary>
    string Name { get; }
    /// <summary>The structure's persistent bytes, where the workload and recovery find them.</summary>
    byte* Image { get; }
    /// <summary>Bytes in <see cref="Image"/>.</summary>
    long ImageLength { get; }

    /// <summary>
    /// Runs the workload from the image's current (base) content: starts recording on this thread
    /// (<see cref="CrashRecording.Start"/>), marks each operation's start and acknowledgement, and
    /// captures stores made through other mappings of the image.
    /// </summary>
    void Run(CrashRecording recording);

    /// <summary>Runs recovery on the image as it is and checks the invariants for a crash at <see cref="CrashRecoveryContext.CrashPoint"/>.</summary>
    /// <returns>Null when the state is consistent, else what is wrong, in one line.</returns>
    string? Verify(CrashRecoveryContext context);
}
