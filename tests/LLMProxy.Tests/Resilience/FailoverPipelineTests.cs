using System.Net;
using System.Text.Json;
using LLMProxy.Tests.Forwarding;
using LLMProxy.Tests.Infrastructure;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Time.Testing;

namespace LLMProxy.Tests.Resilience;

public class FailoverPipelineTests
{
    private static async Task<string> HealthAsync(TestProxy proxy) => await (await proxy.Admin.GetAsync("/health")).Content.ReadAsStringAsync();

    private static string Breaker(int minRequests = 4, int cooldown = 30000) =>
        $"breaker:\n  threshold: 0.5\n  minRequests: {minRequests}\n  cooldown: {cooldown}\n  interval: 60000\n  maxRequests: 1";

    /// <summary>A stream admitted while the breaker was closed that ends well during half-open is no trial: with
    /// <c>maxRequests: 1</c> and the one trial still out, the breaker must stay half-open (and full), not close.</summary>
    [Fact]
    public async Task LongStreamFromBeforeTheBreakerOpened_EndsDuringHalfOpen_DoesNotCloseIt()
    {
        // One gate per request: the stream (1) and the trial (4) end when the test says.
        var gates = Enumerable.Range(0, 5).Select(_ => new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously)).ToArray();
        var started = 0;
        await using var ups = await Upstreams.StartAsync(("u", async ctx =>
        {
            var n = Interlocked.Increment(ref started);
            if (n is not (1 or 4))
            {
                await ScriptedUpstream.Json("u", n is 2 or 3 ? 500 : 200)(ctx); // 2 and 3 open the breaker
                return;
            }
            ctx.Response.ContentType = "text/event-stream";
            await ctx.Response.WriteAsync("data: {\"n\":1}\n\n");
            await ctx.Response.Body.FlushAsync();
            await gates[n].Task.WaitAsync(TimeSpan.FromSeconds(20));
            await ctx.Response.WriteAsync("data: [DONE]\n\n");
        }));
        var time = new FakeTimeProvider(DateTimeOffset.UtcNow);
        await using var proxy = await TestProxy.StartAsync(TestProxy.Config(ups.Yaml(_ => Breaker(minRequests: 2, cooldown: 1000)), ups.Members()), time);

        using var stream = await proxy.Client.SendAsync(new HttpRequestMessage(HttpMethod.Post, "/v1/chat/completions")
        {
            Content = new StringContent("{\"stream\":true}"),
        }, HttpCompletionOption.ResponseHeadersRead);
        Assert.Equal(HttpStatusCode.OK, stream.StatusCode);
        for (var i = 0; i < 2; i++)
        {
            using var failed = await proxy.Client.GetAsync("/v1/models");
            Assert.Equal(HttpStatusCode.InternalServerError, failed.StatusCode);
        }
        time.Advance(TimeSpan.FromMilliseconds(1000));
        using var trial = await proxy.Client.SendAsync(new HttpRequestMessage(HttpMethod.Post, "/v1/chat/completions")
        {
            Content = new StringContent("{\"stream\":true}"),
        }, HttpCompletionOption.ResponseHeadersRead);
        Assert.Equal(HttpStatusCode.OK, trial.StatusCode); // the half-open period's one trial, still streaming

        // The stream admitted while closed ends well; the trial is still out.
        gates[1].SetResult();
        Assert.Contains("[DONE]", await stream.Content.ReadAsStringAsync());
        using (var during = await proxy.Client.GetAsync("/v1/models"))
        {
            Assert.Equal(HttpStatusCode.ServiceUnavailable, during.StatusCode); // still half-open, its one trial out
        }
        gates[4].SetResult();
        Assert.Contains("[DONE]", await trial.Content.ReadAsStringAsync());
        await Eventually.WaitUntilAsync(async () =>
        {
            using var after = await proxy.Client.GetAsync("/v1/models");
            return after.StatusCode == HttpStatusCode.OK; // the trial's success closed it
        }, TimeSpan.FromSeconds(10));
    }

    [Fact]
    public async Task FailingUpstream_HiddenByFailover_CutOffByBreaker_ReadmittedAfterCooldown()
    {
        var healthy = 0;
        await using var ups = await Upstreams.StartAsync(
            ("bad", ctx => Volatile.Read(ref healthy) == 1 ? ScriptedUpstream.Json("bad")(ctx) : ScriptedUpstream.Json("bad", 500)(ctx)),
            ("good", ScriptedUpstream.Json("good")));
        var time = new FakeTimeProvider(DateTimeOffset.UtcNow);
        await using var proxy = await TestProxy.StartAsync(TestProxy.Config(ups.Yaml(_ => Breaker(minRequests: 4, cooldown: 1000)), ups.Members()), time);

        for (var i = 0; i < 20; i++)
        {
            using var r = await proxy.Client.PostAsync("/v1/chat/completions", new StringContent("{\"i\":" + i + "}"));
            Assert.Equal(HttpStatusCode.OK, r.StatusCode);
            Assert.Equal("good", r.UpstreamName());
        }
        // The breaker opened after a few failures, so "bad" stopped receiving traffic.
        Assert.InRange(ups["bad"].Count, 4, 6);
        var metrics = await proxy.Admin.GetStringAsync("/metrics");
        AssertSample(metrics, "llmproxy_circuit_breaker_state{upstream=\"bad\"}", 2);
        AssertSample(metrics, "llmproxy_circuit_breaker_state_changes_total{upstream=\"bad\",from=\"closed\",to=\"open\"}", 1);
        Assert.True(Sample(metrics, "llmproxy_retries_total{group=\"g\",reason=\"status_5xx\"}") >= 1);
        Assert.Contains(proxy.Logs.Entries, e => e.Message.Contains("attempts=2"));

        // Still open just before the cooldown ends: "bad" gets nothing.
        Volatile.Write(ref healthy, 1);
        time.Advance(TimeSpan.FromMilliseconds(999));
        var before = ups["bad"].Count;
        for (var i = 0; i < 4; i++)
        {
            using var r = await proxy.Client.GetAsync("/");
            Assert.Equal("good", r.UpstreamName());
        }
        Assert.Equal(before, ups["bad"].Count);

        // The upstream recovered; once the cooldown is over, the half-open trial reaches it and closes the breaker.
        time.Advance(TimeSpan.FromMilliseconds(2));
        var names = new List<string?>();
        for (var i = 0; i < 2; i++)
        {
            using var r = await proxy.Client.GetAsync("/");
            names.Add(r.UpstreamName());
        }
        Assert.Contains("bad", names);
        await AssertSampleAsync(proxy.Admin, "llmproxy_circuit_breaker_state{upstream=\"bad\"}", 0);
    }

    [Fact]
    public async Task Upstream429_ParkedForRetryAfter_ThenBack()
    {
        var limited = 1;
        await using var ups = await Upstreams.StartAsync(
            ("busy", async ctx =>
            {
                if (Interlocked.Exchange(ref limited, 0) == 1)
                {
                    ctx.Response.Headers.RetryAfter = "1";
                    await ScriptedUpstream.Json("busy", 429)(ctx);
                    return;
                }
                await ScriptedUpstream.Json("busy")(ctx);
            }),
            ("free", ScriptedUpstream.Json("free")));
        var time = new FakeTimeProvider(DateTimeOffset.UtcNow);
        await using var proxy = await TestProxy.StartAsync(TestProxy.Config(ups.Yaml(_ => Breaker()), ups.Members()), time);

        using (var first = await proxy.Client.GetAsync("/"))
        {
            Assert.Equal(HttpStatusCode.OK, first.StatusCode);
            Assert.Equal("free", first.UpstreamName());
        }
        Assert.Contains("\"coolingUntil\":\"", await HealthAsync(proxy));
        for (var i = 0; i < 6; i++)
        {
            using var r = await proxy.Client.GetAsync("/");
            Assert.Equal("free", r.UpstreamName());
        }
        var metrics = await proxy.Admin.GetStringAsync("/metrics");
        AssertSample(metrics, "llmproxy_upstream_cooldowns_total{upstream=\"busy\"}", 1);
        // 429 is an account signal, not a breaker failure.
        AssertSample(metrics, "llmproxy_circuit_breaker_state{upstream=\"busy\"}", 0);

        // Retry-After: 1 — parked for exactly that long, then back in the rotation.
        time.Advance(TimeSpan.FromMilliseconds(1001));
        var names = new List<string?>();
        for (var i = 0; i < 2; i++)
        {
            using var r = await proxy.Client.GetAsync("/");
            names.Add(r.UpstreamName());
        }
        Assert.Contains("busy", names);
    }

    [Fact]
    public async Task TransportFailure_RetriedOnOtherMember()
    {
        var dead = StreamingAndErrorTests.FreePort();
        await using var good = await ScriptedUpstream.StartAsync(ScriptedUpstream.Json("good"));
        var yaml = $"- name: dead\n  url: \"http://127.0.0.1:{dead}\"\n- name: good\n  url: \"{good.Url}\"";
        await using var proxy = await TestProxy.StartAsync(TestProxy.Config(yaml, "- name: dead\n- name: good"));

        for (var i = 0; i < 4; i++)
        {
            using var r = await proxy.Client.PostAsync("/v1/chat/completions", new StringContent("{\"body\":\"kept for replay\"}"));
            Assert.Equal(HttpStatusCode.OK, r.StatusCode);
        }
        Assert.All(good.Received, r => Assert.Equal("{\"body\":\"kept for replay\"}", System.Text.Encoding.UTF8.GetString(r.Body)));
        await AssertSampleAsync(proxy.Admin, "llmproxy_upstream_errors_total{group=\"g\",upstream=\"dead\",error=\"connect\"}", 4); // round robin starts every request on "dead"
    }

    [Fact]
    public async Task AllAttemptsFail_ClientGetsLastUpstreamResponseUnchanged()
    {
        Func<HttpContext, Task> unavailable(string name) => async ctx =>
        {
            ctx.Response.StatusCode = 503;
            ctx.Response.Headers["X-Upstream"] = name;
            await ctx.Response.WriteAsync($"upstream {name} says no");
        };
        await using var ups = await Upstreams.StartAsync(("a", unavailable("a")), ("b", unavailable("b")));
        await using var proxy = await TestProxy.StartAsync(TestProxy.Config(ups.Yaml(), ups.Members()));

        using var r = await proxy.Client.GetAsync("/");

        Assert.Equal(HttpStatusCode.ServiceUnavailable, r.StatusCode);
        var body = await r.Content.ReadAsStringAsync();
        Assert.Equal($"upstream {r.UpstreamName()} says no", body);
        Assert.Equal(1, ups["a"].Count);
        Assert.Equal(1, ups["b"].Count);
    }

    [Fact]
    public async Task AllMembersBreakersOpen_503WithRetryAfter()
    {
        await using var ups = await Upstreams.StartAsync(("a", ScriptedUpstream.Json("a", 500)), ("b", ScriptedUpstream.Json("b", 500)));
        await using var proxy = await TestProxy.StartAsync(TestProxy.Config(ups.Yaml(_ => Breaker(minRequests: 2, cooldown: 30000)), ups.Members()));

        for (var i = 0; i < 3; i++)
        {
            using var _ = await proxy.Client.GetAsync("/");
        }
        using var r = await proxy.Client.GetAsync("/");

        await StreamingAndErrorTests.AssertErrorBody(r, HttpStatusCode.ServiceUnavailable, "no_available_upstream");
        var retryAfter = int.Parse(r.Headers.GetValues("Retry-After").Single());
        Assert.InRange(retryAfter, 1, 30);
        using var health = await proxy.Admin.GetAsync("/health");
        Assert.Equal(HttpStatusCode.ServiceUnavailable, health.StatusCode);
        using var doc = JsonDocument.Parse(await health.Content.ReadAsStringAsync());
        Assert.All(doc.RootElement.GetProperty("groups")[0].GetProperty("upstreams").EnumerateArray(),
            u => Assert.Equal("open", u.GetProperty("breaker").GetString()));
    }
}
