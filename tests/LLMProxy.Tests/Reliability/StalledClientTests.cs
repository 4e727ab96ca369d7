using System.Diagnostics;
using System.Net.Sockets;
using System.Text;
using LLMProxy.Tests.Infrastructure;
using Microsoft.AspNetCore.Http;
using Xunit.Abstractions;
using static LLMProxy.Tests.Reliability.ReliabilityKit;

namespace LLMProxy.Tests.Reliability;

/// <summary>
/// Clients that stop half way, on raw sockets: one that stops reading a streamed answer, one whose upload stalls after a
/// fast start, one that keeps uploading a body far over the limit. Each is cut (or answered) after the forward's own
/// timeout, well before <c>httpClient.timeout.request</c> (5 minutes by default); the upstream sees its request end, the
/// gauges return to zero, and the upstream is never blamed.
/// </summary>
public class StalledClientTests(ITestOutputHelper output)
{
    private const int TimeoutMs = 1000;
    private const int ReadBodyLimit = LLMProxy.Forwarding.Stages.ReadBodyStage.ReplayLimit;
    /// <summary>Far below the 5-minute request timeout that used to pin these clients, far above the timeout itself.</summary>
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(15);

    /// <summary>A breaker that opens on the first failure: any blame on the upstream would show in its state.</summary>
    private static string Upstream(string url) => $"""
        - name: u1
          url: "{url}"
          breaker:
            threshold: 0.01
            minRequests: 1
        """;

    private static async Task AssertUpstreamNotBlamedAsync(TestProxy proxy)
    {
        var metrics = await proxy.Admin.GetStringAsync("/metrics");
        Assert.True(Sum(metrics, "llmproxy_upstream_errors_total") == 0, Lines(metrics, "llmproxy_upstream_errors_total"));
        AssertSample(metrics, "llmproxy_circuit_breaker_state{upstream=\"u1\"}", 0);
    }

    private static async Task<string> AccessLineAsync(TestProxy proxy, string requestId)
    {
        await WaitUntilAsync(() => Task.FromResult(AccessLines(proxy.Logs).Any(l => l.Contains("request_id=" + requestId))), TimeSpan.FromSeconds(10));
        return Assert.Single(AccessLines(proxy.Logs), l => l.Contains("request_id=" + requestId));
    }

    [Fact]
    public async Task NonReadingClient_CutAfterWriteTimeout_UpstreamAborted_GaugesReturnToZero()
    {
        var aborted = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        await using var upstream = await ScriptedUpstream.StartAsync(async ctx =>
        {
            ctx.RequestAborted.Register(() => aborted.TrySetResult());
            ctx.Response.ContentType = "text/event-stream";
            var chunk = Encoding.ASCII.GetBytes("data: " + new string('x', 16 * 1024) + "\n\n");
            try
            {
                // Writes until cancelled; bounded (320 MB) so a proxy that never cuts fails the test instead of hanging it.
                for (var i = 0; i < 20_000; i++)
                {
                    await ctx.Response.Body.WriteAsync(chunk, ctx.RequestAborted);
                    await ctx.Response.Body.FlushAsync(ctx.RequestAborted);
                }
            }
            catch (Exception ex) when (ex is OperationCanceledException or IOException)
            {
            }
        });
        await using var proxy = await TestProxy.StartAsync(TestProxy.Config(Upstream(upstream.Url), "- name: u1",
            forwardExtra: $"timeout:\n  write: {TimeoutMs}"));

        await using var raw = await RawClient.ConnectAsync(RawClient.PortOf(proxy.ForwardUrl()));
        await raw.SendAsync("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nX-Request-ID: deaf-reader\r\nContent-Length: 2\r\n\r\n{}");
        var head = await raw.ReadHeadOnlyAsync(Bound);
        Assert.Equal(200, head.Status);
        var clock = Stopwatch.StartNew();

        // The client reads nothing more. The proxy's buffers fill, its write to the client stays pending, and after
        // timeout.write the connection is cut: the upstream sees its request aborted.
        await aborted.Task.WaitAsync(Bound);
        var cutAfter = clock.Elapsed;
        Assert.True(await raw.WaitForCloseAsync(Bound), "the client connection stayed open");

        await AssertIdleAsync(proxy.Admin);
        await AssertUpstreamNotBlamedAsync(proxy);
        Assert.Contains("outcome=client_aborted", await AccessLineAsync(proxy, "deaf-reader"));
        Assert.Contains(proxy.Logs.Entries, e => e.Message.Contains("stopped reading", StringComparison.Ordinal));
        output.WriteLine($"timeout.write {TimeoutMs} ms: upstream aborted {cutAfter.TotalMilliseconds:F0} ms after the client stopped reading");
    }

    /// <summary>An upstream that reads the whole request body before answering, and reports a body that broke off.</summary>
    private static Task<ScriptedUpstream> BodyReadingUpstreamAsync(TaskCompletionSource aborted) => ScriptedUpstream.StartAsync(async ctx =>
    {
        ctx.RequestAborted.Register(() => aborted.TrySetResult());
        var buffer = new byte[16 * 1024];
        try
        {
            while (await ctx.Request.Body.ReadAsync(buffer, ctx.RequestAborted) > 0)
            {
            }
        }
        catch (Exception ex) when (ex is IOException or OperationCanceledException or BadHttpRequestException)
        {
            aborted.TrySetResult();
            return;
        }
        await ScriptedUpstream.Json("u1")(ctx);
    }, recordBody: false);

    [Theory]
    [InlineData(1)] // one member: the body streams to the upstream as it arrives
    [InlineData(2)] // two members: the body is buffered for replay before any upstream is called
    public async Task StalledUpload_AfterFastStart_408AfterReadTimeout_UpstreamNotBlamed(int members)
    {
        var aborted = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        await using var watched = await BodyReadingUpstreamAsync(aborted);
        await using var spare = await ScriptedUpstream.StartAsync(ScriptedUpstream.Json("u2"));
        var yaml = Upstream(watched.Url) + (members == 2 ? $"\n- name: u2\n  url: \"{spare.Url}\"" : "");
        await using var proxy = await TestProxy.StartAsync(TestProxy.Config(yaml, members == 2 ? "- name: u1\n- name: u2" : "- name: u1",
            forwardExtra: $"maxRequestBodySize: 1000000\ntimeout:\n  read: {TimeoutMs}"));

        // 100 KB at once, then silence: by Kestrel's average-rate arithmetic (240 B/s) this client would be allowed minutes.
        await using var raw = await RawClient.ConnectAsync(RawClient.PortOf(proxy.ForwardUrl()));
        await raw.SendAsync("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nX-Request-ID: stalled-upload\r\nContent-Length: 200000\r\n\r\n");
        await raw.SendAsync(Encoding.ASCII.GetBytes(new string('a', 100_000)));
        var clock = Stopwatch.StartNew();

        var response = await raw.ReadResponseAsync(Bound);
        var answeredAfter = clock.Elapsed;

        Assert.Equal(408, response.Status);
        Assert.Contains("\"code\":\"request_timeout\"", response.BodyText);
        Assert.True(answeredAfter >= TimeSpan.FromMilliseconds(TimeoutMs * 0.8), $"answered after {answeredAfter}, before timeout.read");
        output.WriteLine($"timeout.read {TimeoutMs} ms: 408 {answeredAfter.TotalMilliseconds:F0} ms after the upload stalled");
        if (members == 1)
        {
            // The body was streaming into an upstream call: that call ends, it is not left waiting for the rest.
            await aborted.Task.WaitAsync(Bound);
        }
        else
        {
            Assert.Equal(0, watched.Count + spare.Count);
        }
        await AssertIdleAsync(proxy.Admin);
        await AssertUpstreamNotBlamedAsync(proxy);
        Assert.Contains("outcome=request_timeout", await AccessLineAsync(proxy, "stalled-upload"));
        // After the answer the connection is not kept for the rest of a body that never comes.
        Assert.True(await raw.WaitForCloseAsync(Bound), "the connection stayed open after the 408");
    }

    /// <summary>With <c>httpClient.timeout.request</c> below the forward's <c>timeout.read</c>, YARP's activity timeout fires
    /// first while the streamed upload waits on the client: still the client's slowness, answered with one JSON 408 —
    /// not a bodiless 408 counted as a client that left.</summary>
    [Theory]
    [InlineData(1000)]            // streamed to the upstream as it arrives
    [InlineData(5 * 1024 * 1024)] // read up to the replay limit, then streamed behind what was read
    public async Task StalledUpload_RequestTimeoutBelowReadTimeout_Json408_UpstreamNotBlamed(int sentFirst)
    {
        var aborted = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        await using var watched = await BodyReadingUpstreamAsync(aborted);
        await using var proxy = await TestProxy.StartAsync(TestProxy.Config(Upstream(watched.Url), "- name: u1",
            groupExtra: $"httpClient:\n  timeout:\n    request: {TimeoutMs}", forwardExtra: "maxRequestBodySize: 20000000"));

        await using var raw = await RawClient.ConnectAsync(RawClient.PortOf(proxy.ForwardUrl()));
        // As JSON, the body is read up to the replay limit before any attempt; otherwise (one member) it streams at once.
        var json = sentFirst > ReadBodyLimit ? "Content-Type: application/json\r\n" : "";
        await raw.SendAsync($"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nX-Request-ID: slow-upload\r\n{json}Transfer-Encoding: chunked\r\n\r\n");
        await raw.SendAsync($"{sentFirst:x}\r\n" + new string('a', sentFirst) + "\r\n");

        var response = await raw.ReadResponseAsync(Bound);
       

        Assert.Equal(408, response.Status);
        Assert.Contains("\"code\":\"request_timeout\"", response.BodyText);
        Assert.Contains("X-Request-ID: slow-upload", response.Head, StringComparison.OrdinalIgnoreCase);
        await aborted.Task.WaitAsync(Bound);
        await AssertIdleAsync(proxy.Admin);
        await AssertUpstreamNotBlamedAsync(proxy);
        Assert.Contains("outcome=request_timeout", await AccessLineAsync(proxy, "slow-upload"));
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task BodyOverLimit_ClientStillUploading_Reads413WithoutReset(bool chunked)
    {
        var aborted = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        await using var upstream = await BodyReadingUpstreamAsync(aborted);
        await using var proxy = await TestProxy.StartAsync(TestProxy.Config(Upstream(upstream.Url), "- name: u1",
            forwardExtra: "maxRequestBodySize: 10000"));

        // 16 MiB, far more than the socket buffers hold: the proxy answers long before the client is done writing,
        // and the client (like most SDKs) reads the answer only after its last write.
        const int Piece = 64 * 1024;
        const int Pieces = 256;
        var piece = Encoding.ASCII.GetBytes(new string('z', Piece));
        await using var raw = await RawClient.ConnectAsync(RawClient.PortOf(proxy.ForwardUrl()));
        var head = chunked
            ? "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nX-Request-ID: too-large\r\nTransfer-Encoding: chunked\r\n\r\n"
            : $"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nX-Request-ID: too-large\r\nContent-Length: {Piece * Pieces}\r\n\r\n";
        try
        {
            await raw.SendAsync(head);
            for (var i = 0; i < Pieces; i++)
            {
                if (chunked)
                {
                    await raw.SendAsync($"{Piece:x}\r\n");
                }
                await raw.SendAsync(piece);
                if (chunked)
                {
                    await raw.SendAsync("\r\n");
                }
            }
            if (chunked)
            {
                await raw.SendAsync("0\r\n\r\n");
            }
        }
        catch (SocketException ex)
        {
            Assert.Fail($"the upload broke ({ex.SocketErrorCode}) before the client could read the 413");
        }

        var response = await raw.ReadResponseAsync(Bound);

        Assert.Equal(413, response.Status);
        Assert.Contains("Content-Type: application/json", response.Head);
        Assert.Contains("\"code\":\"request_too_large\"", response.BodyText);
        if (!chunked)
        {
            Assert.Equal(0, upstream.Count); // a declared length over the limit is refused before any upstream is chosen
        }
        else if (upstream.Count > 0)
        {
            await aborted.Task.WaitAsync(Bound); // the streamed body broke off at the limit: the upstream call ended
        }
        await AssertIdleAsync(proxy.Admin);
        await AssertUpstreamNotBlamedAsync(proxy);
        Assert.Contains(" 413 ", await AccessLineAsync(proxy, "too-large"));
    }
}
