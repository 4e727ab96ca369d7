using System.Net;
using System.Net.Sockets;
using System.Text;
using System.Text.Json;
using LLMProxy.Tests.Infrastructure;
using Microsoft.AspNetCore.Http;

namespace LLMProxy.Tests.Forwarding;

public class StreamingAndErrorTests
{
    private static string One(string url, string extra = "") => $"""
        - name: u1
          url: "{url}"
        {extra}
        """;

    internal static async Task AssertErrorBody(HttpResponseMessage response, HttpStatusCode status, string code)
    {
        Assert.Equal(status, response.StatusCode);
        Assert.Equal("application/json", response.Content.Headers.ContentType?.MediaType);
        var text = await response.Content.ReadAsStringAsync();
        using var doc = JsonDocument.Parse(text); // exactly one JSON document: a second body would not parse
        var error = doc.RootElement.GetProperty("error");
        Assert.Equal(code, error.GetProperty("code").GetString());
        Assert.Equal("llmproxy_error", error.GetProperty("type").GetString());
        Assert.False(string.IsNullOrEmpty(error.GetProperty("message").GetString()));
    }

    internal static int FreePort()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        return ((IPEndPoint)listener.LocalEndpoint).Port;
    }

    [Fact]
    public async Task Sse_FirstEventReachesClientBeforeUpstreamFinishes()
    {
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        await using var upstream = await ScriptedUpstream.StartAsync(async ctx =>
        {
            ctx.Response.ContentType = "text/event-stream";
            await ctx.Response.WriteAsync("data: {\"n\":1}\n\n");
            await ctx.Response.Body.FlushAsync();
            // The upstream only continues once the client has seen the first event.
            await release.Task.WaitAsync(TimeSpan.FromSeconds(20));
            await ctx.Response.WriteAsync("data: {\"n\":2}\n\ndata: [DONE]\n\n");
        });
        await using var proxy = await TestProxy.StartAsync(TestProxy.Config(One(upstream.Url), "- name: u1"));

        using var response = await proxy.Client.SendAsync(new HttpRequestMessage(HttpMethod.Post, "/v1/chat/completions")
        {
            Content = new StringContent("{\"stream\":true}"),
        }, HttpCompletionOption.ResponseHeadersRead);
        using var reader = new StreamReader(await response.Content.ReadAsStreamAsync());
        var first = await reader.ReadLineAsync().WaitAsync(TimeSpan.FromSeconds(10));
        Assert.Equal("data: {\"n\":1}", first);
        release.SetResult();
        var rest = await reader.ReadToEndAsync();
        Assert.Contains("data: [DONE]", rest);
        Assert.Equal("text/event-stream", response.Content.Headers.ContentType?.MediaType);
    }

    [Fact]
    public async Task Sse_ClientDisconnect_CancelsUpstreamRequest()
    {
        var upstreamAborted = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        await using var upstream = await ScriptedUpstream.StartAsync(async ctx =>
        {
            ctx.RequestAborted.Register(() => upstreamAborted.TrySetResult());
            ctx.Response.ContentType = "text/event-stream";
            try
            {
                for (var i = 0; i < 600; i++)
                {
                    await ctx.Response.WriteAsync($"data: {i}\n\n", ctx.RequestAborted);
                    await ctx.Response.Body.FlushAsync(ctx.RequestAborted);
                    await Task.Delay(50, ctx.RequestAborted);
                }
            }
            catch (OperationCanceledException)
            {
            }
        });
        await using var proxy = await TestProxy.StartAsync(TestProxy.Config(One(upstream.Url), "- name: u1"));

        var response = await proxy.Client.SendAsync(new HttpRequestMessage(HttpMethod.Get, "/stream"), HttpCompletionOption.ResponseHeadersRead);
        var stream = await response.Content.ReadAsStreamAsync();
        var buffer = new byte[64];
        Assert.True(await stream.ReadAsync(buffer) > 0);
        response.Dispose(); // the client goes away mid-stream

        await upstreamAborted.Task.WaitAsync(TimeSpan.FromSeconds(10));
    }

    [Fact]
    public async Task Sse_UpstreamDiesMidStream_ClientSeesAbortNotCleanEnd()
    {
        // The upstream dies once the client has the answer's head: a fixed pause instead raced a busy machine, where the
        // reset overtook a head the proxy had not read yet and the client got a 502.
        var headRead = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        await using var upstream = await ScriptedUpstream.StartAsync(ScriptedUpstream.SseThen("data: partial\n\n", headRead.Task));
        await using var proxy = await TestProxy.StartAsync(TestProxy.Config(One(upstream.Url), "- name: u1"));

        using var response = await proxy.Client.SendAsync(new HttpRequestMessage(HttpMethod.Get, "/stream"), HttpCompletionOption.ResponseHeadersRead);
        headRead.TrySetResult();
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        var stream = await response.Content.ReadAsStreamAsync();
        await StreamAssert.EndsAbruptlyAsync(stream);
        var metrics = await proxy.Admin.GetStringAsync("/metrics");
        AssertSample(metrics, "llmproxy_upstream_errors_total{group=\"g\",upstream=\"u1\",error=\"stream\"}", 1);
    }

    [Fact]
    public async Task Stream_LongerThanRequestTimeout_WithShortGaps_Completes()
    {
        await using var upstream = await ScriptedUpstream.StartAsync(async ctx =>
        {
            ctx.Response.ContentType = "text/event-stream";
            for (var i = 0; i < 30; i++)
            {
                await ctx.Response.WriteAsync($"data: {i}\n\n");
                await ctx.Response.Body.FlushAsync();
                await Task.Delay(100);
            }
            await ctx.Response.WriteAsync("data: [DONE]\n\n");
        });
        await using var proxy = await TestProxy.StartAsync(TestProxy.Config(One(upstream.Url), "- name: u1", groupExtra: """
            httpClient:
              timeout:
                request: 2000
            """, forwardExtra: """
            timeout:
              write: 2000
            """));

        string body;
        try { body = await proxy.Client.GetStringAsync("/stream"); }
        catch (Exception ex) { throw new InvalidOperationException("proxy log:\n" + proxy.Logs.AllText, ex); }
        Assert.Contains("data: 29", body);
        Assert.EndsWith("data: [DONE]\n\n", body);
    }

    [Fact]
    public async Task Stream_IdleGapBeyondRequestTimeout_AbortsClient()
    {
        await using var upstream = await ScriptedUpstream.StartAsync(async ctx =>
        {
            ctx.Response.ContentType = "text/event-stream";
            await ctx.Response.WriteAsync("data: 0\n\n");
            await ctx.Response.Body.FlushAsync();
            await Task.Delay(TimeSpan.FromSeconds(10), ctx.RequestAborted);
        });
        // The same timeout also bounds the wait for the answer's head: 500 ms let a busy machine's first request time out
        // before its head came (a clean 504 instead of the broken stream under test); 2 s leaves room for that.
        await using var proxy = await TestProxy.StartAsync(TestProxy.Config(One(upstream.Url), "- name: u1", groupExtra: """
            httpClient:
              timeout:
                request: 2000
            """));

        using var response = await proxy.Client.SendAsync(new HttpRequestMessage(HttpMethod.Get, "/stream"), HttpCompletionOption.ResponseHeadersRead);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        var stream = await response.Content.ReadAsStreamAsync();
        await StreamAssert.EndsAbruptlyAsync(stream);
    }

    [Fact]
    public async Task DeadUpstream_Returns502Json()
    {
        var port = FreePort();
        await using var proxy = await TestProxy.StartAsync(TestProxy.Config(One($"http://127.0.0.1:{port}"), "- name: u1"));

        using var response = await proxy.Client.PostAsync("/v1/chat/completions", new StringContent("{}"));

        await AssertErrorBody(response, HttpStatusCode.BadGateway, "upstream_unavailable");
        Assert.True(response.Headers.Contains("X-Request-ID"));
        // The client can read the answer before the handler has accounted for it: wait for the count.
        await AssertSampleAsync(proxy.Admin, "llmproxy_http_requests_total{forward=\"fwd\",method=\"POST\",status=\"502\"}", 1);
        await AssertSampleAsync(proxy.Admin, "llmproxy_upstream_errors_total{group=\"g\",upstream=\"u1\",error=\"connect\"}", 1);
    }

    [Fact]
    public async Task SlowUpstreamHeaders_Returns504Json()
    {
        await using var upstream = await ScriptedUpstream.StartAsync(async ctx =>
        {
            await Task.Delay(TimeSpan.FromSeconds(10), ctx.RequestAborted);
        });
        await using var proxy = await TestProxy.StartAsync(TestProxy.Config(One(upstream.Url), "- name: u1", groupExtra: """
            httpClient:
              timeout:
                request: 300
            """));

        using var response = await proxy.Client.GetAsync("/slow");

        await AssertErrorBody(response, HttpStatusCode.GatewayTimeout, "upstream_timeout");
    }

    [Fact]
    public async Task BodyOverLimit_WithContentLength_Returns413Json()
    {
        await using var upstream = await ScriptedUpstream.StartAsync(ScriptedUpstream.Json("u1"));
        await using var proxy = await TestProxy.StartAsync(TestProxy.Config(One(upstream.Url), "- name: u1", forwardExtra: "maxRequestBodySize: 1000"));

        using var response = await proxy.Client.PostAsync("/v1/chat/completions", new ByteArrayContent(new byte[5000]));

        await AssertErrorBody(response, HttpStatusCode.RequestEntityTooLarge, "request_too_large");
        Assert.Equal(0, upstream.Count);
    }

    [Fact]
    public async Task BodyOverLimit_Chunked_Returns413Json()
    {
        await using var upstream = await ScriptedUpstream.StartAsync(ScriptedUpstream.Json("u1"));
        await using var proxy = await TestProxy.StartAsync(TestProxy.Config(One(upstream.Url), "- name: u1", forwardExtra: "maxRequestBodySize: 1000"));

        var content = new StreamContent(new MemoryStream(new byte[5000]));
        using var request = new HttpRequestMessage(HttpMethod.Post, "/v1/chat/completions") { Content = content };
        request.Headers.TransferEncodingChunked = true;
        using var response = await proxy.Client.SendAsync(request);

        await AssertErrorBody(response, HttpStatusCode.RequestEntityTooLarge, "request_too_large");
    }
}
