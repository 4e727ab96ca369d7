using System.Net;
using LLMProxy.Tests.Infrastructure;
using Microsoft.Extensions.Time.Testing;

namespace LLMProxy.Tests.Admin;

/// <summary>SPEC §16: a reload keeps, for everything whose config did not change, its live state.</summary>
public class ReloadKeepsStateTests
{
    /// <summary>The <c>upstreams:</c> entries of some of <paramref name="ups"/>.</summary>
    private static string Declare(Upstreams ups, params string[] names) =>
        string.Join('\n', names.Select(n => $"- name: {n}\n  url: \"{ups[n].Url}\""));

    private static async Task ReloadAsync(TestProxy proxy)
    {
        using var reload = await proxy.Admin.PostAsync("/api/v1/reload", null);
        Assert.Equal(HttpStatusCode.OK, reload.StatusCode);
    }

    private static async Task<string> GetUpstreamAsync(TestProxy proxy)
    {
        using var r = await proxy.Client.GetAsync("/");
        Assert.Equal(HttpStatusCode.OK, r.StatusCode);
        return r.UpstreamName();
    }

    /// <summary>The replaced runtime has drained and released what it held (logged by the reloader).</summary>
    private static Task WaitForRetirementAsync(TestProxy proxy) => Eventually.WaitUntilAsync(
        () => proxy.Logs.Entries.Any(e => e.Message.StartsWith("previous configuration retired", StringComparison.Ordinal)), TimeSpan.FromSeconds(10));

    [Fact]
    public async Task Reload_OnlyAddsUpstream_UnchangedGroupKeepsItsUpstreamConnection()
    {
        await using var up = await ScriptedUpstream.StartAsync(ScriptedUpstream.Json("u1"));
        await using var added = await ScriptedUpstream.StartAsync(ScriptedUpstream.Json("added"));
        var u1 = $"- name: u1\n  url: \"{up.Url}\"";
        var current = TestProxy.Config(u1, "- name: u1");
        await using var proxy = await TestProxy.StartAsync(current, reloadYaml: () => current);
        await GetUpstreamAsync(proxy);
        await GetUpstreamAsync(proxy);

        current = TestProxy.Config(u1 + $"\n- name: added\n  url: \"{added.Url}\"", "- name: u1");
        await ReloadAsync(proxy);
        await GetUpstreamAsync(proxy);
        // Retiring the replaced runtime must not close the pool its successor still sends through.
        await WaitForRetirementAsync(proxy);
        await GetUpstreamAsync(proxy);

        var connections = up.Received.Select(r => r.ConnectionId).ToArray();
        Assert.Equal(4, connections.Length);
        Assert.Single(connections.Distinct());
    }

    [Fact]
    public async Task Reload_ChangedHttpClient_GetsFreshPool()
    {
        await using var up = await ScriptedUpstream.StartAsync(ScriptedUpstream.Json("u1"));
        var u1 = $"- name: u1\n  url: \"{up.Url}\"";
        var current = TestProxy.Config(u1, "- name: u1");
        await using var proxy = await TestProxy.StartAsync(current, reloadYaml: () => current);
        await GetUpstreamAsync(proxy);
        await GetUpstreamAsync(proxy);

        current = TestProxy.Config(u1, "- name: u1", groupExtra: "httpClient:\n  timeout:\n    idle: 30000");
        await ReloadAsync(proxy);
        await GetUpstreamAsync(proxy);
        await WaitForRetirementAsync(proxy);
        await GetUpstreamAsync(proxy);

        var connections = up.Received.Select(r => r.ConnectionId).ToArray();
        Assert.Equal(connections[0], connections[1]);
        Assert.NotEqual(connections[1], connections[2]);
        Assert.Equal(connections[2], connections[3]);
    }

    [Fact]
    public async Task Reload_UnchangedGroup_RoundRobinContinuesItsRotation()
    {
        await using var ups = await Upstreams.StartAsync(("a", ScriptedUpstream.Json("a")), ("b", ScriptedUpstream.Json("b")),
            ("c", ScriptedUpstream.Json("c")), ("extra", ScriptedUpstream.Json("extra")));
        var current = TestProxy.Config(Declare(ups, "a", "b", "c"), "- name: a\n- name: b\n- name: c");
        await using var proxy = await TestProxy.StartAsync(current, reloadYaml: () => current);
        Assert.Equal("a", await GetUpstreamAsync(proxy));
        Assert.Equal("b", await GetUpstreamAsync(proxy));

        current = TestProxy.Config(ups.Yaml(), "- name: a\n- name: b\n- name: c");
        await ReloadAsync(proxy);

        // A rebuilt balancer would start again at "a".
        Assert.Equal(["c", "a", "b"], [await GetUpstreamAsync(proxy), await GetUpstreamAsync(proxy), await GetUpstreamAsync(proxy)]);
    }

    [Fact]
    public async Task Reload_MembersChanged_RotationStartsOver()
    {
        await using var ups = await Upstreams.StartAsync(("a", ScriptedUpstream.Json("a")), ("b", ScriptedUpstream.Json("b")),
            ("c", ScriptedUpstream.Json("c")));
        var current = TestProxy.Config(ups.Yaml(), "- name: a\n- name: b");
        await using var proxy = await TestProxy.StartAsync(current, reloadYaml: () => current);
        Assert.Equal("a", await GetUpstreamAsync(proxy));

        current = TestProxy.Config(ups.Yaml(), "- name: a\n- name: b\n- name: c");
        await ReloadAsync(proxy);

        Assert.Equal(["a", "b", "c"], [await GetUpstreamAsync(proxy), await GetUpstreamAsync(proxy), await GetUpstreamAsync(proxy)]);
    }

    [Theory]
    [InlineData(false, HttpStatusCode.TooManyRequests)]
    [InlineData(true, HttpStatusCode.OK)]
    public async Task Reload_ClientOverBurst_StaysLimitedUnlessRatelimitChanged(bool changeRatelimit, HttpStatusCode expected)
    {
        // Fake time: no token comes back while the test runs, so only the reload could refill the bucket.
        var time = new FakeTimeProvider(DateTimeOffset.UtcNow);
        await using var ups = await Upstreams.StartAsync(("u1", ScriptedUpstream.Json("u1")), ("added", ScriptedUpstream.Json("added")));
        var current = TestProxy.Config(Declare(ups, "u1"), "- name: u1", forwardExtra: "ratelimit:\n  perSecond: 1\n  burst: 2");
        await using var proxy = await TestProxy.StartAsync(current, time, reloadYaml: () => current);
        await GetUpstreamAsync(proxy);
        await GetUpstreamAsync(proxy);
        using (var limited = await proxy.Client.GetAsync("/"))
        {
            Assert.Equal(HttpStatusCode.TooManyRequests, limited.StatusCode);
        }

        var ratelimit = changeRatelimit ? "ratelimit:\n  perSecond: 1\n  burst: 3" : "ratelimit:\n  perSecond: 1\n  burst: 2";
        current = TestProxy.Config(ups.Yaml(), "- name: u1", forwardExtra: ratelimit);
        await ReloadAsync(proxy);

        using var after = await proxy.Client.GetAsync("/");
        Assert.Equal(expected, after.StatusCode);
    }

    [Fact]
    public async Task Reload_RemovesUpstream_ItsSeriesDisappearFromMetrics()
    {
        var breaker = "breaker:\n  threshold: 0.5\n  minRequests: 2\n  cooldown: 60000";
        await using var ups = await Upstreams.StartAsync(("keep", ScriptedUpstream.Json("keep")), ("gone", ctx =>
        {
            ctx.Response.Headers.RetryAfter = "1";
            return ScriptedUpstream.Json("gone", 429)(ctx);
        }));
        var current = TestProxy.Config(ups.Yaml(_ => breaker), ups.Members());
        await using var proxy = await TestProxy.StartAsync(current, reloadYaml: () => current);
        for (var i = 0; i < 4; i++)
        {
            using var _ = await proxy.Client.GetAsync("/");
        }
        var before = MetricsText.Parse(await proxy.Admin.GetStringAsync("/metrics"));
        string[] upstreamFamilies =
        [
            "llmproxy_upstream_requests_total", "llmproxy_upstream_errors_total", "llmproxy_upstream_ttfb_seconds_count",
            "llmproxy_upstream_inflight", "llmproxy_circuit_breaker_state", "llmproxy_load_balancer_selections_total",
            "llmproxy_upstream_cooldowns_total",
        ];
        Assert.All(upstreamFamilies, family => Assert.Contains(before, s => s.Name == family && s.Label("upstream") == "gone"));

        current = TestProxy.Config(Declare(ups, "keep") + "\n  " + breaker.Replace("\n", "\n  ", StringComparison.Ordinal), "- name: keep");
        await ReloadAsync(proxy);

        var after = MetricsText.Parse(await proxy.Admin.GetStringAsync("/metrics"));
        Assert.DoesNotContain(after, s => s.Labels.Values.Contains("gone"));
        // What stayed keeps its series, not reset.
        var kept = before.Where(s => s.Name == "llmproxy_upstream_requests_total" && s.Label("upstream") == "keep").ToList();
        Assert.NotEmpty(kept);
        Assert.All(kept, k => Assert.Contains(after, a => a.Name == k.Name && a.Labels.SequenceEqual(k.Labels) && a.Value >= k.Value));
        Assert.Contains(after, s => s.Name == "llmproxy_circuit_breaker_state" && s.Label("upstream") == "keep");
    }

    [Theory]
    [InlineData(false, 1)]
    [InlineData(true, 2)]
    public async Task Reload_DisabledKey_StaysOutUnlessItsConfigChanged(bool changeKey, int badRequestsAfter)
    {
        await using var ups = await Upstreams.StartAsync(
            ("bad", ctx => { ctx.Response.StatusCode = 401; return Task.CompletedTask; }),
            ("good", ScriptedUpstream.Json("good")));
        var token = "sk-old";
        string Current() => TestProxy.Config(ups.Yaml(n => n == "bad" ? $"auth:\n  type: bearer\n  token: {token}" : "auth:\n  type: bearer\n  token: sk-good"), ups.Members());
        await using var proxy = await TestProxy.StartAsync(Current(), new FakeTimeProvider(DateTimeOffset.UtcNow), reloadYaml: Current);
        for (var i = 0; i < 3; i++)
        {
            Assert.Equal("good", await GetUpstreamAsync(proxy));
        }
        Assert.Equal(1, ups["bad"].Count);

        if (changeKey)
        {
            token = "sk-new";
        }
        await ReloadAsync(proxy);
        for (var i = 0; i < 3; i++)
        {
            Assert.Equal("good", await GetUpstreamAsync(proxy));
        }
        // Unchanged: still disabled, never tried. Changed key: tried again (and disabled again by its 401).
        Assert.Equal(badRequestsAfter, ups["bad"].Count);
    }
}
