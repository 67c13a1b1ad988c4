using PfnBlock.Common;

namespace PfnBlock.Tests.Common;

/// <summary>Sizes as typed on the command line: good ones parse, bad ones say why, and formatting round-trips.</summary>
public sealed class SizeParserTests
{
    [Theory]
    [InlineData("4096", 4096L)]
    [InlineData("4k", 4096L)]
    [InlineData("4K", 4096L)]
    [InlineData("64M", 64L << 20)]
    [InlineData("64MiB", 64L << 20)]
    [InlineData("64MB", 64L << 20)]
    [InlineData("1G", 1L << 30)]
    [InlineData("2T", 2L << 40)]
    [InlineData(" 8k ", 8192L)]
    public void SizesParse(string text, long bytes) => Assert.Equal(bytes, SizeParser.Parse(text));

    [Theory]
    [InlineData("")]
    [InlineData("0")]
    [InlineData("-4k")]
    [InlineData("k")]
    [InlineData("4x")]
    [InlineData("1.5G")]
    [InlineData("99999999999999999999")]
    [InlineData("9999999999T")]
    public void BadSizesAreRefusedWithTheirText(string text)
    {
        var e = Assert.Throws<FormatException>(() => SizeParser.Parse(text));
        Assert.Contains($"'{text}'", e.Message);
    }

    [Theory]
    [InlineData(4096L, "4k")]
    [InlineData(64L << 20, "64M")]
    [InlineData(3L << 30, "3G")]
    [InlineData(4097L, "4097")]
    public void SizesFormatWithTheLargestExactUnit(long bytes, string text)
    {
        Assert.Equal(text, SizeParser.Format(bytes));
        Assert.Equal(bytes, SizeParser.Parse(text));
    }
}
