using System.Runtime.InteropServices;
using PfnBlock.CrashTest;
using PfnBlock.Memory;
using PfnBlock.Namespaces;
using PfnBlock.Namespaces.Btt;
using BlockTranslationTable = PfnBlock.Namespaces.Btt.Btt;

namespace PfnBlock.Tests.CrashTest;

/// <summary>
/// The trace of small known workloads is exactly the expected sequence of stores, flushes and
/// fences: the persistence primitives, a BTT sector write, a namespace create (msync path).
/// </summary>
public sealed unsafe class PersistenceTraceTests : IDisposable
{
    private readonly Scratch _scratch = new();
    public void Dispose() => _scratch.Dispose();

    private static (PmemTraceKind, long, int) E(PmemTraceKind kind, long offset, int length) => (kind, offset, length);
    private static readonly (PmemTraceKind, long, int) Fence = (PmemTraceKind.Fence, 0, 0);

    /// <summary>The recorder's events with addresses relative to <paramref name="origin"/>.</summary>
    private static List<(PmemTraceKind, long, int)> Relative(PmemTraceRecorder r, byte* origin) =>
        [.. r.Events.Select(e => e.Kind == PmemTraceKind.Fence ? Fence : (e.Kind, (long)(e.Address - (nint)origin), e.Length))];

    [Fact]
    public void ANonTemporalCopyIsStoresAndFlushesAtTheEdgesAndStreamingInTheMiddle()
    {
        byte* area = (byte*)NativeMemory.AlignedAlloc(4096, 64);
        byte* source = (byte*)NativeMemory.AlignedAlloc(4096, 64);
        try
        {
            for (int i = 0; i < 4096; i++) source[i] = (byte)i;
            var recorder = new PmemTraceRecorder(area, 4096);
            using (PmemTrace.Record(recorder))
            {
                PersistentMemory.CopyNonTemporal(area + 60, source, 100);
                PersistentMemory.Drain();
                PersistentMemory.ZeroNonTemporal(area + 1000, 200);
                PersistentMemory.CopyNonTemporal(source + 2048, area, 64); // outside the recorded region: ignored
            }
            Assert.Equal(
            [
                E(PmemTraceKind.Store, 60, 4), E(PmemTraceKind.Flush, 60, 4),
                E(PmemTraceKind.NonTemporalStore, 64, 64),
                E(PmemTraceKind.Store, 128, 32), E(PmemTraceKind.Flush, 128, 32),
                Fence,
                E(PmemTraceKind.Store, 1000, 24), E(PmemTraceKind.Flush, 1000, 24),
                E(PmemTraceKind.NonTemporalStore, 1024, 128),
                E(PmemTraceKind.Store, 1152, 48), E(PmemTraceKind.Flush, 1152, 48),
            ], Relative(recorder, area));
            Assert.True(recorder.Data(recorder.Events[0]).SequenceEqual(new ReadOnlySpan<byte>(source, 4)));
            Assert.True(recorder.Data(recorder.Events[2]).SequenceEqual(new ReadOnlySpan<byte>(source + 4, 64)));
            Assert.Null(PmemTrace.Current);
        }
        finally { NativeMemory.AlignedFree(area); NativeMemory.AlignedFree(source); }
    }

    [Fact]
    public void ABttSectorWriteIsDataFenceFlogHalvesThenMapEachPersisted()
    {
        const int size = 16 << 20;
        byte* p = (byte*)NativeMemory.AlignedAlloc(size, 4096);
        try
        {
            NativeMemory.Clear(p, size);
            var media = new BttMedia(p, size, PersistenceMode.CpuCache, (o, l) => PersistentMemory.Persist(p + o, (nuint)l), PersistentMemory.Drain);
            var options = new BttOptions { LbaSize = 4096, Lanes = 1 };
            BlockTranslationTable.Format(media, options);
            BlockTranslationTable btt = BlockTranslationTable.Open(media, options);
            BttInfoBlock info = btt.ArenaInfos[0];
            byte[] sector = new byte[4096];
            SectorPattern.Fill(sector, 3, 1);
            var recorder = new PmemTraceRecorder(p, size);
            using (PmemTrace.Record(recorder))
            fixed (byte* s = sector) Assert.Equal(BttStatus.Ok, btt.Write(3, s));

            long data = info.DataOff + (long)info.ExternalNlba * info.InternalLbaSize; // lane 0's first free block
            long flog = info.FlogOff + FlogEntry.Size;                                // its older slot
            long map = info.MapOff + 3 * MapEntry.Size;
            Assert.Equal(
            [
                E(PmemTraceKind.NonTemporalStore, data, 4096), Fence,
                E(PmemTraceKind.Store, flog, 8), E(PmemTraceKind.Flush, flog, 8), Fence,
                E(PmemTraceKind.Store, flog + 8, 8), E(PmemTraceKind.Flush, flog, 16), Fence,
                E(PmemTraceKind.Store, map, 4), E(PmemTraceKind.Flush, map, 4), Fence,
            ], Relative(recorder, p));
            Assert.Equal(MapEntry.Normal(info.ExternalNlba).Raw, BitConverter.ToUInt32(recorder.Data(recorder.Events[8])));
            Assert.True(recorder.Data(recorder.Events[0]).SequenceEqual(sector));
        }
        finally { NativeMemory.AlignedFree(p); }
    }

    [Fact]
    public void ANamespaceCreateIsBackupThenPrimaryEachMsynced_AndAnOverwriteErasesTheOldBlocksFirst()
    {
        string path = _scratch.NewPath("trace");
        const long size = 1 << 20;
        const long backup = size - 4096;
        var recorder = new PmemTraceRecorder();
        byte* mapping;
        using (PmemTrace.Record(recorder))
        using (PmemNamespace ns = PmemNamespace.Create(path, new NamespaceCreateOptions { Size = size }))
            mapping = ns.BaseAddress;
        (PmemTraceKind, long, int)[] writeInfo =
        [
            E(PmemTraceKind.Store, backup, 4096), E(PmemTraceKind.Flush, backup, 4096), Fence,
            E(PmemTraceKind.Store, 0, 4096), E(PmemTraceKind.Flush, 0, 4096), Fence,
        ];
        Assert.Equal(writeInfo, Relative(recorder, mapping));

        recorder.Clear();
        using (PmemTrace.Record(recorder))
        using (PmemNamespace ns = PmemNamespace.Create(path, new NamespaceCreateOptions { Size = size, Force = true }))
            mapping = ns.BaseAddress;
        Assert.Equal(
        [
            E(PmemTraceKind.Store, 0, 4096), E(PmemTraceKind.Flush, 0, 4096), Fence,
            E(PmemTraceKind.Store, backup, 4096), E(PmemTraceKind.Flush, backup, 4096), Fence,
            .. writeInfo,
        ], Relative(recorder, mapping));
        Assert.True(recorder.Data(recorder.Events[0]).IndexOfAnyExcept((byte)0) < 0, "the old primary is erased with zeros");
    }
}
