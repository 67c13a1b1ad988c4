using System.Runtime.InteropServices;
using PfnBlock.CrashTest;
using PfnBlock.Memory;

namespace PfnBlock.Tests.CrashTest;

/// <summary>
/// A crash target whose workload is a test's script over a small native image, and whose check
/// records every crash image it is shown (per crash point), so tests can compare the states the
/// explorer produces with the ones the persistence model allows.
/// </summary>
internal sealed unsafe class ScriptedTarget : ICrashTarget
{
    private readonly Action<ScriptedTarget> _script;
    private readonly Func<ScriptedTarget, string?>? _check;
    private byte* _image;

    public ScriptedTarget(int length, Action<ScriptedTarget> script, Func<ScriptedTarget, string?>? check = null)
    {
        ImageLength = length;
        _image = (byte*)NativeMemory.AlignedAlloc((nuint)length, 4096);
        NativeMemory.Clear(_image, (nuint)length);
        _script = script;
        _check = check;
    }

    public string Name => "scripted";
    public byte* Image => _image;
    public long ImageLength { get; }
    public CrashRecording? Recording { get; private set; }

    /// <summary>The images checked, by crash point, each as its first <see cref="Shown"/> 8-byte words ("1,0,2").</summary>
    public Dictionary<int, HashSet<string>> Seen { get; } = [];
    /// <summary>How many leading words of each image are recorded.</summary>
    public int Shown { get; init; } = 2;

    public void Run(CrashRecording recording)
    {
        Recording = recording;
        using PmemTraceScope scope = recording.Start();
        _script(this);
        recording.Mark("end");
    }

    public string? Verify(CrashRecoveryContext context)
    {
        if (!Seen.TryGetValue(context.CrashPoint, out HashSet<string>? set)) Seen[context.CrashPoint] = set = [];
        set.Add(string.Join(',', Enumerable.Range(0, Shown).Select(Word)));
        return _check?.Invoke(this);
    }

    /// <summary>The image's 8-byte word <paramref name="index"/>.</summary>
    public ulong Word(int index) => ((ulong*)_image)[index];

    public void Dispose()
    {
        if (_image != null) NativeMemory.AlignedFree(_image);
        _image = null;
    }
}
