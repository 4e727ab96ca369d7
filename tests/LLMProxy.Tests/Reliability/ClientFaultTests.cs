using System.Net;
using System.Text;
using LLMProxy.Tests.Infrastructure;
using static LLMProxy.Tests.Reliability.ReliabilityKit;

namespace LLMProxy.Tests.Reliability;

/// <summary>
/// Requests the proxy cannot send as received are the client's fault: a 4xx JSON answer, and no verdict for any
/// upstream — no breaker failure, no failover, no upstream error metric. Sent many times over, they must leave
/// every breaker closed and every other client served.
/// </summary>
public class ClientFaultTests
{
    /// <summary>Two members whose breakers would open after two failures, with retries over both.</summary>
    private static async Task<(TestProxy Proxy, ScriptedUpstream A, ScriptedUpstream B)> StartAsync()
    {
        var a = await ScriptedUpstream.StartAsync(ScriptedUpstream.Json("a"));
        var b = await ScriptedUpstream.StartAsync(ScriptedUpstream.Json("b"));
        const string breaker = "breaker:\n    threshold: 0.5\n    minRequests: 2\n    cooldown: 60000\n    interval: 60000";
        var proxy = await TestProxy.StartAsync(TestProxy.Config(
            $"- name: a\n  url: \"{a.Url}\"\n  {breaker}\n- name: b\n  url: \"{b.Url}\"\n  {breaker}",
            "- name: a\n- name: b"));
        return (proxy, a, b);
    }

    /// <summary>Raw request heads no friendly client produces, each the client's fault.</summary>
    public static TheoryData<string, string, int, string> Hostile => new()
    {
        { "non-ASCII header value", "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nX-Note: caf\u00e9 \u2603\r\nContent-Length: 2\r\n\r\n{}", 400, "bad_request" },
        { "non-ASCII header value without body", "GET /v1/models HTTP/1.1\r\nHost: x\r\nX-Note: \u00fcber\r\n\r\n", 400, "bad_request" },
        { "control character in header value", "GET /v1/models HTTP/1.1\r\nHost: x\r\nX-Note: a\u0001b\r\n\r\n", 400, "bad_request" },
        { "DEL in header value", "GET /v1/models HTTP/1.1\r\nHost: x\r\nX-Note: a\u007fb\r\n\r\n", 400, "bad_request" },
        { "non-ASCII in Authorization", "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer sk-\u00e9\r\nContent-Length: 2\r\n\r\n{}", 400, "bad_request" },
        { "CONNECT", "CONNECT api.openai.com:443 HTTP/1.1\r\nHost: api.openai.com:443\r\n\r\n", 405, "method_not_allowed" },
        { "TRACE", "TRACE /v1/models HTTP/1.1\r\nHost: x\r\n\r\n", 405, "method_not_allowed" },
        // .NET's client can only send a path: OPTIONS * would reach the upstream as OPTIONS /, another request.
        { "OPTIONS *", "OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n", 400, "bad_request" },
        // Header names that are not RFC 9110 tokens: Kestrel accepts them, .NET's client cannot send them (it would
        // silently drop them, forwarding another request than the client's).
        { "header name with braces", "GET /v1/models HTTP/1.1\r\nHost: x\r\nX{y}: 1\r\n\r\n", 400, "bad_request" },
        { "header name with @", "GET /v1/models HTTP/1.1\r\nHost: x\r\n@key: 1\r\n\r\n", 400, "bad_request" },
        { "header name with quotes", "GET /v1/models HTTP/1.1\r\nHost: x\r\n\"q\": 1\r\n\r\n", 400, "bad_request" },
        { "header name with separators", "GET /v1/models HTTP/1.1\r\nHost: x\r\nA(b)/c;d=e,f?: 1\r\n\r\n", 400, "bad_request" },
        { "header name with DEL", "GET /v1/models HTTP/1.1\r\nHost: x\r\nX-\u007f: 1\r\n\r\n", 400, "bad_request" },
        { "header name not a token, with body", "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nx-api-key[0]: sk-1\r\nContent-Length: 2\r\n\r\n{}", 400, "bad_request" },
    };

    [Theory]
    [MemberData(nameof(Hostile))]
    public async Task HostileRequest_AnsweredAsClientError_NoUpstreamVerdict(string shape, string head, int status, string code)
    {
        var (proxy, a, b) = await StartAsync();
        await using var _ = proxy;
        await using var __ = a;
        await using var ___ = b;
        var port = RawClient.PortOf(proxy.ForwardUrl());

        // Far more than it takes to open both breakers if these counted as upstream failures.
        for (var i = 0; i < 8; i++)
        {
            await using var raw = await RawClient.ConnectAsync(port);
            await raw.SendAsync(Encoding.UTF8.GetBytes(head));
            var response = await raw.ReadResponseAsync(TimeSpan.FromSeconds(10));
            Assert.True(response.Status == status, $"{shape}: expected {status}, got {response.Status}: {response.Head}\n{response.BodyText}");
            Assert.Contains($"\"code\":\"{code}\"", response.BodyText);
        }

        Assert.Equal(0, a.Count + b.Count);
        var metrics = await proxy.Admin.GetStringAsync("/metrics");
        Assert.Equal(0, Sum(metrics, "llmproxy_upstream_errors_total"));
        Assert.Equal(0, Sum(metrics, "llmproxy_retries_total"));
        AssertSample(metrics, "llmproxy_circuit_breaker_state{upstream=\"a\"}", 0);
        AssertSample(metrics, "llmproxy_circuit_breaker_state{upstream=\"b\"}", 0);
        // Every other client is still served by both members.
        for (var i = 0; i < 4; i++)
        {
            using var ok = await proxy.Client.SendAsync(Chat());
            Assert.Equal(HttpStatusCode.OK, ok.StatusCode);
        }
        Assert.True(a.Count > 0 && b.Count > 0);
        Assert.Contains(AccessLines(proxy.Logs), l => l.Contains($" {status} forward=fwd upstream=- attempts=0", StringComparison.Ordinal));
    }

    [Fact]
    public async Task WebSocketUpgrade_HeaderStripped_NoTunnel_UpstreamSeesPlainRequest()
    {
        var upstream = await ScriptedUpstream.StartAsync(ScriptedUpstream.Json("u"));
        await using var _ = upstream;
        await using var proxy = await TestProxy.StartAsync(TestProxy.Config($"- name: u\n  url: \"{upstream.Url}\"", "- name: u"));
        await using var raw = await RawClient.ConnectAsync(RawClient.PortOf(proxy.ForwardUrl()));
        await raw.SendAsync("GET /v1/realtime HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n" +
            "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n");
        var response = await raw.ReadResponseAsync(TimeSpan.FromSeconds(10));

        Assert.Equal(200, response.Status);
        var seen = Assert.Single(upstream.Received);
        Assert.Equal("GET", seen.Method);
        Assert.Null(seen.Header("Upgrade"));
        Assert.DoesNotContain("upgrade", seen.Header("Connection") ?? "", StringComparison.OrdinalIgnoreCase);
        Assert.Empty(seen.Body);
        // Bytes the client sends after the head never reach the upstream as a tunnel.
        await raw.SendAsync("\u0081\u0085garbage-frame");
        Assert.True(await raw.WaitForCloseAsync(TimeSpan.FromSeconds(10)) || upstream.Count == 1);
        Assert.Equal(1, upstream.Count);
    }

    [Fact]
    public async Task UpstreamAnswering101_NeverTunnelled_IsAnUpstreamProtocolError()
    {
        var upstream = await ScriptedUpstream.StartAsync(async ctx =>
        {
            ctx.Response.StatusCode = 101;
            ctx.Response.Headers.Connection = "Upgrade";
            ctx.Response.Headers.Upgrade = "websocket";
            await ctx.Response.Body.FlushAsync();
        });
        await using var _ = upstream;
        await using var proxy = await TestProxy.StartAsync(TestProxy.Config($"- name: u\n  url: \"{upstream.Url}\"", "- name: u"));
        using var response = await proxy.Client.GetAsync("/v1/realtime");

        await AssertErrorAsync(response, HttpStatusCode.BadGateway, "upstream_unavailable");
        await AssertSampleAsync(proxy.Admin, "llmproxy_upstream_errors_total{group=\"g\",upstream=\"u\",error=\"protocol\"}", 1);
    }

    [Fact]
    public async Task Trailer_Header_NotForwarded()
    {
        var upstream = await ScriptedUpstream.StartAsync(ScriptedUpstream.Json("u"));
        await using var _ = upstream;
        await using var proxy = await TestProxy.StartAsync(TestProxy.Config($"- name: u\n  url: \"{upstream.Url}\"", "- name: u"));
        using var request = Chat();
        request.Headers.TryAddWithoutValidation("Trailer", "X-Checksum");
        request.Headers.TryAddWithoutValidation("TE", "trailers");
        using var response = await proxy.Client.SendAsync(request);

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        var seen = Assert.Single(upstream.Received);
        Assert.Null(seen.Header("Trailer"));
        Assert.Null(seen.Header("TE"));
    }
}
