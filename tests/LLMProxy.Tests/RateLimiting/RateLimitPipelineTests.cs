using System.Net;
using LLMProxy.Tests.Forwarding;
using LLMProxy.Tests.Infrastructure;
using Microsoft.Extensions.Time.Testing;

namespace LLMProxy.Tests.RateLimiting;

public class RateLimitPipelineTests
{
    private const string ForwardLimit = "ratelimit:\n  perSecond: 1\n  burst: 3";

    [Fact]
    public async Task ForwardLimit_OverBurst_429WithRetryAfterAndJson()
    {
        await using var up = await ScriptedUpstream.StartAsync(ScriptedUpstream.Json("u"));
        // Fake time: the bucket must not refill between the requests, however slow the machine is.
        await using var proxy = await TestProxy.StartAsync(TestProxy.Config($"- name: u\n  url: \"{up.Url}\"", "- name: u", forwardExtra: ForwardLimit),
            new FakeTimeProvider(DateTimeOffset.UtcNow));

        for (var i = 0; i < 3; i++)
        {
            using var ok = await proxy.Client.GetAsync("/");
            Assert.Equal(HttpStatusCode.OK, ok.StatusCode);
        }
        using var limited = await proxy.Client.GetAsync("/");

        await StreamingAndErrorTests.AssertErrorBody(limited, HttpStatusCode.TooManyRequests, "rate_limited");
        Assert.True(int.Parse(limited.Headers.GetValues("Retry-After").Single()) >= 1);
        Assert.Equal(3, up.Count);
        AssertSample(await proxy.Admin.GetStringAsync("/metrics"), "llmproxy_rate_limit_rejections_total{forward=\"fwd\",limit_type=\"client\"}", 1);
    }

    /// <summary>A per-second limit frees its next token in 1/rate s: Retry-After can only say a whole second, so the
    /// proxy also sends <c>retry-after-ms</c>, which the official OpenAI and Anthropic SDKs wait instead.</summary>
    [Fact]
    public async Task ForwardLimit_429_RetryAfterMs_HasTheBucketsOwnWait()
    {
        await using var up = await ScriptedUpstream.StartAsync(ScriptedUpstream.Json("u"));
        await using var proxy = await TestProxy.StartAsync(TestProxy.Config($"- name: u\n  url: \"{up.Url}\"", "- name: u",
            forwardExtra: "ratelimit:\n  perSecond: 20\n  burst: 1"), new FakeTimeProvider(DateTimeOffset.UtcNow));

        using (var ok = await proxy.Client.GetAsync("/"))
        {
            Assert.Equal(HttpStatusCode.OK, ok.StatusCode);
        }
        using var limited = await proxy.Client.GetAsync("/");
        await StreamingAndErrorTests.AssertErrorBody(limited, HttpStatusCode.TooManyRequests, "rate_limited");
        Assert.Equal("1", limited.Headers.GetValues("Retry-After").Single());
        Assert.InRange(long.Parse(limited.Headers.GetValues("retry-after-ms").Single()), 1, 50);
    }

    [Fact]
    public async Task ForwardLimit_SpoofedForwardedFor_FromUntrustedPeer_DoesNotBypass()
    {
        await using var up = await ScriptedUpstream.StartAsync(ScriptedUpstream.Json("u"));
        await using var proxy = await TestProxy.StartAsync(TestProxy.Config($"- name: u\n  url: \"{up.Url}\"", "- name: u", forwardExtra: ForwardLimit));

        var statuses = new List<HttpStatusCode>();
        for (var i = 0; i < 6; i++)
        {
            using var request = new HttpRequestMessage(HttpMethod.Get, "/");
            request.Headers.TryAddWithoutValidation("X-Forwarded-For", $"198.51.100.{i}");
            using var r = await proxy.Client.SendAsync(request);
            statuses.Add(r.StatusCode);
        }
        Assert.Equal(3, statuses.Count(s => s == HttpStatusCode.TooManyRequests));
    }

    [Fact]
    public async Task ForwardLimit_TrustedProxy_ForwardedForSelectsBucket()
    {
        await using var up = await ScriptedUpstream.StartAsync(ScriptedUpstream.Json("u"));
        await using var proxy = await TestProxy.StartAsync(TestProxy.Config($"- name: u\n  url: \"{up.Url}\"", "- name: u",
            forwardExtra: ForwardLimit + "\ntrustedProxies:\n  - \"127.0.0.0/8\""));

        for (var i = 0; i < 6; i++)
        {
            using var request = new HttpRequestMessage(HttpMethod.Get, "/");
            request.Headers.TryAddWithoutValidation("X-Forwarded-For", $"198.51.100.{i}");
            using var r = await proxy.Client.SendAsync(request);
            Assert.Equal(HttpStatusCode.OK, r.StatusCode);
        }
    }

    [Fact]
    public async Task UpstreamLimit_LimitedAccountShedsLoadOntoOthers()
    {
        await using var ups = await Upstreams.StartAsync(("slow", ScriptedUpstream.Json("slow")), ("fast", ScriptedUpstream.Json("fast")));
        await using var proxy = await TestProxy.StartAsync(TestProxy.Config(
            ups.Yaml(n => n == "slow" ? "ratelimit:\n  perSecond: 1\n  burst: 1" : ""), ups.Members()));

        var watch = System.Diagnostics.Stopwatch.StartNew();
        for (var i = 0; i < 10; i++)
        {
            using var r = await proxy.Client.GetAsync("/");
            Assert.Equal(HttpStatusCode.OK, r.StatusCode);
        }
        // One token to start with, one more per elapsed second: the rest went to the unlimited member.
        var allowed = 1 + (int)Math.Ceiling(watch.Elapsed.TotalSeconds);
        Assert.InRange(ups["slow"].Count, 1, allowed);
        Assert.Equal(10, ups["slow"].Count + ups["fast"].Count);
        Assert.True(ups["fast"].Count >= 5);
    }

    [Fact]
    public async Task UpstreamLimit_EveryMemberOutOfTokens_429UpstreamRateLimited()
    {
        await using var ups = await Upstreams.StartAsync(("a", ScriptedUpstream.Json("a")), ("b", ScriptedUpstream.Json("b")));
        await using var proxy = await TestProxy.StartAsync(TestProxy.Config(
            ups.Yaml(_ => "ratelimit:\n  perSecond: 1\n  burst: 1"), ups.Members()));

        using var r1 = await proxy.Client.GetAsync("/");
        using var r2 = await proxy.Client.GetAsync("/");
        using var r3 = await proxy.Client.GetAsync("/");

        Assert.Equal(HttpStatusCode.OK, r1.StatusCode);
        Assert.Equal(HttpStatusCode.OK, r2.StatusCode);
        await StreamingAndErrorTests.AssertErrorBody(r3, HttpStatusCode.TooManyRequests, "upstream_rate_limited");
        Assert.True(r3.Headers.Contains("Retry-After"));
        AssertSample(await proxy.Admin.GetStringAsync("/metrics"), "llmproxy_rate_limit_rejections_total{forward=\"fwd\",limit_type=\"upstream\"}", 1);
    }
}
