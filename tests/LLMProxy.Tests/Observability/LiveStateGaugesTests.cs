using System.Net;
using LLMProxy.Tests.Infrastructure;
using Microsoft.Extensions.Time.Testing;

namespace LLMProxy.Tests.Observability;

/// <summary>The gauges the dashboard and alerts read for live state (SPEC §16): configured budget limits, seconds of 429
/// cool-down left, and how many members of a group could take a request now — set on every scrape from the runtime.</summary>
public class LiveStateGaugesTests
{
    [Fact]
    public async Task Scrape_ShowsBudgetLimits_CoolDownLeft_AndAvailableMembers_AsTheyChange()
    {
        await using var ups = await Upstreams.StartAsync(
            ("revoked", ctx => ScriptedUpstream.Json("revoked", 401)(ctx)),
            ("busy", ctx =>
            {
                ctx.Response.Headers.RetryAfter = "7";
                return ScriptedUpstream.Json("busy", 429)(ctx);
            }),
            ("ok", ScriptedUpstream.Json("ok")));
        const string auth = "auth:\n  type: bearer\n  token: sk-test-0001";
        var time = new FakeTimeProvider(DateTimeOffset.UtcNow);
        await using var proxy = await TestProxy.StartAsync(TestProxy.Config(
            ups.Yaml(n => n == "ok" ? auth + "\nratelimit:\n  perSecond: 100\n  requestsPerMinute: 50\n  tokensPerMinute: 90000\n  maxConcurrent: 4" : auth),
            ups.Members(), groupExtra: "retry:\n  attempts: 3"), time);

        var before = await proxy.Admin.GetStringAsync("/metrics");
        AssertSample(before, "llmproxy_group_upstreams{group=\"g\"}", 3);
        AssertSample(before, "llmproxy_group_available_upstreams{group=\"g\"}", 3);
        AssertSample(before, "llmproxy_upstream_budget_limit{upstream=\"ok\",budget=\"requests_per_minute\"}", 50);
        AssertSample(before, "llmproxy_upstream_budget_limit{upstream=\"ok\",budget=\"tokens_per_minute\"}", 90000);
        AssertSample(before, "llmproxy_upstream_budget_limit{upstream=\"ok\",budget=\"concurrent\"}", 4);
        Assert.DoesNotContain(Parse(before), s => s.Name == "llmproxy_upstream_budget_limit" && s.Label("upstream") != "ok");

        for (var i = 0; i < 3; i++)
        {
            using var r = await proxy.Client.GetAsync("/");
            Assert.Equal(HttpStatusCode.OK, r.StatusCode);
        }
        await AssertSampleAsync(proxy.Admin, "llmproxy_upstream_cooldowns_total{upstream=\"busy\"}", 1);
        var during = await proxy.Admin.GetStringAsync("/metrics");
        AssertSample(during, "llmproxy_upstream_disabled{upstream=\"revoked\"}", 1);
        AssertSample(during, "llmproxy_upstream_cooldown_remaining_seconds{upstream=\"busy\"}", 7);
        AssertSample(during, "llmproxy_upstream_cooldown_remaining_seconds{upstream=\"ok\"}", 0);
        AssertSample(during, "llmproxy_group_available_upstreams{group=\"g\"}", 1);
        // used = limit - remaining: three requests took three of the 50 requests a minute.
        AssertSample(during, "llmproxy_upstream_budget_remaining{upstream=\"ok\",budget=\"requests_per_minute\"}", 47);

        time.Advance(TimeSpan.FromSeconds(3));
        AssertSample(await proxy.Admin.GetStringAsync("/metrics"), "llmproxy_upstream_cooldown_remaining_seconds{upstream=\"busy\"}", 4);

        time.Advance(TimeSpan.FromSeconds(5));
        var after = await proxy.Admin.GetStringAsync("/metrics");
        AssertSample(after, "llmproxy_upstream_cooldown_remaining_seconds{upstream=\"busy\"}", 0);
        AssertSample(after, "llmproxy_group_available_upstreams{group=\"g\"}", 2);
    }
}
