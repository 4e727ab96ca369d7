using System.Net;
using System.Text;
using LLMProxy.Tests.Infrastructure;
using Microsoft.AspNetCore.Http;
using static LLMProxy.Tests.Reliability.ReliabilityKit;

namespace LLMProxy.Tests.Reliability;

/// <summary>
/// Requests that look odd but are HTTP a client may send: each is forwarded as the client meant it — never a 502, a
/// breaker failure, an upstream error or a retry across members — or refused before any upstream (ClientFaultTests,
/// ClientInputTests.MalformedHttp_…).
/// </summary>
public class ClientShapeTests
{
    private const string Body = "{\"model\":\"m\",\"messages\":[]}";

    /// <summary>Member <c>a</c> answers 500 to a request carrying <c>X-Fail: a</c>; otherwise both answer 200 with a
    /// body of known length.</summary>
    private static Func<HttpContext, Task> Member(string name) => async ctx =>
    {
        if (ctx.Request.Headers["X-Fail"] == name)
        {
            ctx.Response.StatusCode = 500;
            await ctx.Response.WriteAsync("{\"error\":\"" + name + "\"}");
            return;
        }
        var body = Encoding.UTF8.GetBytes($"{{\"upstream\":\"{name}\"}}");
        ctx.Response.ContentType = "application/json";
        ctx.Response.ContentLength = body.Length;
        ctx.Response.Headers["X-Upstream"] = name;
        if (!HttpMethods.IsHead(ctx.Request.Method))
        {
            await ctx.Response.Body.WriteAsync(body);
        }
    };

    private sealed class Rig : IAsyncDisposable
    {
        public required ScriptedUpstream A { get; init; }
        public required ScriptedUpstream B { get; init; }
        public required TestProxy Proxy { get; init; }
        public int Port => RawClient.PortOf(Proxy.ForwardUrl());
        public IEnumerable<ReceivedRequest> Received => A.Received.Concat(B.Received);

        /// <param name="retries">false: one attempt per request, so a body streams to the upstream as it arrives
        /// instead of being buffered for replay.</param>
        public static async Task<Rig> StartAsync(bool retries = true)
        {
            var a = await ScriptedUpstream.StartAsync(Member("a"));
            var b = await ScriptedUpstream.StartAsync(Member("b"));
            const string breaker = "breaker:\n    threshold: 0.5\n    minRequests: 2\n    cooldown: 60000\n    interval: 60000";
            var proxy = await TestProxy.StartAsync(TestProxy.Config(
                $"- name: a\n  url: \"{a.Url}\"\n  {breaker}\n- name: b\n  url: \"{b.Url}\"\n  {breaker}",
                "- name: a\n- name: b", groupExtra: retries ? "" : "retry:\n  attempts: 1"));
            return new Rig { A = a, B = b, Proxy = proxy };
        }

        /// <summary>Nothing was an upstream's fault: no upstream error, no retry, both breakers closed.</summary>
        public async Task AssertNoUpstreamFailureAsync()
        {
            var metrics = await Proxy.Admin.GetStringAsync("/metrics");
            Assert.Equal(0, Sum(metrics, "llmproxy_upstream_errors_total"));
            Assert.Equal(0, Sum(metrics, "llmproxy_retries_total"));
            AssertSample(metrics, "llmproxy_circuit_breaker_state{upstream=\"a\"}", 0);
            AssertSample(metrics, "llmproxy_circuit_breaker_state{upstream=\"b\"}", 0);
        }

        public async ValueTask DisposeAsync()
        {
            await Proxy.DisposeAsync();
            await A.DisposeAsync();
            await B.DisposeAsync();
        }
    }

    [Theory]
    [InlineData(false, true)]
    [InlineData(true, true)]
    [InlineData(false, false)]
    [InlineData(true, false)]
    public async Task Expect100Continue_ClientGetsContinueThenAnswer_BodyIntact(bool chunked, bool retries)
    {
        await using var rig = await Rig.StartAsync(retries);
        await using var raw = await RawClient.ConnectAsync(rig.Port);
        await raw.SendAsync("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nExpect: 100-continue\r\n" +
            (chunked ? "Transfer-Encoding: chunked\r\n\r\n" : $"Content-Length: {Body.Length}\r\n\r\n"));

        // The client holds its body back until it is asked for it.
        var interim = await raw.ReadHeadOnlyAsync(TimeSpan.FromSeconds(10));
        Assert.Equal(100, interim.Status);
        await raw.SendAsync(chunked ? $"{Body.Length:x}\r\n{Body}\r\n0\r\n\r\n" : Body);
        var response = await raw.ReadResponseAsync(TimeSpan.FromSeconds(10));

        Assert.Equal(200, response.Status);
        var seen = Assert.Single(rig.Received);
        Assert.Equal(Body, Encoding.UTF8.GetString(seen.Body));
        await rig.AssertNoUpstreamFailureAsync();
    }

    [Fact]
    public async Task Expect100Continue_FirstMemberFails_BodyReplayedToTheOther()
    {
        await using var rig = await Rig.StartAsync();
        // Round robin: of two requests at least one starts at a, which fails; its body is replayed to b.
        for (var i = 0; i < 2; i++)
        {
            await using var raw = await RawClient.ConnectAsync(rig.Port);
            await raw.SendAsync($"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nX-Fail: a\r\nExpect: 100-continue\r\nContent-Length: {Body.Length}\r\n\r\n");
            Assert.Equal(100, (await raw.ReadHeadOnlyAsync(TimeSpan.FromSeconds(10))).Status);
            await raw.SendAsync(Body);
            var response = await raw.ReadResponseAsync(TimeSpan.FromSeconds(10));
            Assert.Equal(200, response.Status);
            Assert.Contains("X-Upstream: b", response.Head, StringComparison.Ordinal);
        }

        Assert.Equal(2, rig.B.Count);
        Assert.InRange(rig.A.Count, 1, 2);
        Assert.All(rig.Received, r => Assert.Equal(Body, Encoding.UTF8.GetString(r.Body)));
        await AssertSampleAsync(rig.Proxy.Admin, "llmproxy_retries_total{group=\"g\",reason=\"status_5xx\"}", rig.A.Count);
    }

    [Fact]
    public async Task Head_AnswerKeepsContentLength_CarriesNoBody()
    {
        await using var rig = await Rig.StartAsync();
        await using var raw = await RawClient.ConnectAsync(rig.Port);
        await raw.SendAsync("HEAD /v1/models HTTP/1.1\r\nHost: x\r\n\r\n");
        var head = await raw.ReadHeadOnlyAsync(TimeSpan.FromSeconds(10));

        Assert.Equal(200, head.Status);
        Assert.Contains("Content-Length: 16", head.Head, StringComparison.Ordinal);
        // No body followed: the next answer on the connection starts right after the head.
        await raw.SendAsync("GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n");
        var next = await raw.ReadResponseAsync(TimeSpan.FromSeconds(10));
        Assert.Equal(200, next.Status);
        Assert.StartsWith("{\"upstream\":", next.BodyText, StringComparison.Ordinal);
        Assert.Contains(rig.Received, r => r.Method == "HEAD");
    }

    [Fact]
    public async Task AbsoluteFormTarget_GoesToTheConfiguredUpstream_NeverTheHostItNames()
    {
        await using var rig = await Rig.StartAsync();
        await using var decoy = await ScriptedUpstream.StartAsync(ScriptedUpstream.Json("decoy"));
        var authority = $"127.0.0.1:{decoy.Port}";
        await using var raw = await RawClient.ConnectAsync(rig.Port);
        await raw.SendAsync($"GET http://{authority}/v1/models?x=1 HTTP/1.1\r\nHost: {authority}\r\n\r\n");
        Assert.Equal(200, (await raw.ReadResponseAsync(TimeSpan.FromSeconds(10))).Status);
        await raw.SendAsync($"POST https://{authority}/v1/chat/completions HTTP/1.1\r\nHost: {authority}\r\nContent-Length: {Body.Length}\r\n\r\n{Body}");
        Assert.Equal(200, (await raw.ReadResponseAsync(TimeSpan.FromSeconds(10))).Status);

        Assert.Equal(0, decoy.Count);
        var seen = rig.Received.OrderBy(r => r.Method).ToList();
        Assert.Equal(["GET", "POST"], seen.Select(r => r.Method));
        Assert.Equal(("/v1/models", "?x=1"), (seen[0].Path, seen[0].Query));
        Assert.Equal(Body, Encoding.UTF8.GetString(seen[1].Body));
        // The named host is only reported, and the scheme is the connection's, not the one the target claims.
        Assert.All(seen, r => Assert.Equal(authority, r.Header("X-Forwarded-Host")));
        Assert.All(seen, r => Assert.Equal("http", r.Header("X-Forwarded-Proto")));
    }

    /// <summary>Request smuggling: a body length two ways. Kestrel believes Transfer-Encoding (and closes the connection
    /// after the answer) or refuses the request; what hides behind the body never reaches an upstream.</summary>
    [Theory]
    [InlineData("Content-Length: 4\r\nTransfer-Encoding: chunked", 200)]
    [InlineData("Transfer-Encoding: chunked\r\nContent-Length: 40", 200)]
    [InlineData("Content-Length: 5\r\nContent-Length: 5", 400)]
    [InlineData("Content-Length: 5, 40", 400)]
    [InlineData("Transfer-Encoding: chunked, identity", 400)]
    public async Task SmugglingShapes_UpstreamNeverSeesTheHiddenRequest(string framing, int status)
    {
        await using var rig = await Rig.StartAsync();
        await using var raw = await RawClient.ConnectAsync(rig.Port);
        await raw.SendAsync($"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n{framing}\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n");
        var response = await raw.ReadResponseAsync(TimeSpan.FromSeconds(10));

        Assert.Equal(status, response.Status);
        Assert.True(await raw.WaitForCloseAsync(TimeSpan.FromSeconds(5)), "the connection stayed open after an ambiguous body length");
        Assert.DoesNotContain(rig.Received, r => r.Path.Contains("smuggled", StringComparison.Ordinal));
        Assert.All(rig.Received, r => Assert.Empty(r.Body));
        await rig.AssertNoUpstreamFailureAsync();
    }

    /// <summary>Kestrel gives /a%2Fb and /a%252Fb the same decoded path: the URI an upstream keeps for its last path must
    /// not send one as the other.</summary>
    [Fact]
    public async Task EncodedSlashAndEncodedPercent_SameDecodedPath_EachSentAsTheClientSentIt()
    {
        await using var upstream = await ScriptedUpstream.StartAsync(ScriptedUpstream.Json("u"));
        await using var proxy = await TestProxy.StartAsync(TestProxy.Config($"- name: u\n  url: \"{upstream.Url}\"", "- name: u"));

        foreach (var target in new[] { "/v1/a%252Fb", "/v1/a%2Fb", "/v1/a%252Fb" })
        {
            using var response = await proxy.Client.GetAsync(target);
            Assert.Equal(System.Net.HttpStatusCode.OK, response.StatusCode);
        }

        Assert.Equal(["/v1/a%252Fb", "/v1/a%2Fb", "/v1/a%252Fb"], upstream.Received.Select(r => r.RawTarget));
    }

    /// <summary>Kestrel normalises the path (dot segments, percent-decoding except %2F) before the proxy reads it; the
    /// upstream gets that path, re-encoded, and the query as sent (characters a URI may not carry are
    /// percent-encoded). An encoded slash stays one encoded slash, and an encoded percent stays one.</summary>
    [Theory]
    [InlineData("/v1/a%2Fb", "/v1/a%2Fb", "", "/v1/a%2Fb")]
    [InlineData("/v1/models/meta-llama%2fLlama-3%2F8B", "/v1/models/meta-llama%2fLlama-3%2F8B", "", "/v1/models/meta-llama%2fLlama-3%2F8B")]
    [InlineData("/v1/x/../caf%C3%A9%2Fa%20b", "/v1/caf\u00e9%2Fa b", "", "/v1/caf%C3%A9%2Fa%20b")]
    [InlineData("/v1/a%252Fb", "/v1/a%2Fb", "", "/v1/a%252Fb")]
    [InlineData("/v1/100%25", "/v1/100%", "", "/v1/100%25")]
    [InlineData("/v1/%2F%2F%2F", "/v1/%2F%2F%2F", "", "/v1/%2F%2F%2F")]
    [InlineData("/v1/a%2F%20%2f", "/v1/a%2F %2f", "", "/v1/a%2F%20%2f")]
    [InlineData("/v1/../admin/x", "/admin/x", "", "/admin/x")]
    [InlineData("/v1/%2e%2e/%2E%2E/admin", "/admin", "", "/admin")]
    [InlineData("/v1/caf%C3%A9", "/v1/caf\u00e9", "", "/v1/caf%C3%A9")]
    [InlineData("/@evil.example/v1", "/@evil.example/v1", "", "/@evil.example/v1")]
    [InlineData("//evil.example/v1", "//evil.example/v1", "", "//evil.example/v1")]
    [InlineData("/v1/models?q=caf%C3%A9&x", "/v1/models", "?q=caf%C3%A9&x", "/v1/models")]
    [InlineData("/v1/models?q=a#frag", "/v1/models", "?q=a%23frag", "/v1/models")]
    [InlineData("/v1/models?a[]=1&b={x}|", "/v1/models", "?a[]=1&b=%7Bx%7D%7C", "/v1/models")]
    public async Task PathAndQueryShapes_ForwardedToTheConfiguredUpstream(string target, string path, string query, string rawPath)
    {
        await using var rig = await Rig.StartAsync();
        await using var raw = await RawClient.ConnectAsync(rig.Port);
        await raw.SendAsync($"GET {target} HTTP/1.1\r\nHost: x\r\n\r\n");

        Assert.Equal(200, (await raw.ReadResponseAsync(TimeSpan.FromSeconds(10))).Status);
        var seen = Assert.Single(rig.Received);
        Assert.Equal((path, query), (seen.Path, seen.Query));
        Assert.Equal(rawPath + query, seen.RawTarget);
        await rig.AssertNoUpstreamFailureAsync();
    }

    [Fact]
    public async Task Path8KB_Forwarded()
    {
        await using var rig = await Rig.StartAsync();
        var path = "/v1/" + new string('a', 8000);
        await using var raw = await RawClient.ConnectAsync(rig.Port);
        await raw.SendAsync($"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");

        Assert.Equal(200, (await raw.ReadResponseAsync(TimeSpan.FromSeconds(10))).Status);
        Assert.Equal(path, Assert.Single(rig.Received).Path);
    }

    /// <summary>Requests whose headers or body are unusual but HTTP: forwarded, the upstream's answer passed on, never
    /// an upstream verdict.</summary>
    [Theory]
    [InlineData("Content-Type on a GET", "GET /v1/models HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Language: de\r\n\r\n")]
    [InlineData("body on a GET", "GET /v1/models HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")]
    [InlineData("chunked body on a DELETE", "DELETE /v1/files/1 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n")]
    [InlineData("odd Host", "GET /v1/models HTTP/1.1\r\nHost: evil.example:99999\r\n\r\n")]
    [InlineData("empty Host", "GET /v1/models HTTP/1.1\r\nHost:\r\n\r\n")]
    [InlineData("empty header values", "GET /v1/models HTTP/1.1\r\nHost: x\r\nUser-Agent:\r\nAccept:\r\nX-Empty:\r\n\r\n")]
    [InlineData("HTTP/1.0 without Host", "GET /v1/models HTTP/1.0\r\n\r\n")]
    [InlineData("lower-case method", "get /v1/models HTTP/1.1\r\nHost: x\r\n\r\n")]
    [InlineData("unknown method", "PROPFIND /v1/models HTTP/1.1\r\nHost: x\r\n\r\n")]
    [InlineData("request trailer", "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\nAuthorization: Bearer sk-trailer\r\nX-T: caf\u00c3\u00a9\r\n\r\n")]
    public async Task UnusualButValidRequest_Forwarded_NoUpstreamFailure(string shape, string request)
    {
        await using var rig = await Rig.StartAsync();
        for (var i = 0; i < 3; i++)
        {
            await using var raw = await RawClient.ConnectAsync(rig.Port);
            await raw.SendAsync(Encoding.Latin1.GetBytes(request));
            var response = await raw.ReadResponseAsync(TimeSpan.FromSeconds(10));
            Assert.True(response.Status == 200, $"{shape}: {response.Head}\n{response.BodyText}");
        }
        Assert.Equal(3, rig.A.Count + rig.B.Count);
        // A request trailer is never forwarded (it could otherwise override the injected key after the fact).
        Assert.All(rig.Received, r => Assert.DoesNotContain("sk-trailer", string.Join(' ', r.Headers.Values.SelectMany(v => v)), StringComparison.Ordinal));
        await rig.AssertNoUpstreamFailureAsync();
    }

    [Fact]
    public async Task ManySmallHeaders_UnderKestrelsLimit_UpstreamAnswerPassedOn_NoFailure()
    {
        await using var rig = await Rig.StartAsync();
        // 96 headers pass Kestrel's limit of 100; the proxy adds its forwarding headers, so this upstream (Kestrel
        // too) refuses them with 431 — its answer, passed on, which is no failure of the upstream.
        var headers = string.Concat(Enumerable.Range(0, 95).Select(i => $"X-H{i}: v\r\n"));
        await using var raw = await RawClient.ConnectAsync(rig.Port);
        await raw.SendAsync($"GET /v1/models HTTP/1.1\r\nHost: x\r\n{headers}\r\n");

        Assert.Equal(431, (await raw.ReadResponseAsync(TimeSpan.FromSeconds(10))).Status);
        await rig.AssertNoUpstreamFailureAsync();
    }

    [Theory]
    [InlineData("<script>, 999.1.1.1, :::::, ,,, \"\"", "<script>, 999.1.1.1, :::::, ,,, \"\", 127.0.0.1")]
    [InlineData("1.2.3.4\r\nX-Forwarded-For: 5.6.7.8", "1.2.3.4,5.6.7.8, 127.0.0.1")]
    [InlineData("", "127.0.0.1")]
    [InlineData("   ", "127.0.0.1")]
    public async Task ForwardedForFromUntrustedPeer_PeerAppended_NeverBreaksTheRequest(string sent, string forwarded)
    {
        await using var rig = await Rig.StartAsync();
        await using var raw = await RawClient.ConnectAsync(rig.Port);
        await raw.SendAsync($"GET /v1/models HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: {sent}\r\n\r\n");

        Assert.Equal(200, (await raw.ReadResponseAsync(TimeSpan.FromSeconds(10))).Status);
        Assert.Equal(forwarded, Assert.Single(rig.Received).Header("X-Forwarded-For"));
    }
}
