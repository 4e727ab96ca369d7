using System.Net;
using LLMProxy.Tests.Infrastructure;
using Microsoft.AspNetCore.Http;

namespace LLMProxy.Tests.Cluster;

/// <summary>State a request never asks the cluster about (SPEC §17): a key enabled again through one instance comes
/// back on the others, and what an instance learned while Redis was away is written back when it returns.</summary>
public sealed class ClusterSyncTests
{
    /// <summary>A key prefix of this test's own on the shared Redis.</summary>
    private static string NewPrefix() => "s" + Guid.NewGuid().ToString("N")[..8] + ":";

    /// <summary>An instance on <paramref name="redis"/>, started and seen to reach it.</summary>
    private static async Task<TestProxy> StartOnRedisAsync(string upstreamUrl, RedisServer redis, string prefix, int recheck)
    {
        var proxy = await TestProxy.StartAsync(Yaml(upstreamUrl, redis.Url, prefix, recheck));
        try
        {
            await proxy.Admin.AssertRedisUpAsync(1);
            return proxy;
        }
        catch
        {
            await proxy.DisposeAsync();
            throw;
        }
    }

    private static string Yaml(string upstreamUrl, string redisUrl, string prefix, int recheck, string token = "sk-cluster-sync-test-1234") =>
        TestProxy.Config($"""
        - name: u1
          url: "{upstreamUrl}"
          recheck: {recheck}
          auth:
            type: bearer
            token: "{token}"
        """, "- name: u1") + $"""

        cluster:
          redis:
            url: "{redisUrl}"
            prefix: "{prefix}"
            timeout: 1000
        """;

    /// <summary>An operator enables u1 on <paramref name="a"/>; within seconds <paramref name="b"/> has it enabled too and serves.</summary>
    private static async Task EnabledOnOneServesOnTheOtherAsync(TestProxy a, TestProxy b)
    {
        using (var enable = await a.Admin.PostAsync("/api/v1/upstreams/u1/enable", null))
        {
            Assert.Equal(HttpStatusCode.OK, enable.StatusCode);
        }
        await WaitUntilAsync(async () => Sample(await b.Admin.GetStringAsync("/metrics"), "llmproxy_upstream_disabled{upstream=\"u1\"}") == 0,
            TimeSpan.FromSeconds(10));
        using var served = await b.Client.PostAsync("/v1/chat/completions", new StringContent("{}"));
        Assert.Equal(HttpStatusCode.OK, served.StatusCode);
    }

    [RedisFact]
    public async Task KeyEnabledByATrialOnOneInstance_IsEnabledOnTheOthers()
    {
        await using var redis = await RedisServer.StartAsync();
        var revoked = 1;
        await using var upstream = await ScriptedUpstream.StartAsync(async ctx =>
        {
            ctx.Response.StatusCode = Volatile.Read(ref revoked) == 1 ? StatusCodes.Status401Unauthorized : StatusCodes.Status200OK;
            await ctx.Response.WriteAsync("{}");
        }, recordBody: false);
        var prefix = NewPrefix();
        // A retries its disabled key every 500 ms; B never would on its own.
        await using var a = await StartOnRedisAsync(upstream.Url, redis, prefix, recheck: 500);
        await using var b = await StartOnRedisAsync(upstream.Url, redis, prefix, recheck: 0);

        using (var first = await a.Client.PostAsync("/v1/chat/completions", new StringContent("{}")))
        {
            Assert.Equal(HttpStatusCode.Unauthorized, first.StatusCode); // the only member: its answer goes through
        }
        await WaitUntilAsync(async () => await redis.CommandAsync($"EXISTS {prefix}up:u1:off") == ":1", TimeSpan.FromSeconds(5));
        // B learns it on its first request: refused by the cluster, so nothing is sent to the revoked key.
        using (var refused = await b.Client.PostAsync("/v1/chat/completions", new StringContent("{}")))
        {
            Assert.Equal(HttpStatusCode.ServiceUnavailable, refused.StatusCode);
        }
        Assert.Equal(1, upstream.Count);
        await AssertSampleAsync(b.Admin, "llmproxy_upstream_disabled{upstream=\"u1\"}", 1);

        // The key is good again; A's trial finds it out and enables it on the cluster; B follows without a trial.
        Volatile.Write(ref revoked, 0);
        await WaitUntilAsync(async () =>
        {
            using var response = await a.Client.PostAsync("/v1/chat/completions", new StringContent("{}"));
            return response.StatusCode == HttpStatusCode.OK;
        }, TimeSpan.FromSeconds(10));
        await WaitUntilAsync(async () => Sample(await b.Admin.GetStringAsync("/metrics"), "llmproxy_upstream_disabled{upstream=\"u1\"}") == 0,
            TimeSpan.FromSeconds(10));
        using var served = await b.Client.PostAsync("/v1/chat/completions", new StringContent("{}"));
        Assert.Equal(HttpStatusCode.OK, served.StatusCode);
        Assert.Contains(b.Logs.Entries, e => e.Id.Id == 46); // KeyEnabled, logged where it happened
    }

    [RedisFact]
    public async Task CoolDownLearnedWhileRedisWasAway_IsWrittenBackWhenItReturns()
    {
        await using var redis = await RedisServer.StartAsync();
        await using var upstream = await ScriptedUpstream.StartAsync(async ctx =>
        {
            ctx.Response.StatusCode = StatusCodes.Status429TooManyRequests;
            ctx.Response.Headers.RetryAfter = "120";
            await ctx.Response.WriteAsync("{}");
        }, recordBody: false);
        var prefix = NewPrefix();
        await using var a = await StartOnRedisAsync(upstream.Url, redis, prefix, recheck: 0);
        redis.Kill();
        await a.Admin.AssertRedisUpAsync(0);
        using (var limited = await a.Client.PostAsync("/v1/chat/completions", new StringContent("{}")))
        {
            Assert.Equal(HttpStatusCode.TooManyRequests, limited.StatusCode); // parked here only: Redis is away
        }
        await redis.StartAgainAsync(); // empty
        await a.Admin.AssertRedisUpAsync(1, TimeSpan.FromSeconds(20));
        string? cool = null;
        await WaitUntilAsync(async () => (cool = await redis.KeyAsync($"{prefix}up:u1:*:cool")) is not null, TimeSpan.FromSeconds(5));
        var ttl = int.Parse((await redis.CommandAsync($"PTTL {cool}"))!.TrimStart(':'), System.Globalization.CultureInfo.InvariantCulture);
        Assert.InRange(ttl, 60_000, 120_000);
    }

    [RedisFact]
    public async Task ClientKeyRatelimit_TwoInstances_ShareOneBucket()
    {
        await using var redis = await RedisServer.StartAsync();
        await using var upstream = await ScriptedUpstream.StartAsync(ScriptedUpstream.Json("u1"), recordBody: false);
        const string Key = "ck-cluster-test-team-a-0001";
        var yaml = TestProxy.Config($"""
            - name: u1
              url: "{upstream.Url}"
            """, "- name: u1", forwardExtra: $"keys:\n  - name: team_a\n    key: \"{Key}\"\n    ratelimit:\n      perSecond: 1\n      burst: 6") + $"""

            cluster:
              redis:
                url: "{redis.Url}"
                timeout: 1000
            """;
        await using var a = await TestProxy.StartAsync(yaml);
        await using var b = await TestProxy.StartAsync(yaml);
        await a.Admin.AssertRedisUpAsync(1);
        await b.Admin.AssertRedisUpAsync(1);
        var clock = System.Diagnostics.Stopwatch.StartNew();
        var statuses = new List<HttpStatusCode>();
        for (var i = 0; i < 16; i++)
        {
            using var request = new HttpRequestMessage(HttpMethod.Post, "/v1/chat/completions") { Content = new StringContent("{}") };
            request.Headers.TryAddWithoutValidation("Authorization", "Bearer " + Key);
            using var response = await (i % 2 == 0 ? a : b).Client.SendAsync(request);
            statuses.Add(response.StatusCode);
        }
        var elapsed = clock.Elapsed;
        Assert.All(statuses, s => Assert.True(s is HttpStatusCode.OK or HttpStatusCode.TooManyRequests, s.ToString()));
        // One bucket of 6 plus a token a second while this ran; two local buckets would have admitted 12 at once.
        var admitted = statuses.Count(s => s == HttpStatusCode.OK);
        var bound = 6 + (int)Math.Ceiling(elapsed.TotalSeconds) + 1;
        Assert.True(admitted >= 6 && admitted <= bound, $"admitted {admitted}, expected 6..{bound} over {elapsed.TotalSeconds:F1} s");
        Assert.Equal(admitted, upstream.Count);
        var refusedByKey = Sample(await a.Admin.GetStringAsync("/metrics"), "llmproxy_rate_limit_rejections_total{forward=\"fwd\",limit_type=\"client_key\"}")
            + Sample(await b.Admin.GetStringAsync("/metrics"), "llmproxy_rate_limit_rejections_total{forward=\"fwd\",limit_type=\"client_key\"}");
        Assert.Equal(16 - admitted, refusedByKey);
    }

    private const string TeamKey = "ck-cluster-test-team-b-0002";
    // 31 bytes: an estimate of 31 / 4 + 1 000 = 1 007 tokens; a budget of 3 100 covers three, and its refill (3 100 a
    // minute) a fourth only after 18 s.
    private const string TokenBody = "{\"model\":\"m\",\"max_tokens\":1000}";
    private const long Estimate = 1_007, Budget = 3_100;

    private static string TokenYaml(string upstreamUrl, string redisUrl, string prefix) => TestProxy.Config($"""
        - name: u1
          url: "{upstreamUrl}"
        """, "- name: u1", forwardExtra: $"keys:\n  - name: team_b\n    key: \"{TeamKey}\"\n    tokensPerMinute: {Budget}") + $"""

        cluster:
          redis:
            url: "{redisUrl}"
            prefix: "{prefix}"
            timeout: 1000
        """;

    private static async Task<HttpStatusCode> SendTokensAsync(TestProxy proxy)
    {
        using var request = new HttpRequestMessage(HttpMethod.Post, "/v1/chat/completions")
        {
            Content = new StringContent(TokenBody, System.Text.Encoding.UTF8, "application/json"),
        };
        request.Headers.TryAddWithoutValidation("Authorization", "Bearer " + TeamKey);
        using var response = await proxy.Client.SendAsync(request);
        return response.StatusCode;
    }

    // Whole estimates a budget covers after spending spent, at most, with elapsed of refill.
    private static int Covered(long spent, TimeSpan elapsed) => (int)((Budget - spent + elapsed.TotalSeconds * Budget / 60) / Estimate);

    [RedisFact]
    public async Task ClientKeyTokensPerMinute_TwoInstances_ShareOneBudget_EachFallsBackToItsOwn()
    {
        await using var redis = await RedisServer.StartAsync();
        // Answers without usage: each admitted request keeps its estimate as spent.
        await using var upstream = await ScriptedUpstream.StartAsync(ScriptedUpstream.Json("u1"), recordBody: false);
        var prefix = NewPrefix();
        await using var a = await TestProxy.StartAsync(TokenYaml(upstream.Url, redis.Url, prefix));
        await using var b = await TestProxy.StartAsync(TokenYaml(upstream.Url, redis.Url, prefix));
        await a.Admin.AssertRedisUpAsync(1);
        await b.Admin.AssertRedisUpAsync(1);
        var clock = System.Diagnostics.Stopwatch.StartNew();
        var admittedBy = new int[2];
        for (var i = 0; i < 8; i++)
        {
            var status = await SendTokensAsync(i % 2 == 0 ? a : b);
            Assert.True(status is HttpStatusCode.OK or HttpStatusCode.TooManyRequests, status.ToString());
            admittedBy[i % 2] += status == HttpStatusCode.OK ? 1 : 0;
        }
        // One budget: three estimates (a fourth only with 18 s of refill); a budget per instance would have admitted six.
        var admitted = admittedBy.Sum();
        var elapsed = clock.Elapsed;
        Assert.True(admitted >= 3 && admitted <= Covered(0, elapsed), $"admitted {admitted} ({admittedBy[0]} + {admittedBy[1]}) in {elapsed.TotalSeconds:F1} s");
        Assert.Equal(admitted, upstream.Count);
        var refusedByKey = Sample(await a.Admin.GetStringAsync("/metrics"), "llmproxy_rate_limit_rejections_total{forward=\"fwd\",limit_type=\"client_key\"}")
            + Sample(await b.Admin.GetStringAsync("/metrics"), "llmproxy_rate_limit_rejections_total{forward=\"fwd\",limit_type=\"client_key\"}");
        Assert.Equal(8 - admitted, refusedByKey);
        Assert.InRange(await SharedScriptsTests.Level(redis, $"{prefix}cl:fwd:fwd:tpm:team_b"), 0,
            Budget - admitted * Estimate + clock.Elapsed.TotalSeconds * Budget / 60);

        // Redis away: each instance decides on its own budget, as with an upstream's tokensPerMinute — charged for what
        // it admitted, refunded for what the cluster refused.
        redis.Kill();
        await a.Admin.AssertRedisUpAsync(0);
        await b.Admin.AssertRedisUpAsync(0);
        for (var p = 0; p < 2; p++)
        {
            var proxy = p == 0 ? a : b;
            var more = 0;
            for (var i = 0; i < 4; i++)
            {
                more += await SendTokensAsync(proxy) == HttpStatusCode.OK ? 1 : 0;
            }
            var own = Covered(admittedBy[p] * Estimate, TimeSpan.Zero);
            Assert.True(more >= own && more <= Covered(admittedBy[p] * Estimate, clock.Elapsed),
                $"instance {p} admitted {more} on its own budget after {admittedBy[p]} shared, expected {own} in {clock.Elapsed.TotalSeconds:F1} s");
        }
        Assert.True(Sample(await a.Admin.GetStringAsync("/metrics"), "llmproxy_cluster_fallbacks_total")
            + Sample(await b.Admin.GetStringAsync("/metrics"), "llmproxy_cluster_fallbacks_total") >= 1);
    }

    [RedisFact]
    public async Task ClientKeyTokensPerMinute_SettledToRealUsage_OnTheCluster()
    {
        await using var redis = await RedisServer.StartAsync();
        await using var upstream = await ScriptedUpstream.StartAsync(async context =>
        {
            context.Response.ContentType = "application/json";
            await context.Response.WriteAsync("""{"id":"x","usage":{"prompt_tokens":4,"completion_tokens":3,"total_tokens":7}}""");
        }, recordBody: false);
        var prefix = NewPrefix();
        await using var a = await TestProxy.StartAsync(TokenYaml(upstream.Url, redis.Url, prefix));
        await using var b = await TestProxy.StartAsync(TokenYaml(upstream.Url, redis.Url, prefix));
        await a.Admin.AssertRedisUpAsync(1);
        await b.Admin.AssertRedisUpAsync(1);
        // Each request reserves 1 007 on the cluster and settles to the 7 it used: ten fit in a budget of three
        // estimates only if every settlement reaches the cluster (it lands a moment after the answer, so wait when refused).
        for (var i = 0; i < 10; i++)
        {
            var proxy = i % 2 == 0 ? a : b;
            await WaitUntilAsync(async () => await SendTokensAsync(proxy) == HttpStatusCode.OK, TimeSpan.FromSeconds(5));
        }
        Assert.Equal(10, upstream.Count);
        var key = $"{prefix}cl:fwd:fwd:tpm:team_b";
        await WaitUntilAsync(async () => await SharedScriptsTests.Level(redis, key) >= Budget - 10 * 7, TimeSpan.FromSeconds(5));
    }

    [RedisFact]
    public async Task AdminDisableOnOneInstance_HoldsOnAll_UntilAdminEnable()
    {
        await using var redis = await RedisServer.StartAsync();
        await using var upstream = await ScriptedUpstream.StartAsync(ScriptedUpstream.Json("u1"), recordBody: false);
        var prefix = NewPrefix();
        await using var a = await StartOnRedisAsync(upstream.Url, redis, prefix, recheck: 500);
        await using var b = await StartOnRedisAsync(upstream.Url, redis, prefix, recheck: 500);

        using (var disable = await a.Admin.PostAsync("/api/v1/upstreams/u1/disable", null))
        {
            Assert.Equal(HttpStatusCode.OK, disable.StatusCode);
        }
        await WaitUntilAsync(async () => await redis.CommandAsync($"EXISTS {prefix}up:u1:off") == ":1", TimeSpan.FromSeconds(5));
        // B refuses too, and — an operator's decision — never lets a key-health trial through, recheck or not.
        for (var i = 0; i < 3; i++)
        {
            using var refused = await b.Client.PostAsync("/v1/chat/completions", new StringContent("{}"));
            Assert.Equal(HttpStatusCode.ServiceUnavailable, refused.StatusCode);
            await Task.Delay(300);
        }
        Assert.Equal(0, upstream.Count);
        Assert.Contains("\"reason\":\"admin\"", await b.Admin.GetStringAsync("/api/v1/upstreams"), StringComparison.Ordinal);

        await EnabledOnOneServesOnTheOtherAsync(a, b);
    }

    [RedisFact]
    public async Task AdminDisable_RedisRefusesOrLosesTheRecord_StaysDisabledOnAll_UntilAdminEnable()
    {
        await using var redis = await RedisServer.StartAsync();
        await using var upstream = await ScriptedUpstream.StartAsync(ScriptedUpstream.Json("u1"), recordBody: false);
        var prefix = NewPrefix();
        await using var a = await StartOnRedisAsync(upstream.Url, redis, prefix, recheck: 500);
        await using var b = await StartOnRedisAsync(upstream.Url, redis, prefix, recheck: 500);

        // Redis refuses every write (out of memory): A's operator disables the key, and no record reaches the cluster.
        Assert.Equal("+OK", await redis.CommandAsync("CONFIG SET maxmemory 1"));
        using (var disable = await a.Admin.PostAsync("/api/v1/upstreams/u1/disable", null))
        {
            Assert.Equal(HttpStatusCode.OK, disable.StatusCode);
        }
        await Task.Delay(2500); // the once-a-second check ran twice
        Assert.Equal(":0", await redis.CommandAsync($"EXISTS {prefix}up:u1:off"));
        await AssertSampleAsync(a.Admin, "llmproxy_upstream_disabled{upstream=\"u1\"}", 1);

        // Writes accepted again: B's operator disables it too; then Redis loses everything.
        Assert.Equal("+OK", await redis.CommandAsync("CONFIG SET maxmemory 0"));
        using (var disable = await b.Admin.PostAsync("/api/v1/upstreams/u1/disable", null))
        {
            Assert.Equal(HttpStatusCode.OK, disable.StatusCode);
        }
        await WaitUntilAsync(async () => await redis.CommandAsync($"EXISTS {prefix}up:u1:off") == ":1", TimeSpan.FromSeconds(5));
        Assert.Equal("+OK", await redis.CommandAsync("FLUSHALL"));
        await Task.Delay(2500);
        foreach (var proxy in new[] { a, b })
        {
            await AssertSampleAsync(proxy.Admin, "llmproxy_upstream_disabled{upstream=\"u1\"}", 1);
            Assert.DoesNotContain(proxy.Logs.Entries, e => e.Id.Id == 46); // KeyEnabled: nobody enabled it
        }
        // What Redis lost is written back by the instances that hold it.
        Assert.Equal(":1", await redis.CommandAsync($"EXISTS {prefix}up:u1:off"));
        using (var refused = await b.Client.PostAsync("/v1/chat/completions", new StringContent("{}")))
        {
            Assert.Equal(HttpStatusCode.ServiceUnavailable, refused.StatusCode);
        }
        Assert.Equal(0, upstream.Count);

        // A real enable on one instance still reaches the other within about a second.
        await EnabledOnOneServesOnTheOtherAsync(a, b);
    }

    [RedisFact]
    public async Task AdminResetOnOneInstance_EndsTheCoolDownCopiedByTheOthers()
    {
        await using var redis = await RedisServer.StartAsync();
        var limited = 1;
        await using var upstream = await ScriptedUpstream.StartAsync(async ctx =>
        {
            if (Volatile.Read(ref limited) == 1)
            {
                ctx.Response.StatusCode = StatusCodes.Status429TooManyRequests;
                ctx.Response.Headers.RetryAfter = "120";
            }
            await ctx.Response.WriteAsync("{}");
        }, recordBody: false);
        var prefix = NewPrefix();
        await using var a = await StartOnRedisAsync(upstream.Url, redis, prefix, recheck: 0);
        await using var b = await StartOnRedisAsync(upstream.Url, redis, prefix, recheck: 0);

        using (var first = await a.Client.PostAsync("/v1/chat/completions", new StringContent("{}")))
        {
            Assert.Equal(HttpStatusCode.TooManyRequests, first.StatusCode);
        }
        await WaitUntilAsync(async () => await redis.KeyAsync($"{prefix}up:u1:*:cool") is not null, TimeSpan.FromSeconds(5));
        // B copies the cluster's cool-down on its first request, and from then on keeps the key out on its own.
        using (var refused = await b.Client.PostAsync("/v1/chat/completions", new StringContent("{}")))
        {
            Assert.Equal(HttpStatusCode.TooManyRequests, refused.StatusCode);
        }
        Assert.Equal(1, upstream.Count);

        // The provider is fine again; A's operator resets the key: B's copy ends too, long before its 120 s.
        Volatile.Write(ref limited, 0);
        using (var reset = await a.Admin.PostAsync("/api/v1/upstreams/u1/reset", null))
        {
            Assert.Equal(HttpStatusCode.OK, reset.StatusCode);
        }
        await WaitUntilAsync(async () =>
        {
            using var response = await b.Client.PostAsync("/v1/chat/completions", new StringContent("{}"));
            return response.StatusCode == HttpStatusCode.OK;
        }, TimeSpan.FromSeconds(10));
        Assert.Contains(b.Logs.Entries, e => e.Id.Id == 73); // UpstreamResetElsewhere
    }

    [RedisFact]
    public async Task ReloadRotatingTheKey_PicksUpNoneOfTheOldAccountsSharedState()
    {
        await using var redis = await RedisServer.StartAsync();
        // The old key's account is out of quota for two minutes; the new key's is not.
        await using var upstream = await ScriptedUpstream.StartAsync(async ctx =>
        {
            if (ctx.Request.Headers.Authorization == "Bearer sk-old-account-0001")
            {
                ctx.Response.StatusCode = StatusCodes.Status429TooManyRequests;
                ctx.Response.Headers.RetryAfter = "120";
            }
            await ctx.Response.WriteAsync("{}");
        }, recordBody: false);
        var prefix = NewPrefix();
        var current = Yaml(upstream.Url, redis.Url, prefix, recheck: 0, token: "sk-old-account-0001");
        await using var proxy = await TestProxy.StartAsync(current, reloadYaml: () => current);
        await proxy.Admin.AssertRedisUpAsync(1);
        using (var limited = await proxy.Client.PostAsync("/v1/chat/completions", new StringContent("{}")))
        {
            Assert.Equal(HttpStatusCode.TooManyRequests, limited.StatusCode);
        }
        await WaitUntilAsync(async () => await redis.KeyAsync($"{prefix}up:u1:*cool") is not null, TimeSpan.FromSeconds(5));

        // SPEC §16: a reload keeps state only for what did not change; a rotated key is another account.
        current = Yaml(upstream.Url, redis.Url, prefix, recheck: 0, token: "sk-new-account-0002");
        using (var reload = await proxy.Admin.PostAsync("/api/v1/reload", null))
        {
            Assert.Equal(HttpStatusCode.OK, reload.StatusCode);
        }
        using var served = await proxy.Client.PostAsync("/v1/chat/completions", new StringContent("{}"));
        Assert.Equal(HttpStatusCode.OK, served.StatusCode);
        Assert.Equal(2, upstream.Count);
    }
}
