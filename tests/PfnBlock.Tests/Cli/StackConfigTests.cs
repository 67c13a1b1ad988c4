using System.Diagnostics;
using PfnBlock.Cli.Config;
using PfnBlock.Namespaces;

namespace PfnBlock.Tests.Cli;

/// <summary>
/// Whole stacks in one YAML file: a good one validates and serves to a real client; every kind of
/// mistake is reported with its line before anything is created or opened.
/// </summary>
public sealed class StackConfigTests : IDisposable
{
    private readonly Scratch _scratch = new();

    public void Dispose() => _scratch.Dispose();

    private string Good(string a, string b, string listen = "tcp:127.0.0.1:10809") => $$"""
        namespaces:
          - { path: {{a}}, size: 16M }
          - { path: {{b}}, size: 16M, mode: raw, sector-size: 512 }
        devices:
          a: pmem:{{a}}
          b: pmem:{{b}}
          both:
            table:
              - 0 16384 linear @a 0      # the first 8 MiB of a
              - 16384 16384 linear @b 0
        exports:
          - { name: big, device: "@both" }
          - { name: a-only, device: "@a", read-only: true, description: just a }
        listen: [ "{{listen}}" ]
        """;

    [Fact]
    public void AGoodStackValidatesWithoutCreatingAnything()
    {
        string a = _scratch.NewPath("a"), b = _scratch.NewPath("b");
        StackConfig stack = StackConfig.Parse(Good(a, b), "stack.yaml");
        Assert.Equal([a, b], stack.Namespaces.Select(n => n.Path));
        Assert.Equal(["a", "b", "both"], stack.Devices.Select(d => d.Name));
        Assert.Equal(2, stack.Devices[2].Table!.Count);
        Assert.Equal(["big", "a-only"], stack.Exports.Select(e => e.Name));
        Assert.True(stack.Exports[1].ReadOnly);
        Assert.Single(stack.Listen);
        Assert.False(File.Exists(a));
        Assert.False(File.Exists(b));
    }

    [Theory]
    [InlineData("wrong: 1\nexports: [ { name: x, device: 'ram:1M' } ]\n", "line 1: unknown key 'wrong'")]
    [InlineData("exports: []\n", "no exports")]
    [InlineData("namespaces:\n  - { path: /dev/shm/x, size: lots }\nexports: [ { name: x, device: 'ram:1M' } ]\n", "line 2: invalid size 'lots'")]
    [InlineData("namespaces:\n  - { path: /dev/shm/x, size: 1G, colour: red }\nexports: [ { name: x, device: 'ram:1M' } ]\n", "line 2: unknown key 'colour'")]
    [InlineData("namespaces:\n  - { size: 1G }\nexports: [ { name: x, device: 'ram:1M' } ]\n", "line 2: 'path' is missing")]
    [InlineData("devices:\n  a: disk:/dev/sda\nexports: [ { name: x, device: '@a' } ]\n", "line 2: unknown device kind 'disk'")]
    [InlineData("devices:\n  a: ram:1M\n  a: ram:2M\nexports: [ { name: x, device: '@a' } ]\n", "line 3")]
    [InlineData("devices:\n  a: { table: [ '0 2048 linear @nope 0' ] }\nexports: [ { name: x, device: '@a' } ]\n", "device 'a' uses '@nope', which is not defined")]
    [InlineData("devices:\n  a: ram:1M\nexports: [ { name: x, device: '@b' } ]\n", "export 'x' uses '@b', which is not defined")]
    [InlineData("devices:\n  a: { table: [ '0 2048 linear @b 0' ] }\n  b: { table: [ '0 2048 linear @a 0' ] }\nexports: [ { name: x, device: '@a' } ]\n", "refer to each other in a circle: @a → @b → @a")]
    [InlineData("devices:\n  a:\n    table:\n      - 0 1024 linear ram:1M 0\n      - 2048 1024 linear ram:1M 1024\nexports: [ { name: x, device: '@a' } ]\n", "line 5: device 'a': gap before sector 2048")]
    [InlineData("devices:\n  a: { table: [ '0 2048 mirror ram:1M 0' ] }\nexports: [ { name: x, device: '@a' } ]\n", "unknown target type 'mirror'")]
    [InlineData("devices:\n  a: { table: [] }\nexports: [ { name: x, device: '@a' } ]\n", "the table has no lines")]
    [InlineData("devices:\n  a: { spec: 'ram:1M', table: [ '0 1 linear ram:1M 0' ] }\nexports: [ { name: x, device: '@a' } ]\n", "give exactly one of spec or table")]
    [InlineData("exports:\n  - { name: x, device: 'ram:1M' }\n  - { name: x, device: 'ram:2M' }\n", "line 3: export 'x' is defined twice")]
    [InlineData("exports:\n  - { name: x, device: 'pmem:/nonexistent/pmem0' }\n", "neither exists nor is declared under namespaces")]
    [InlineData("exports:\n  - { name: x, device: 'ram:1M', read-only: maybe }\n", "read-only 'maybe'")]
    [InlineData("exports: [ { name: x, device: 'ram:1M' } ]\nlisten: [ 'carrier-pigeon' ]\n", "line 2")]
    [InlineData("exports: [ { name: x, device: 'ram:1M' }\n", "line")]
    public void MistakesAreReportedWithTheirLine(string yaml, string message)
    {
        var e = Assert.Throws<FormatException>(() => StackConfig.Parse(yaml, "stack.yaml"));
        Assert.Contains(message, e.Message);
        Assert.StartsWith("stack.yaml", e.Message);
    }

    [Fact]
    public void AnExistingPathThatDoesNotMatchItsDeclarationIsLeftAlone()
    {
        string other = _scratch.NewFile([1, 2, 3, 4], "not-a-namespace");
        string small = _scratch.NewNamespace(4 << 20);
        byte[] before = File.ReadAllBytes(small);
        foreach ((string path, string expected) in new[] { (other, "is not a PfnBlock namespace"), (small, "not the declared raw 16777216") })
        {
            StackConfig stack = StackConfig.Parse($"namespaces: [ {{ path: {path}, size: 16M }} ]\nexports: [ {{ name: x, device: 'pmem:{path}' }} ]\n", "s.yaml");
            Assert.Contains(expected, Assert.Throws<IOException>(() => stack.CreateMissingNamespaces(_ => { })).Message);
        }
        Assert.Equal([1, 2, 3, 4], File.ReadAllBytes(other));
        Assert.Equal(before, File.ReadAllBytes(small));
    }

    [Fact]
    public void ServeWithAConfigServesTheStackToARealClient()
    {
        string a = _scratch.NewPath("a"), b = _scratch.NewPath("b");
        string dir = _scratch.NewDirectory("cfg");
        string socket = Path.Combine(dir, "nbd.sock"), file = Path.Combine(dir, "stack.yaml");
        File.WriteAllText(file, Good(a, b, "unix:" + socket));

        (int checkExit, string checkOut, _) = ChildProcess.Run(ChildProcess.CliDll, ["serve", "--config", file, "--check"]);
        Assert.Equal(0, checkExit);
        Assert.Contains("(to create)", checkOut);
        Assert.False(File.Exists(a)); // --check creates nothing

        using Process serve = ChildProcess.Start(ChildProcess.CliDll, "serve", "--config", file);
        try
        {
            Assert.True(SpinWait.SpinUntil(() => File.Exists(socket), TimeSpan.FromSeconds(30)), "the server never listened");
            string uri = $"nbd+unix:///big?socket={socket}";
            // Write across the line boundary (sector 16384 = byte 8 MiB) and read it back through the stack.
            (int w, _, string werr) = ChildProcess.RunTool("qemu-io", "-f", "raw", "-c", "write -P 0x5a 8384512 8192", uri);
            Assert.True(w == 0, werr);
            (int r, string rout, string rerr) = ChildProcess.RunTool("qemu-io", "-f", "raw", "-c", "read -P 0x5a 8384512 8192", uri);
            Assert.True(r == 0 && !rout.Contains("Pattern verification failed"), rout + rerr);
            (int l, string list, _) = ChildProcess.RunTool("nbdinfo", "--list", $"nbd+unix:///?socket={socket}");
            Assert.Equal(0, l);
            Assert.Contains("export=\"a-only\"", list);
            (_, string info, _) = ChildProcess.RunTool("nbdinfo", $"nbd+unix:///a-only?socket={socket}");
            Assert.Contains("just a", info);
            // The read-only export refuses writes.
            (int ro, _, _) = ChildProcess.RunTool("qemu-io", "-f", "raw", "-c", "write 0 4096", $"nbd+unix:///a-only?socket={socket}");
            Assert.NotEqual(0, ro);
        }
        finally
        {
            serve.Kill(entireProcessTree: true);
            serve.WaitForExit();
        }
        // The second half of the write went to namespace b's first sectors.
        using var ns = PmemNamespace.Open(b);
        unsafe { Assert.True(new ReadOnlySpan<byte>(ns.DataAddress, 4096).IndexOfAnyExcept((byte)0x5a) < 0); }
    }
}
