using System.Net;
using System.Text;
using LLMProxy.Tests.Infrastructure;
using Microsoft.AspNetCore.Http;

namespace LLMProxy.Tests.Forwarding;

/// <summary>SPEC §13.6: a broken SSE answer ends with one honest error event and no clean end; debug headers.</summary>
public class HonestStreamTests
{
    private const string Notice =
        "data: {\"error\":{\"message\":\"The upstream connection broke before the answer was complete.\",\"type\":\"llmproxy_error\",\"code\":\"upstream_broken_stream\"}}\n\n";

    /// <summary>An SSE upstream that sends <paramref name="sent"/>, flushes, then drops the connection.</summary>
    private static Func<HttpContext, Task> BreaksAfter(string sent) => async ctx =>
    {
        ctx.Response.ContentType = "text/event-stream";
        await ctx.Response.WriteAsync(sent);
        await ctx.Response.Body.FlushAsync();
        await Task.Delay(100);
        ctx.Abort();
    };

    /// <summary>Everything the client received, and whether the body ended cleanly (false = it broke).</summary>
    private static async Task<(string Text, bool Clean)> DrainAsync(HttpResponseMessage response)
    {
        var stream = await response.Content.ReadAsStreamAsync();
        var received = new MemoryStream();
        var buffer = new byte[1024];
        try
        {
            int n;
            while ((n = await stream.ReadAsync(buffer).AsTask().WaitAsync(TimeSpan.FromSeconds(10))) > 0)
            {
                received.Write(buffer, 0, n);
            }
            return (Encoding.UTF8.GetString(received.ToArray()), true);
        }
        catch (IOException)
        {
            return (Encoding.UTF8.GetString(received.ToArray()), false);
        }
    }

    private static async Task<(HttpResponseMessage Response, string Text, bool Clean)> StreamAsync(TestProxy proxy)
    {
        var response = await proxy.Client.SendAsync(new HttpRequestMessage(HttpMethod.Post, "/v1/chat/completions")
        {
            Content = new StringContent("{\"stream\":true}", Encoding.UTF8, "application/json"),
        }, HttpCompletionOption.ResponseHeadersRead);
        var (text, clean) = await DrainAsync(response);
        return (response, text, clean);
    }

    [Fact]
    public async Task Sse_BreaksBetweenEvents_OneFinalErrorEvent_ThenAbort_NoDone()
    {
        await using var ups = await Upstreams.StartAsync(("u1", BreaksAfter("data: {\"n\":1}\n\n")));
        await using var proxy = await TestProxy.StartAsync(TestProxy.Config(ups.Yaml(), ups.Members()));

        var (response, text, clean) = await StreamAsync(proxy);
        using var _ = response;

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.False(clean, "the client saw a clean end of a broken stream");
        Assert.Equal("data: {\"n\":1}\n\n" + Notice, text);
        Assert.DoesNotContain("[DONE]", text);
        await Eventually.WaitUntilAsync(() => Task.FromResult(proxy.Logs.AllText.Contains("outcome=upstream_broken_stream")), TimeSpan.FromSeconds(5));
    }

    [Fact]
    public async Task Sse_BreaksInsideAnEvent_ErrorEventStartsAfterABlankLine()
    {
        await using var ups = await Upstreams.StartAsync(("u1", BreaksAfter("data: {\"n\":1}\n\ndata: {\"n\":2,\"te")));
        await using var proxy = await TestProxy.StartAsync(TestProxy.Config(ups.Yaml(), ups.Members()));

        var (response, text, clean) = await StreamAsync(proxy);
        using var _ = response;

        Assert.False(clean);
        // The cut event is closed by the blank line, so the error is an event of its own.
        Assert.Equal("data: {\"n\":1}\n\ndata: {\"n\":2,\"te\n\n" + Notice, text);
    }

    [Fact]
    public async Task Json_BreaksMidBody_NoEventAdded_StillAborted()
    {
        await using var ups = await Upstreams.StartAsync(("u1", async ctx =>
        {
            ctx.Response.ContentType = "application/json";
            await ctx.Response.WriteAsync("{\"choices\":[");
            await ctx.Response.Body.FlushAsync();
            await Task.Delay(100);
            ctx.Abort();
        }));
        await using var proxy = await TestProxy.StartAsync(TestProxy.Config(ups.Yaml(), ups.Members()));

        var (response, text, clean) = await StreamAsync(proxy);
        using var _ = response;

        Assert.False(clean);
        Assert.Equal("{\"choices\":[", text);
    }

    [Fact]
    public async Task Sse_CompleteAnswer_Untouched()
    {
        await using var ups = await Upstreams.StartAsync(("u1", async ctx =>
        {
            ctx.Response.ContentType = "text/event-stream";
            await ctx.Response.WriteAsync("data: {\"n\":1}\n\ndata: [DONE]\n\n");
        }));
        await using var proxy = await TestProxy.StartAsync(TestProxy.Config(ups.Yaml(), ups.Members()));

        var (response, text, clean) = await StreamAsync(proxy);
        using var _ = response;

        Assert.True(clean);
        Assert.Equal("data: {\"n\":1}\n\ndata: [DONE]\n\n", text);
    }

    [Fact]
    public async Task DebugHeaders_NameAndAttempts_OnByDefault_CountRetries()
    {
        await using var ups = await Upstreams.StartAsync(("bad", ScriptedUpstream.Json("bad", 503)), ("good", ScriptedUpstream.Json("good")));
        await using var proxy = await TestProxy.StartAsync(TestProxy.Config(ups.Yaml(), ups.Members(), "balance:\n  strategy: roundrobin"));

        var seen = new List<(string Upstream, string Attempts)>();
        for (var i = 0; i < 4; i++)
        {
            using var r = await proxy.Client.GetAsync("/v1/models");
            Assert.Equal(HttpStatusCode.OK, r.StatusCode);
            seen.Add((r.Headers.GetValues("X-LLMProxy-Upstream").Single(), r.Headers.GetValues("X-LLMProxy-Attempts").Single()));
        }

        // Every request tries bad first (the rotation also turns on the retry's pick) and is answered by good.
        Assert.All(seen, s => Assert.Equal(("good", "2"), s));
    }

    [Fact]
    public async Task DebugHeaders_NeverTheKeyOrUrl_OffWhenDisabled()
    {
        await using var ups = await Upstreams.StartAsync(("u1", ScriptedUpstream.Json("u1")));
        var yaml = ups.Yaml(_ => "auth:\n  type: bearer\n  token: sk-secret-123");
        await using (var on = await TestProxy.StartAsync(TestProxy.Config(yaml, ups.Members())))
        {
            using var r = await on.Client.GetAsync("/v1/models");
            var all = string.Join('\n', r.Headers.Select(h => h.Key + ": " + string.Join(",", h.Value)));
            Assert.Equal("u1", r.Headers.GetValues("X-LLMProxy-Upstream").Single());
            Assert.Equal("1", r.Headers.GetValues("X-LLMProxy-Attempts").Single());
            Assert.DoesNotContain("sk-secret-123", all);
            Assert.DoesNotContain(ups["u1"].Url, all);
        }

        await using var off = await TestProxy.StartAsync(TestProxy.Config(yaml, ups.Members(), forwardExtra: "debugHeaders: false"));
        using var quiet = await off.Client.GetAsync("/v1/models");
        Assert.Equal(HttpStatusCode.OK, quiet.StatusCode);
        Assert.False(quiet.Headers.Contains("X-LLMProxy-Upstream"));
        Assert.False(quiet.Headers.Contains("X-LLMProxy-Attempts"));
    }
}
