using System.Net;
using System.Net.Sockets;
using LLMProxy.Tests.Forwarding;
using LLMProxy.Tests.Infrastructure;

namespace LLMProxy.Tests.Cli;

public class CommandLineTests
{
    private static string WriteConfig(string yaml)
    {
        var path = Path.Combine(Path.GetTempPath(), $"llmproxy-test-{Guid.NewGuid():N}.yaml");
        File.WriteAllText(path, yaml);
        return path;
    }

    [Theory]
    [InlineData("--version")]
    [InlineData("-v")]
    public async Task Version_PrintsVersion_ExitsZero(string flag)
    {
        var (code, stdout, _) = await ProxyProcess.RunAsync(flag);
        Assert.Equal(0, code);
        Assert.Matches(@"\d+\.\d+\.\d+", stdout);
    }

    [Fact]
    public async Task Help_ListsOptions_ExitsZero()
    {
        var (code, stdout, _) = await ProxyProcess.RunAsync("--help");
        Assert.Equal(0, code);
        foreach (var option in new[] { "--config", "--json", "--release", "--test", "--shutdown-timeout", "mock", "demo" })
        {
            Assert.Contains(option, stdout);
        }
    }

    [Theory]
    [InlineData("--no-such-flag")]
    [InlineData("--shutdown-timeout", "abc")]
    [InlineData("mock", "--fail-rate", "3")]
    [InlineData("mock", "--tpm", "-5")]
    public async Task UsageError_ExitsTwo(params string[] args)
    {
        var (code, _, stderr) = await ProxyProcess.RunAsync(args);
        Assert.Equal(2, code);
        Assert.False(string.IsNullOrWhiteSpace(stderr));
    }

    [Theory]
    [InlineData("--port", "0")]
    [InlineData("--port", "65536")]
    [InlineData("--admin-port", "0")]
    [InlineData("--admin-port", "70000")]
    public async Task Demo_PortOutOfRange_IsAUsageError_ExitsTwo(string option, string value)
    {
        var (code, stdout, stderr) = await ProxyProcess.RunAsync("demo", option, value);

        Assert.Equal(2, code);
        Assert.Contains($"{option} must be between 1 and 65535 (got {value})", stderr);
        Assert.DoesNotContain("starting", stdout); // refused by the parser: nothing started
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task Demo_JsonFlag_BeforeOrAfterDemo_LogsJson(bool afterDemo)
    {
        var ports = new[] { "--port", StreamingAndErrorTests.FreePort().ToString(System.Globalization.CultureInfo.InvariantCulture),
            "--admin-port", StreamingAndErrorTests.FreePort().ToString(System.Globalization.CultureInfo.InvariantCulture) };
        await using var process = ProxyProcess.Start(afterDemo ? ["demo", "-j", .. ports] : ["-j", "demo", .. ports]);

        await process.WaitForOutputAsync("ready:", count: 2);

        Assert.All(process.Stdout.Split('\n').Where(l => l.Contains("ready:", StringComparison.Ordinal)), l => Assert.StartsWith("{", l, StringComparison.Ordinal));
        process.Signal(ProxyProcess.SIGTERM);
        Assert.Equal(0, await process.WaitForExitAsync(TimeSpan.FromSeconds(30)));
    }

    [Theory]
    [InlineData("--shutdown-timeout must be a whole number of milliseconds, 0 or more (got 'abc')", "--shutdown-timeout", "abc")]
    [InlineData("--shutdown-timeout must be a whole number of milliseconds, 0 or more (got '-1')", "--shutdown-timeout", "-1")]
    [InlineData("--config needs a file path (got an empty one)", "-c", "")]
    public async Task UsageError_PlainMessage_ExitsTwo(string message, params string[] args)
    {
        var (code, _, stderr) = await ProxyProcess.RunAsync(args);

        Assert.Equal(2, code);
        Assert.Contains($"llmproxy: {message}", stderr);
        Assert.DoesNotContain("System.", stderr);
        Assert.DoesNotContain("Parameter", stderr);
    }

    [Fact]
    public async Task InvalidConfig_ExitsOne_NamingEveryBadKey_NoStackTrace()
    {
        var path = WriteConfig("""
            httpServer:
              forwards:
                - name: f
                  port: 70000
                  defaultGroup: nope
                  rateLimit:
                    perSecond: 1
            upstreams:
              - name: u
                url: "not a url"
                auth:
                  type: bearer
            upstreamGroups:
              - name: g
                upstreams:
                  - name: u
            """);
        var (code, _, stderr) = await ProxyProcess.RunAsync("-c", path);
        Assert.Equal(1, code);
        Assert.Contains("httpServer.forwards[0].port", stderr);
        Assert.Contains("httpServer.forwards[0].defaultGroup", stderr);
        Assert.Contains("httpServer.forwards[0].rateLimit", stderr);
        Assert.Contains("upstreams[0].url", stderr);
        Assert.Contains("upstreams[0].auth.token", stderr);
        Assert.DoesNotContain("   at ", stderr);
    }

    [Fact]
    public async Task MissingConfigFile_ExitsOne()
    {
        var (code, _, stderr) = await ProxyProcess.RunAsync("-c", "/nonexistent/llmproxy.yaml");
        Assert.Equal(1, code);
        Assert.Contains("/nonexistent/llmproxy.yaml", stderr);
        Assert.DoesNotContain("   at ", stderr);
    }

    [Fact]
    public async Task TestFlag_ValidConfig_PrintsSummaryWithoutSecrets_ExitsZero()
    {
        var path = WriteConfig(ProcessConfig.Minimal(StreamingAndErrorTests.FreePort(), StreamingAndErrorTests.FreePort(), "http://127.0.0.1:1"));
        var (code, stdout, _) = await ProxyProcess.RunAsync("-t", "-c", path);
        Assert.Equal(0, code);
        Assert.Contains("valid", stdout);
        Assert.DoesNotContain("sk-cli-test-secret-4242", stdout);
    }

    [Fact]
    public async Task PortInUse_ExitsOne_NamingAddress()
    {
        using var occupied = new TcpListener(IPAddress.Loopback, 0);
        occupied.Start();
        var port = ((IPEndPoint)occupied.LocalEndpoint).Port;
        var path = WriteConfig(ProcessConfig.Minimal(port, StreamingAndErrorTests.FreePort(), "http://127.0.0.1:1"));

        var (code, _, stderr) = await ProxyProcess.RunAsync("-r", "-c", path);

        Assert.Equal(1, code);
        Assert.Contains($"127.0.0.1:{port}", stderr);
        Assert.DoesNotContain("   at ", stderr);
    }

    [Fact]
    public async Task AdminPortInUse_ExitsOne_NamingAddress_NoReadyLineLogged()
    {
        // SPEC §8: every listener is bound before any ready line; the forward binds first and must not be announced.
        using var occupied = new TcpListener(IPAddress.Loopback, 0);
        occupied.Start();
        var adminPort = ((IPEndPoint)occupied.LocalEndpoint).Port;
        var path = WriteConfig(ProcessConfig.Minimal(StreamingAndErrorTests.FreePort(), adminPort, "http://127.0.0.1:1"));

        var (code, stdout, stderr) = await ProxyProcess.RunAsync("-r", "-c", path);

        Assert.Equal(1, code);
        Assert.Contains($"127.0.0.1:{adminPort}", stderr);
        Assert.DoesNotContain("ready:", stdout);
        Assert.DoesNotContain("   at ", stderr);
        Assert.DoesNotContain("   at ", stdout); // no framework log of the failure with its stack trace either
    }

    [Fact]
    public async Task Sigterm_ExitsZero_TheLastLinesAreWritten()
    {
        await using var upstream = await ScriptedUpstream.StartAsync(ScriptedUpstream.Json("u1"));
        var path = WriteConfig(ProcessConfig.Minimal(StreamingAndErrorTests.FreePort(), StreamingAndErrorTests.FreePort(), upstream.Url));
        await using var process = ProxyProcess.Start("-r", "-c", path);
        await process.WaitForOutputAsync("ready:", count: 2);

        process.Signal(ProxyProcess.SIGTERM);

        Assert.Equal(0, await process.WaitForExitAsync(TimeSpan.FromSeconds(30)));
        // Logged in the last moments before exit, through the batching writer: written, not lost with the process.
        Assert.Contains("shutting down", process.Stdout);
        Assert.EndsWith("info: LLMProxy[7] stopped", process.Stdout.TrimEnd());
    }

    [Theory]
    [InlineData("10.255.255.1", "0")] // not an address of this host: EADDRNOTAVAIL, a SocketException
    [InlineData("127.0.0.1", "OCCUPIED")] // port in use: an IOException
    public async Task Mock_CannotListen_ExitsOne_OneLineNoStackTrace(string address, string port)
    {
        using var occupied = new TcpListener(IPAddress.Loopback, 0);
        occupied.Start();
        if (port == "OCCUPIED") port = ((IPEndPoint)occupied.LocalEndpoint).Port.ToString(System.Globalization.CultureInfo.InvariantCulture);

        var (code, _, stderr) = await ProxyProcess.RunAsync("mock", "--address", address, "--port", port);

        Assert.Equal(1, code);
        Assert.StartsWith($"llmproxy mock: cannot listen on {address}:{port}: ", stderr, StringComparison.Ordinal);
        Assert.Single(stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries));
    }

    [Fact]
    public async Task Mock_DefaultOptions_ServesUntilSigterm_ExitsZero()
    {
        await using var process = ProxyProcess.Start("mock", "--port", "0");
        await process.WaitForOutputAsync("ready: mock upstream listening on ");
        var url = process.Stdout.Split(' ').First(w => w.StartsWith("http://", StringComparison.Ordinal));
        using var client = new HttpClient();
        var models = await client.GetStringAsync(new Uri(new Uri(url), "/v1/models"));
        Assert.Contains("\"object\":\"list\"", models);

        process.Signal(ProxyProcess.SIGTERM);
        Assert.Equal(0, await process.WaitForExitAsync(TimeSpan.FromSeconds(30)));
    }
}
