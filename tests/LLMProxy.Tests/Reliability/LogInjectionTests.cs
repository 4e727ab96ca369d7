using System.Net;
using LLMProxy.Tests.Forwarding;
using LLMProxy.Tests.Infrastructure;

namespace LLMProxy.Tests.Reliability;

/// <summary>What a client controls (path, X-Request-ID) cannot forge a log line or a field, and an unfit request id is
/// replaced before it reaches logs, the upstream or the answer.</summary>
public class LogInjectionTests
{
    /// <summary>A path that, decoded, holds a line break, a whole fake access line and fake fields.</summary>
    private const string ForgingPath =
        "/v1/x%0D%0A2099-01-01T00:00:00.000Z%20info:%20LLMProxy.Access%5B1%5D%20GET%20/forged%20200%20forward=evil%20status=200%09%1B%5B2J";

    private static async Task<RawResponse> SendRawAsync(int port, string head)
    {
        await using var raw = await RawClient.ConnectAsync(port);
        await raw.SendAsync(head);
        return await raw.ReadResponseAsync(TimeSpan.FromSeconds(10));
    }

    private static string AccessLine(TestProxy proxy, string requestId) =>
        Assert.Single(proxy.Logs.Entries, e => e.Id.Id == 1 && e.Message.EndsWith("request_id=" + requestId, StringComparison.Ordinal)).Message;

    [Fact]
    public async Task AccessLine_PathWithEncodedLineBreakAndFakeFields_StaysOneLineOfPercentEncodedPath()
    {
        await using var upstream = await ScriptedUpstream.StartAsync(ScriptedUpstream.Json("u1"));
        await using var proxy = await TestProxy.StartAsync(TestProxy.Config($"- name: u1\n  url: \"{upstream.Url}\"", "- name: u1"));

        var response = await SendRawAsync(RawClient.PortOf(proxy.ForwardUrl()), $"GET {ForgingPath} HTTP/1.1\r\nHost: x\r\nX-Request-ID: forge-1\r\n\r\n");

        Assert.Equal(200, response.Status);
        var line = AccessLine(proxy, "forge-1");
        Assert.StartsWith("GET /v1/x%0D%0A2099-01-01T00:00:00.000Z%20info:%20LLMProxy.Access%5B1%5D%20GET%20/forged%20200%20forward=evil%20status=200%09%1B%5B2J 200 forward=fwd ", line);
        Assert.DoesNotMatch("[\\x00-\\x1f]", line);
        Assert.Single(line.Split(' '), f => f.StartsWith("forward=", StringComparison.Ordinal));
    }

    [Theory]
    [InlineData("a b")]                       // a space: would split the request_id field
    [InlineData("id\twith-tab")]
    [InlineData("naïve-id")]                  // non-ASCII
    [InlineData("id\u0001ctl")]               // a control character
    [InlineData(null)]                        // 129 visible characters: too long
    public async Task RequestId_UnfitIncoming_ReplacedEverywhere(string? incoming)
    {
        incoming ??= new string('r', 129);
        await using var upstream = await ScriptedUpstream.StartAsync(ScriptedUpstream.Json("u1"));
        await using var proxy = await TestProxy.StartAsync(TestProxy.Config($"- name: u1\n  url: \"{upstream.Url}\"", "- name: u1"));

        await using var raw = await RawClient.ConnectAsync(RawClient.PortOf(proxy.ForwardUrl()));
        await raw.SendAsync(System.Text.Encoding.UTF8.GetBytes($"GET /v1/models HTTP/1.1\r\nHost: x\r\nX-Request-ID: {incoming}\r\n\r\n"));
        var response = await raw.ReadResponseAsync(TimeSpan.FromSeconds(10));

        Assert.Equal(200, response.Status);
        var answered = response.Head.Split("\r\n").Single(l => l.StartsWith("X-Request-ID: ", StringComparison.OrdinalIgnoreCase))["X-Request-ID: ".Length..];
        Assert.NotEqual(incoming, answered);
        Assert.Matches("^[0-9a-f]{22}$", answered);
        Assert.Equal(answered, Assert.Single(upstream.Received).Header("X-Request-ID"));
        AccessLine(proxy, answered);
    }

    [Fact]
    public async Task RequestId_SentTwice_Replaced()
    {
        await using var upstream = await ScriptedUpstream.StartAsync(ScriptedUpstream.Json("u1"));
        await using var proxy = await TestProxy.StartAsync(TestProxy.Config($"- name: u1\n  url: \"{upstream.Url}\"", "- name: u1"));

        var response = await SendRawAsync(RawClient.PortOf(proxy.ForwardUrl()), "GET / HTTP/1.1\r\nHost: x\r\nX-Request-ID: one\r\nX-Request-ID: two\r\n\r\n");

        Assert.Equal(200, response.Status);
        var got = Assert.Single(upstream.Received).Header("X-Request-ID");
        Assert.Matches("^[0-9a-f]{22}$", got);
    }

    [Fact]
    public async Task RequestId_128VisibleCharacters_KeptAndEchoed()
    {
        var id = string.Concat(Enumerable.Range(0, 128).Select(i => (char)('!' + (i % 94))));
        await using var upstream = await ScriptedUpstream.StartAsync(ScriptedUpstream.Json("u1"));
        await using var proxy = await TestProxy.StartAsync(TestProxy.Config($"- name: u1\n  url: \"{upstream.Url}\"", "- name: u1"));

        using var request = new HttpRequestMessage(HttpMethod.Get, "/");
        request.Headers.TryAddWithoutValidation("X-Request-ID", id);
        using var response = await proxy.Client.SendAsync(request);

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal(id, response.Headers.GetValues("X-Request-ID").Single());
        Assert.Equal(id, Assert.Single(upstream.Received).Header("X-Request-ID"));
        AccessLine(proxy, id);
    }

    [Fact]
    public async Task ConsoleLog_RealBinary_ForgingPath_OneLinePerEntry()
    {
        await using var upstream = await ScriptedUpstream.StartAsync(ScriptedUpstream.Json("u1"));
        var port = StreamingAndErrorTests.FreePort();
        var admin = StreamingAndErrorTests.FreePort();
        var path = Path.Combine(Path.GetTempPath(), $"llmproxy-forge-{Guid.NewGuid():N}.yaml");
        await File.WriteAllTextAsync(path, ProcessConfig.Minimal(port, admin, upstream.Url));
        await using var process = ProxyProcess.Start("-c", path, "--release");
        await process.WaitForOutputAsync("ready:", count: 2);

        var response = await SendRawAsync(port, $"GET {ForgingPath} HTTP/1.1\r\nHost: x\r\nX-Request-ID: forge-bin\r\n\r\n");
        Assert.Equal(200, response.Status);
        await process.WaitForOutputAsync("request_id=forge-bin");
        process.Signal(ProxyProcess.SIGTERM);
        Assert.Equal(0, await process.WaitForExitAsync(TimeSpan.FromSeconds(30)));
        File.Delete(path);

        var lines = process.Stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.All(lines, l => Assert.Matches(@"^\d{4}-\d\d-\d\dT[\d:.]+Z (info|warn|fail|crit|dbug): ", l));
        Assert.DoesNotContain(lines, l => l.StartsWith("2099-", StringComparison.Ordinal));
        Assert.Contains(lines, l => l.Contains("GET /v1/x%0D%0A2099-01-01T00:00:00.000Z%20info", StringComparison.Ordinal));
    }
}
