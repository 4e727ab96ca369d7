using System.Diagnostics;
using System.Net;
using System.Text;
using LLMProxy.Tests.Infrastructure;
using Microsoft.AspNetCore.Http;
using static LLMProxy.Tests.Reliability.ReliabilityKit;

namespace LLMProxy.Tests.Reliability;

/// <summary>
/// Bad, slow and vanishing clients, mostly on raw sockets: the proxy answers what it promises, cancels the upstream
/// call of a client that left, returns every in-progress gauge to zero, and keeps serving everybody else.
/// </summary>
public class ClientInputTests
{
    private const int ReadTimeoutMs = 1000;
    private const int MaxBody = 10_000;
    private static readonly TimeSpan Margin = TimeSpan.FromSeconds(4);

    private static string Forward(string extra = "") => $"""
        maxRequestBodySize: {MaxBody}
        timeout:
          read: {ReadTimeoutMs}
        {extra}
        """;

    /// <summary>An upstream that reads the whole body, then answers; it reports a request whose body broke off.</summary>
    private sealed class WatchingUpstream : IAsyncDisposable
    {
        public TaskCompletionSource<string> Aborted { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
        /// <summary>The request reached the upstream (its body may still sit in the proxy's send buffer).</summary>
        public TaskCompletionSource Called { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
        public required ScriptedUpstream Server { get; init; }

        public static async Task<WatchingUpstream> StartAsync(Func<HttpContext, Task>? respond = null)
        {
            WatchingUpstream? self = null;
            var server = await ScriptedUpstream.StartAsync(async ctx =>
            {
                var w = self!;
                w.Called.TrySetResult();
                ctx.RequestAborted.Register(() => w.Aborted.TrySetResult(ctx.Request.Headers["X-Request-ID"].ToString()));
                var buffer = new byte[4096];
                try
                {
                    while (await ctx.Request.Body.ReadAsync(buffer, ctx.RequestAborted) > 0)
                    {
                    }
                }
                catch (Exception ex) when (ex is IOException or OperationCanceledException or BadHttpRequestException)
                {
                    w.Aborted.TrySetResult(ctx.Request.Headers["X-Request-ID"].ToString());
                    return;
                }
                await (respond ?? ScriptedUpstream.Json("u1"))(ctx);
            }, recordBody: false);
            self = new WatchingUpstream { Server = server };
            return self;
        }

        public ValueTask DisposeAsync() => Server.DisposeAsync();
    }

    private static string One(string url) => $"- name: u1\n  url: \"{url}\"";

    private static async Task AssertServesAsync(TestProxy proxy)
    {
        using var r = await proxy.Client.SendAsync(Chat());
        Assert.Equal(HttpStatusCode.OK, r.StatusCode);
    }

    private static string AccessLineFor(TestProxy proxy, string requestId) =>
        Assert.Single(AccessLines(proxy.Logs), l => l.Contains("request_id=" + requestId));

    [Theory]
    [InlineData("one 40 KB header", 431)]
    [InlineData("150 headers", 431)]
    [InlineData("16 KB request line", 414)]
    public async Task OversizedHead_RejectedByKestrel_UpstreamUntouched_ProxyKeepsServing(string shape, int status)
    {
        await using var upstream = await ScriptedUpstream.StartAsync(ScriptedUpstream.Json("u1"));
        await using var proxy = await TestProxy.StartAsync(TestProxy.Config(One(upstream.Url), "- name: u1", forwardExtra: Forward()));
        var head = shape switch
        {
            "one 40 KB header" => "GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + new string('a', 40 * 1024) + "\r\n\r\n",
            "150 headers" => "GET / HTTP/1.1\r\nHost: x\r\n" + string.Concat(Enumerable.Range(0, 150).Select(i => $"X-H{i}: v\r\n")) + "\r\n",
            _ => "GET /" + new string('p', 16 * 1024) + " HTTP/1.1\r\nHost: x\r\n\r\n",
        };

        await using var raw = await RawClient.ConnectAsync(RawClient.PortOf(proxy.ForwardUrl()));
        await raw.SendAsync(head);
        var response = await raw.ReadResponseAsync(TimeSpan.FromSeconds(10));

        Assert.Equal(status, response.Status);
        Assert.Equal(0, upstream.Count);
        await AssertServesAsync(proxy);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task BodyOverLimit_RawClient_413Json_ProxyKeepsServing(bool chunked)
    {
        await using var upstream = await WatchingUpstream.StartAsync();
        await using var proxy = await TestProxy.StartAsync(TestProxy.Config(One(upstream.Server.Url), "- name: u1", forwardExtra: Forward()));
        var body = new string('x', MaxBody * 2);

        await using var raw = await RawClient.ConnectAsync(RawClient.PortOf(proxy.ForwardUrl()));
        if (chunked)
        {
            await raw.SendAsync("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nX-Request-ID: big-chunked\r\nTransfer-Encoding: chunked\r\n\r\n");
            for (var i = 0; i < body.Length; i += 1000)
            {
                await raw.SendAsync($"3e8\r\n{body.Substring(i, 1000)}\r\n");
            }
            await raw.SendAsync("0\r\n\r\n");
        }
        else
        {
            await raw.SendAsync($"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nX-Request-ID: big-length\r\nContent-Length: {body.Length}\r\n\r\n{body}");
        }
        var response = await raw.ReadResponseAsync(TimeSpan.FromSeconds(10));

        Assert.Equal(413, response.Status);
        Assert.Contains("Content-Type: application/json", response.Head);
        Assert.Contains("\"code\":\"request_too_large\"", response.BodyText);
        if (!chunked)
        {
            // A declared length over the limit is refused before any upstream is chosen.
            Assert.Equal(0, upstream.Server.Count);
        }
        await AssertSampleAsync(proxy.Admin, "llmproxy_http_requests_total{forward=\"fwd\",method=\"POST\",status=\"413\"}", 1);
        await AssertServesAsync(proxy);
        await AssertIdleAsync(proxy.Admin);
    }

    [Fact]
    public async Task SlowLorisHeaders_ClosedAfterReadTimeout_OtherClientsUnaffected()
    {
        await using var upstream = await ScriptedUpstream.StartAsync(ScriptedUpstream.Json("u1"));
        await using var proxy = await TestProxy.StartAsync(TestProxy.Config(One(upstream.Url), "- name: u1", forwardExtra: Forward()));
        var port = RawClient.PortOf(proxy.ForwardUrl());

        const int Loris = 20;
        var clock = Stopwatch.StartNew();
        var closedAt = new TimeSpan[Loris];
        var loris = Enumerable.Range(0, Loris).Select(async i =>
        {
            await using var raw = await RawClient.ConnectAsync(port);
            await raw.SendAsync("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n");
            var closed = raw.WaitForCloseAsync(TimeSpan.FromMilliseconds(ReadTimeoutMs) + Margin);
            // A header line every 200 ms: never finishing the head, never idle for long (bounded loop).
            for (var k = 0; k < 40 && !closed.IsCompleted; k++)
            {
                try
                {
                    await raw.SendAsync($"X-Slow-{k}: {k}\r\n");
                }
                catch (System.Net.Sockets.SocketException)
                {
                    break;
                }
                await Task.WhenAny(closed, Task.Delay(200));
            }
            Assert.True(await closed, $"slow-loris connection {i} still open after {clock.Elapsed}");
            closedAt[i] = clock.Elapsed;
        }).ToArray();

        // Meanwhile normal clients are served at once.
        for (var i = 0; i < 10; i++)
        {
            var one = Stopwatch.StartNew();
            await AssertServesAsync(proxy);
            Assert.True(one.Elapsed < TimeSpan.FromSeconds(3), $"a normal request took {one.Elapsed} next to slow-loris clients");
        }
        await Task.WhenAll(loris);

        // Closed by RequestHeadersTimeout (= timeout.read), not earlier and not at Kestrel's 30 s default.
        Assert.All(closedAt, t => Assert.InRange(t, TimeSpan.FromMilliseconds(ReadTimeoutMs * 0.8), TimeSpan.FromMilliseconds(ReadTimeoutMs) + Margin));
        Assert.Equal(10, upstream.Count);
        await AssertIdleAsync(proxy.Admin);
    }

    [Theory]
    [InlineData(1)] // one member: the body streams to the upstream as it arrives
    [InlineData(2)] // two members: the body is buffered for replay before any upstream is called
    public async Task SlowBody_BelowMinDataRate_Aborted_UpstreamCancelled_OtherClientsUnaffected(int members)
    {
        await using var watched = await WatchingUpstream.StartAsync();
        await using var spare = await ScriptedUpstream.StartAsync(ScriptedUpstream.Json("u2"));
        var yaml = One(watched.Server.Url) + (members == 2 ? $"\n- name: u2\n  url: \"{spare.Url}\"" : "");
        await using var proxy = await TestProxy.StartAsync(TestProxy.Config(yaml, members == 2 ? "- name: u1\n- name: u2" : "- name: u1", forwardExtra: Forward()));

        await using var raw = await RawClient.ConnectAsync(RawClient.PortOf(proxy.ForwardUrl()));
        await raw.SendAsync("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nX-Request-ID: slow-body\r\nContent-Length: 5000\r\n\r\n{\"a\":\"");
        var clock = Stopwatch.StartNew();
        var closed = raw.WaitForCloseAsync(TimeSpan.FromSeconds(1.5) + Margin);
        // Meanwhile normal clients are served at once.
        var others = Task.Run(async () =>
        {
            for (var i = 0; i < 5; i++)
            {
                var one = Stopwatch.StartNew();
                await AssertServesAsync(proxy);
                Assert.True(one.Elapsed < TimeSpan.FromSeconds(3), $"a normal request took {one.Elapsed} next to a slow body");
            }
        });
        // 4 bytes/s against a minimum of 240 bytes/s after a 1.5 s grace period.
        for (var k = 0; k < 40 && !closed.IsCompleted; k++)
        {
            try
            {
                await raw.SendAsync("a");
            }
            catch (System.Net.Sockets.SocketException)
            {
                break;
            }
            await Task.WhenAny(closed, Task.Delay(250));
        }
        Assert.True(await closed, "the slow body was never cut off");
        Assert.InRange(clock.Elapsed, TimeSpan.FromSeconds(1), TimeSpan.FromSeconds(1.5) + Margin);
        await others;

        if (members == 1)
        {
            // The body was streaming into an upstream call: that call is cancelled, not left waiting.
            Assert.Equal("slow-body", await watched.Aborted.Task.WaitAsync(TimeSpan.FromSeconds(10)));
        }
        else
        {
            // Still buffering for replay when it was cut: no upstream ever saw it.
            Assert.DoesNotContain(watched.Server.Received.Concat(spare.Received), r => r.Header("X-Request-ID") == "slow-body");
        }
        await AssertServesAsync(proxy);
        await AssertIdleAsync(proxy.Admin);
        Assert.DoesNotContain("outcome=ok", AccessLineFor(proxy, "slow-body"));
    }

    [Theory]
    [InlineData("not http", "GARBAGE\r\n\r\n", 400)]
    [InlineData("no Host", "GET / HTTP/1.1\r\n\r\n", 400)]
    [InlineData("bad Content-Length", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n", 400)]
    [InlineData("space in header name", "GET / HTTP/1.1\r\nHost: x\r\nBad Name: v\r\n\r\n", 400)]
    [InlineData("NUL in header value", "GET / HTTP/1.1\r\nHost: x\r\nX-A: a\0b\r\n\r\n", 400)]
    [InlineData("TLS hello on plain port", "\u0016\u0003\u0001\u0002\u0000\u0001\u0000\u0001\u00fc\u0003\u0003\r\n\r\n", 400)]
    [InlineData("unknown HTTP version", "GET / HTTP/7.1\r\nHost: x\r\n\r\n", 505)]
    [InlineData("chunk size not hex", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n", 400)]
    [InlineData("NUL in the path", "GET /v1/a%00b HTTP/1.1\r\nHost: x\r\n\r\n", 400)]
    [InlineData("raw non-ASCII in the target", "GET /v1/models?q=caf\u00c3\u00a9 HTTP/1.1\r\nHost: x\r\n\r\n", 400)]
    [InlineData("absolute-form naming another host than Host", "GET http://evil.example/v1/models HTTP/1.1\r\nHost: x\r\n\r\n", 400)]
    [InlineData("authority-form outside CONNECT", "GET evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\n\r\n", 405)]
    [InlineData("Host with a space", "GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400)]
    [InlineData("Host with user info", "GET / HTTP/1.1\r\nHost: user@evil.example\r\n\r\n", 400)]
    [InlineData("two Host headers", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400)]
    [InlineData("non-ASCII header name", "GET / HTTP/1.1\r\nHost: x\r\nX-\u00c3\u00a4: 1\r\n\r\n", 400)]
    [InlineData("Transfer-Encoding that does not end in chunked", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: identity\r\n\r\n{}", 400)]
    [InlineData("Content-Length beyond 64 bits", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999\r\n\r\n{}", 400)]
    public async Task MalformedHttp_RejectedByKestrel_UpstreamUntouched_ProxyKeepsServing(string what, string request, int status)
    {
        await using var upstream = await ScriptedUpstream.StartAsync(ScriptedUpstream.Json("u1"));
        await using var proxy = await TestProxy.StartAsync(TestProxy.Config(One(upstream.Url), "- name: u1", forwardExtra: Forward()));

        await using var raw = await RawClient.ConnectAsync(RawClient.PortOf(proxy.ForwardUrl()));
        await raw.SendAsync(Encoding.Latin1.GetBytes(request));
        var response = await raw.ReadResponseAsync(TimeSpan.FromSeconds(10));

        Assert.True(response.Status == status, $"{what}: got {response.Status}");
        // A chunked body that fails mid-way may already have reached the upstream, which then sees it break.
        if (!what.StartsWith("chunk", StringComparison.Ordinal))
        {
            Assert.Equal(0, upstream.Count);
        }
        Assert.True(await raw.WaitForCloseAsync(TimeSpan.FromSeconds(5)), "the connection stayed open after a malformed request");
        await AssertServesAsync(proxy);
        await AssertIdleAsync(proxy.Admin);
    }

    [Theory]
    [InlineData(1, false)]
    [InlineData(1, true)]
    [InlineData(2, false)]
    public async Task ClientDisconnectsMidBody_UpstreamCallCancelled_GaugesReturnToZero(int members, bool chunked)
    {
        await using var watched = await WatchingUpstream.StartAsync();
        await using var spare = await ScriptedUpstream.StartAsync(ScriptedUpstream.Json("u2"));
        var yaml = One(watched.Server.Url) + (members == 2 ? $"\n- name: u2\n  url: \"{spare.Url}\"" : "");
        await using var proxy = await TestProxy.StartAsync(TestProxy.Config(yaml, members == 2 ? "- name: u1\n- name: u2" : "- name: u1", forwardExtra: Forward()));

        var raw = await RawClient.ConnectAsync(RawClient.PortOf(proxy.ForwardUrl()));
        var part = new string('b', 2000);
        if (chunked)
        {
            await raw.SendAsync($"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nX-Request-ID: gone-mid-body\r\nTransfer-Encoding: chunked\r\n\r\n7d0\r\n{part}\r\n");
        }
        else
        {
            await raw.SendAsync($"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nX-Request-ID: gone-mid-body\r\nContent-Length: 9000\r\n\r\n{part}");
        }
        if (members == 1)
        {
            await watched.Called.Task.WaitAsync(TimeSpan.FromSeconds(10));
        }
        else
        {
            // The body is being buffered for replay: wait until the proxy is inside the request.
            await WaitUntilAsync(async () => Sum(await proxy.Admin.GetStringAsync("/metrics"), "llmproxy_active_connections") == 1, TimeSpan.FromSeconds(10));
        }
        raw.Reset();

        if (members == 1)
        {
            Assert.Equal("gone-mid-body", await watched.Aborted.Task.WaitAsync(TimeSpan.FromSeconds(10)));
        }
        await AssertIdleAsync(proxy.Admin);
        await WaitUntilAsync(() => Task.FromResult(AccessLines(proxy.Logs).Any(l => l.Contains("request_id=gone-mid-body"))), TimeSpan.FromSeconds(10));
        Assert.Contains("outcome=client_aborted", AccessLineFor(proxy, "gone-mid-body"));
        if (members == 2)
        {
            Assert.Equal(0, watched.Server.Count + spare.Count);
        }
        await AssertServesAsync(proxy);
        // A client leaving is expected: it never reaches the proxy's boundary catch for surprises. (Kestrel itself logs
        // an Error for a Content-Length body cut by a reset: "automatic draining ... Reading is already in progress".)
        Assert.DoesNotContain(proxy.Logs.Entries, e => e.Category.StartsWith("LLMProxy", StringComparison.Ordinal) && e.Level >= Microsoft.Extensions.Logging.LogLevel.Error);
    }

    [Fact]
    public async Task ClientResetsMidStream_UpstreamCallCancelled_GaugesReturnToZero()
    {
        var streaming = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var aborted = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        await using var upstream = await ScriptedUpstream.StartAsync(async ctx =>
        {
            if (ctx.Request.Path == "/v1/models")
            {
                await ScriptedUpstream.Json("u1")(ctx);
                return;
            }
            ctx.RequestAborted.Register(() => aborted.TrySetResult());
            ctx.Response.ContentType = "text/event-stream";
            try
            {
                for (var i = 0; i < 400; i++)
                {
                    await ctx.Response.WriteAsync($"data: {i}\n\n", ctx.RequestAborted);
                    await ctx.Response.Body.FlushAsync(ctx.RequestAborted);
                    streaming.TrySetResult();
                    await Task.Delay(50, ctx.RequestAborted);
                }
            }
            catch (OperationCanceledException)
            {
            }
        });
        await using var proxy = await TestProxy.StartAsync(TestProxy.Config(One(upstream.Url), "- name: u1", forwardExtra: Forward()));

        var raw = await RawClient.ConnectAsync(RawClient.PortOf(proxy.ForwardUrl()));
        await raw.SendAsync("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nX-Request-ID: gone-mid-stream\r\nContent-Length: 2\r\n\r\n{}");
        await streaming.Task.WaitAsync(TimeSpan.FromSeconds(10));
        raw.Reset();

        await aborted.Task.WaitAsync(TimeSpan.FromSeconds(10));
        await AssertIdleAsync(proxy.Admin);
        await WaitUntilAsync(() => Task.FromResult(AccessLines(proxy.Logs).Any(l => l.Contains("request_id=gone-mid-stream"))), TimeSpan.FromSeconds(10));
        var line = AccessLineFor(proxy, "gone-mid-stream");
        Assert.Contains("outcome=client_aborted", line);
        Assert.Contains(" 499 ", line);
        var metrics = await proxy.Admin.GetStringAsync("/metrics");
        // The client left: that is not the upstream's failure.
        Assert.Equal(0, Sum(metrics, "llmproxy_upstream_errors_total"));
        using var models = await proxy.Client.GetAsync("/v1/models");
        Assert.Equal(HttpStatusCode.OK, models.StatusCode);
    }

    public static TheoryData<string, byte[]> InvalidBodies() => new()
    {
        { "truncated object", "{\"model\":\"m\",\"messages\":["u8.ToArray() },
        { "not json", "hello, upstream"u8.ToArray() },
        { "invalid UTF-8", [0x7B, 0xFF, 0xFE, 0xC3, 0x28, 0x7D] },
        { "NUL bytes", [0x7B, 0x00, 0x00, 0x7D] },
        { "BOM then json", [0xEF, 0xBB, 0xBF, 0x7B, 0x7D] },
        { "deep nesting", Encoding.ASCII.GetBytes(new string('[', 5000) + new string(']', 5000)) },
        { "duplicate keys and trailing comma", "{\"a\":1,\"a\":2,}"u8.ToArray() },
        { "CRLF and SSE lookalike", "data: [DONE]\r\n\r\n"u8.ToArray() },
    };

    [Theory]
    [MemberData(nameof(InvalidBodies))]
    public async Task InvalidJsonBody_PassedThroughByteExact_BufferedAndStreamed(string what, byte[] body)
    {
        await using var ups = await Upstreams.StartAsync(("a", ScriptedUpstream.Json("a")), ("b", ScriptedUpstream.Json("b")));
        await using var proxy = await TestProxy.StartAsync(TestProxy.Config(ups.Yaml(), ups.Members()));

        // With Content-Length: buffered for replay. Chunked: streamed through.
        foreach (var chunked in new[] { false, true })
        {
            using var request = new HttpRequestMessage(HttpMethod.Post, "/v1/chat/completions")
            {
                Content = chunked ? new StreamContent(new MemoryStream(body)) : new ByteArrayContent(body),
            };
            request.Content.Headers.ContentType = new System.Net.Http.Headers.MediaTypeHeaderValue("application/json");
            request.Headers.TransferEncodingChunked = chunked;
            using var response = await proxy.Client.SendAsync(request);
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        }

        var received = ups["a"].Received.Concat(ups["b"].Received).ToList();
        Assert.Equal(2, received.Count);
        Assert.All(received, r => Assert.True(body.AsSpan().SequenceEqual(r.Body), $"{what}: body changed on the way"));
        Assert.All(received, r => Assert.Equal("application/json", r.Header("Content-Type")));
    }
}
