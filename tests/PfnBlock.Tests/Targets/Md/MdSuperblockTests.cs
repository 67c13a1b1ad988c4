using System.Buffers.Binary;
using System.Diagnostics;
using PfnBlock.Block;
using PfnBlock.Devices;
using PfnBlock.Targets.Md;

namespace PfnBlock.Tests.Targets.Md;

/// <summary>
/// The md v1.2 superblock and bitmap on media: encoding, md's checksum, validation on open, what
/// <c>pfnblock raid create</c> refuses, and <c>mdadm --examine</c>/<c>--examine-bitmap</c> reading
/// members PfnBlock wrote (plain files, which mdadm reads without the md driver).
/// </summary>
public sealed class MdSuperblockTests : IDisposable
{
    private readonly Scratch _scratch = new();
    private readonly DeviceSet _set = new();

    public void Dispose()
    {
        _set.Dispose();
        _scratch.Dispose();
    }

    private string FileMember(long size = 16 << 20) => _scratch.NewSizedFile(Scratch.Directory, size, "md-member");

    private static MdSuperblock Sample() => new()
    {
        FeatureMap = MdSuperblock.FeatureBitmap,
        SetUuid = Enumerable.Range(1, 16).Select(i => (byte)i).ToArray(),
        SetName = "host:test",
        Level = 5,
        Layout = MdSuperblock.LayoutLeftSymmetric,
        Size = 28672,
        ChunkSectors = 128,
        RaidDisks = 4,
        BitmapOffset = 8,
        DataOffset = 2048,
        DataSize = 30720,
        DevNumber = 2,
        Events = 7,
        DevRoles = [0, 1, 2, 3],
    };

    [Fact]
    public void EncodeDecodeRoundTripsAndTheChecksumIsMdsSum()
    {
        var block = new byte[4096];
        MdSuperblock sb = Sample();
        sb.Encode(block);
        // md's rule, written out independently: u32 words of the 256 + 2 * max_dev bytes with sb_csum as 0, folded once.
        ulong sum = 0;
        for (int i = 0; i < 256 + 2 * 4; i += 4) sum += i == 216 ? 0 : BinaryPrimitives.ReadUInt32LittleEndian(block.AsSpan(i));
        uint expected = (uint)((sum & 0xffffffff) + (sum >> 32));
        Assert.Equal(expected, BinaryPrimitives.ReadUInt32LittleEndian(block.AsSpan(216)));
        Assert.Equal(0xa92b4efcu, BinaryPrimitives.ReadUInt32LittleEndian(block));
        Assert.Equal(2048ul, BinaryPrimitives.ReadUInt64LittleEndian(block.AsSpan(128)));
        Assert.Equal(8ul, BinaryPrimitives.ReadUInt64LittleEndian(block.AsSpan(144)));
        Assert.Equal((ushort)2, BinaryPrimitives.ReadUInt16LittleEndian(block.AsSpan(256 + 4)));

        MdSuperblock back = MdSuperblock.Decode(block, 32768, out string? error) ?? throw new Xunit.Sdk.XunitException(error);
        Assert.Equal(sb.SetUuid, back.SetUuid);
        Assert.Equal("host:test", back.SetName);
        Assert.Equal(5u, back.Level);
        Assert.Equal(128u, back.ChunkSectors);
        Assert.Equal(7ul, back.Events);
        Assert.Equal((ushort)2, back.Role);
        Assert.True(back.IsClean);
    }

    [Fact]
    public void AnOddNumberOfRolesIsSummedWithATrailingHalfWord()
    {
        var block = new byte[4096];
        MdSuperblock sb = Sample();
        sb.RaidDisks = 3;
        sb.DevRoles = [0, 1, 2];
        sb.Encode(block);
        Assert.NotNull(MdSuperblock.Decode(block, 32768, out _));
        block[256 + 4] ^= 1; // the last role's low byte: only the trailing u16 covers it
        Assert.Null(MdSuperblock.Decode(block, 32768, out string? error));
        Assert.Contains("checksum", error);
    }

    public static TheoryData<string, Action<byte[]>, string> Corruptions => new()
    {
        { "magic", b => b[0] ^= 1, "no md superblock" },
        { "version", b => { b[4] = 2; Fix(b); }, "major version 2" },
        { "any byte", b => b[100] ^= 0x40, "checksum" },
        { "super offset", b => { b[144] = 0; Fix(b); }, "super_offset" },
        { "level", b => { b[72] = 6; Fix(b); }, "RAID level 6" },
        { "layout", b => { b[76] = 0; Fix(b); }, "layout 0" },
        { "chunk", b => { b[88] = 100; Fix(b); }, "not a power of two" },
        { "data past the end", b => { BinaryPrimitives.WriteUInt64LittleEndian(b.AsSpan(136), 1 << 20); Fix(b); }, "run past" },
        { "reshape feature", b => { b[8] |= 4; Fix(b); }, "reshape" },
    };

    private static void Fix(byte[] b) => BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(216), MdSuperblock.Checksum(b, BinaryPrimitives.ReadUInt32LittleEndian(b.AsSpan(220))));

    [Theory, MemberData(nameof(Corruptions))]
    public void ValidationRefusesWithAReason(string what, Action<byte[]> corrupt, string reason)
    {
        var block = new byte[4096];
        Sample().Encode(block);
        corrupt(block);
        Assert.Null(MdSuperblock.Decode(block, 32768, out string? error));
        Assert.True(error!.Contains(reason, StringComparison.Ordinal), $"{what}: '{error}' does not say '{reason}'");
    }

    [Fact]
    public void BitmapSuperblockIsChecksummedAndTiedToItsArray()
    {
        MdSuperblock sb = Sample();
        var bm = new MdBitmapSuperblock { Uuid = sb.SetUuid, Events = 7, SyncSize = sb.Size, ChunkBytes = 64 << 10 };
        var block = new byte[512];
        bm.Encode(block);
        Assert.Equal("bitm", System.Text.Encoding.ASCII.GetString(block, 0, 4));
        Assert.NotNull(MdBitmapSuperblock.Decode(block, sb, out _));
        block[52] ^= 1;
        Assert.Contains("checksum", Decode(block, sb));
        bm.Encode(block);
        sb.SetUuid = new byte[16];
        Assert.Contains("belongs to array", Decode(block, sb));
        // Without PfnBlock's tag (a bitmap Linux md wrote: the pad is zero) there is no checksum to check.
        sb = Sample();
        block.AsSpan(236, 8).Clear();
        Assert.NotNull(MdBitmapSuperblock.Decode(block, sb, out _));
    }

    private static string Decode(byte[] block, MdSuperblock sb)
    {
        Assert.Null(MdBitmapSuperblock.Decode(block, sb, out string? error));
        return error!;
    }

    [Fact]
    public void DataOffsetFollowsMdadm()
    {
        // 16 MiB members with 64 KiB chunks: headroom halves down to 4 chunks, rounded up to 1 MiB.
        Assert.Equal(2048, MdCreate.DataOffset(32768, 128));
        // 1 GiB of pmem data (a 1 GiB namespace), 512 KiB chunks: headroom 2048 sectors (about 0.1 %), + 32 → 2 MiB.
        Assert.Equal(4096, MdCreate.DataOffset(2093048, 1024));
        // A mirror (no chunk) of 100 GiB: headroom 128 MiB halved once (to about 0.1 %), 64 KiB of bitmap space.
        Assert.Equal(133120, MdCreate.DataOffset(100L << 21, 0));
    }

    [Theory]
    [InlineData(1)]
    [InlineData(5)]
    public void CreateWritesSuperblocksEveryMemberAgreesOn(int level)
    {
        string[] members = [.. Enumerable.Range(0, level == 5 ? 4 : 2).Select(_ => "file:" + FileMember())];
        IReadOnlyList<MdCreatedMember> created = MdCreate.Create(members, new MdCreateOptions { Level = level, ChunkBytes = 64 << 10, BitmapChunkBytes = 256 << 10 }, _set);
        Assert.Equal(members.Length, created.Count);
        for (int i = 0; i < members.Length; i++)
        {
            MdMemberInfo info = MdExamine.Examine(_set.Open(members[i]));
            Assert.Equal(created[0].Superblock.SetUuid, info.Superblock.SetUuid);
            Assert.Equal((uint)level, info.Superblock.Level);
            Assert.Equal((ushort)i, info.Superblock.Role);
            Assert.Equal(2048ul, info.Superblock.DataOffset);
            Assert.True(info.Superblock.IsClean);
            Assert.NotNull(info.Bitmap);
            Assert.Equal(256u << 10, info.Bitmap!.ChunkBytes);
            Assert.Equal(0, info.DirtyBits);
        }
    }

    public static TheoryData<string, int, long, int, string> BadCreates => new()
    {
        { "too few for a mirror", 1, 64 << 10, 1, "at least 2 members" },
        { "too few for RAID5", 5, 64 << 10, 2, "at least 3 members" },
        { "chunk not a power of two", 5, 96 << 10, 3, "not a power of two" },
        { "chunk below a page", 5, 2048, 3, "not a multiple" },
        { "level 6", 6, 64 << 10, 4, "level 6 is not supported" },
    };

    [Theory, MemberData(nameof(BadCreates))]
    public void CreateRefusesBadGeometry(string what, int level, long chunk, int count, string reason)
    {
        string[] members = [.. Enumerable.Range(0, count).Select(_ => "file:" + FileMember())];
        var e = Assert.Throws<ArgumentException>(() => MdCreate.Create(members, new MdCreateOptions { Level = level, ChunkBytes = chunk }, _set));
        Assert.True(e.Message.Contains(reason, StringComparison.Ordinal), $"{what}: '{e.Message}'");
    }

    [Fact]
    public void CreateRefusesMembersOfDifferentSizesAndMembersOfAnotherArrayUnlessForced()
    {
        string a = "file:" + FileMember(), b = "file:" + FileMember(), c = "file:" + FileMember(20 << 20);
        var e = Assert.Throws<ArgumentException>(() => MdCreate.Create([a, c], new MdCreateOptions(), _set));
        Assert.Contains("differ in size", e.Message);
        MdCreate.Create([a, b], new MdCreateOptions(), _set);
        string d = "file:" + FileMember();
        e = Assert.Throws<ArgumentException>(() => MdCreate.Create([b, d], new MdCreateOptions(), _set));
        Assert.Contains("already a member of md array", e.Message);
        Assert.Contains("--force", e.Message);
        MdCreate.Create([b, d], new MdCreateOptions { Force = true }, _set);
        Assert.Throws<ArgumentException>(() => MdCreate.Create([a, a], new MdCreateOptions { Force = true }, _set));
    }

    // ---- interop: mdadm reads what we wrote ------------------------------------------------

    private static (int Exit, string Out) Mdadm(params string[] args)
    {
        var psi = new ProcessStartInfo("mdadm") { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (string a in args) psi.ArgumentList.Add(a);
        using Process p = Process.Start(psi)!;
        string output = p.StandardOutput.ReadToEnd() + p.StandardError.ReadToEnd();
        Assert.True(p.WaitForExit(30_000), "mdadm did not finish");
        return (p.ExitCode, output);
    }

    [Theory]
    [InlineData(1, 2)]
    [InlineData(5, 4)]
    public void MdadmExamineRecognisesOurMembers(int level, int count)
    {
        string[] paths = [.. Enumerable.Range(0, count).Select(_ => FileMember())];
        IReadOnlyList<MdCreatedMember> created = MdCreate.Create([.. paths.Select(p => "file:" + p)],
            new MdCreateOptions { Level = level, ChunkBytes = 64 << 10, Name = "interop", BitmapChunkBytes = 64 << 10 }, _set);
        _set.Dispose(); // mdadm opens the files itself
        for (int i = 0; i < count; i++)
        {
            (int exit, string output) = Mdadm("--examine", paths[i]);
            Assert.True(exit == 0, $"mdadm --examine failed ({exit}):\n{output}");
            Assert.Matches(@"Magic : a92b4efc", output);
            Assert.Matches(@"Version : 1\.2", output);
            Assert.Matches($"Array UUID : {created[0].Superblock.UuidText}", output);
            Assert.Matches($"Raid Level : raid{level}", output);
            Assert.Matches($"Raid Devices : {count}", output);
            Assert.Matches(@"Data Offset : 2048 sectors", output);
            Assert.Matches(@"Super Offset : 8 sectors", output);
            Assert.Matches(@"State : clean", output);
            Assert.Matches(@"Internal Bitmap : 8 sectors from superblock", output);
            Assert.Matches(@"Checksum : [0-9a-f]+ - correct", output);
            Assert.Matches($"Device Role : Active device {i}", output);
            Assert.Matches($"Array State : {new string('A', count)}", output);
            if (level == 5)
            {
                Assert.Matches(@"Layout : left-symmetric", output);
                Assert.Matches(@"Chunk Size : 64K", output);
            }

            // mdadm reads an internal bitmap only through a block device: a read-only loop device over the file.
            (exit, output) = WithLoopDevice(paths[i], dev => Mdadm("--examine-bitmap", dev));
            Assert.True(exit == 0, $"mdadm --examine-bitmap failed ({exit}):\n{output}");
            Assert.Matches(@"Magic : 6d746962", output);
            Assert.Matches(@"Version : 4", output);
            Assert.Matches(@"Chunksize : 64 KB", output);
            Assert.Matches(@"Bitmap : \d+ bits \(chunks\), 0 dirty", output);
        }
    }

    [Fact]
    public void MdadmExamineSeesWhatARunningMirrorRecorded()
    {
        string[] paths = [FileMember(), FileMember()];
        MdCreate.Create([.. paths.Select(p => "file:" + p)], new MdCreateOptions { Level = 1, Name = "running", BitmapChunkBytes = 64 << 10 }, _set);
        _set.Dispose();
        using (var harness = new MdHarness())
        {
            IBlockDevice md = harness.Open(MdHarness.Spec(paths.Select(p => "file:" + p)));
            MdArray array = MdArray.Of(md)!;
            array.FailMember(0);
            // Written degraded: md keeps these bits for a re-add of the failed leg.
            Assert.Equal(BlockStatus.Ok, harness.Write(md, 1 << 20, Stamp.Make(1 << 20, 128 << 10, 1)));
            Assert.Equal(BlockStatus.Ok, harness.Write(md, 5 << 20, Stamp.Make(5 << 20, 4096, 1)));
        }
        (int exit, string output) = Mdadm("--examine", paths[1]);
        Assert.True(exit == 0, output);
        Assert.Matches(@"Checksum : [0-9a-f]+ - correct", output);
        Assert.Matches(@"Array State : \.A", output); // slot 0 faulty, slot 1 active
        Assert.Matches(@"Device Role : Active device 1", output);
        Assert.Matches(@"State : clean", output);
        int survivorEvents = Events(output);
        (exit, output) = WithLoopDevice(paths[1], dev => Mdadm("--examine-bitmap", dev));
        Assert.True(exit == 0, output);
        Assert.Matches(@"Bitmap : \d+ bits \(chunks\), 3 dirty", output); // two 64 KiB chunks for the first write, one for the second
        // The failed leg's own superblock still says it was active (it missed the update): mdadm sees it behind.
        (_, string stale) = Mdadm("--examine", paths[0]);
        Assert.Matches(@"Array State : AA", stale);
        Assert.True(Events(stale) < survivorEvents, $"{Events(stale)} < {survivorEvents}");
    }

    private static int Events(string examine) => int.Parse(System.Text.RegularExpressions.Regex.Match(examine, @"Events : (\d+)").Groups[1].Value);

    private static (int Exit, string Out) WithLoopDevice(string path, Func<string, (int, string)> run)
    {
        var psi = new ProcessStartInfo("losetup", ["--find", "--show", "--read-only", path]) { RedirectStandardOutput = true, RedirectStandardError = true };
        using Process p = Process.Start(psi)!;
        string dev = p.StandardOutput.ReadToEnd().Trim();
        string err = p.StandardError.ReadToEnd();
        p.WaitForExit();
        Assert.True(p.ExitCode == 0 && dev.StartsWith("/dev/loop", StringComparison.Ordinal), $"losetup failed (root and loop devices are needed): {err}");
        try { return run(dev); }
        finally { Process.Start("losetup", ["-d", dev])!.WaitForExit(); }
    }

    [Fact]
    public void MdadmSeesACorruptedSuperblockAsWrong()
    {
        string[] paths = [FileMember(), FileMember()];
        MdCreate.Create([.. paths.Select(p => "file:" + p)], new MdCreateOptions(), _set);
        _set.Dispose();
        using (var f = new FileStream(paths[0], FileMode.Open, FileAccess.ReadWrite))
        {
            f.Position = 4096 + 200; // events
            f.WriteByte(0x55);
        }
        (_, string output) = Mdadm("--examine", paths[0]);
        Assert.Matches(@"Checksum : [0-9a-f]+ - expected [0-9a-f]+", output);
    }
}
