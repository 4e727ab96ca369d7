using System.Net;
using LLMProxy.Tests.Infrastructure;
using Microsoft.AspNetCore.Http;

namespace LLMProxy.Tests.Cluster;

/// <summary>State a request never asks the cluster about (SPEC §17): a key enabled again through one instance comes
/// back on the others, and what an instance learned while Redis was away is written back when it returns.</summary>
public sealed class ClusterSyncTests
{
    private static string Yaml(string upstreamUrl, string redisUrl, string prefix, int recheck) => TestProxy.Config($"""
        - name: u1
          url: "{upstreamUrl}"
          recheck: {recheck}
          auth:
            type: bearer
            token: "sk-cluster-sync-test-1234"
        """, "- name: u1") + $"""

        cluster:
          redis:
            url: "{redisUrl}"
            prefix: "{prefix}"
            timeout: 1000
        """;

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
        var prefix = "s" + Guid.NewGuid().ToString("N")[..8] + ":";
        // A retries its disabled key every 500 ms; B never would on its own.
        await using var a = await TestProxy.StartAsync(Yaml(upstream.Url, redis.Url, prefix, recheck: 500));
        await using var b = await TestProxy.StartAsync(Yaml(upstream.Url, redis.Url, prefix, recheck: 0));
        await a.Admin.AssertRedisUpAsync(1);
        await b.Admin.AssertRedisUpAsync(1);

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
        var prefix = "s" + Guid.NewGuid().ToString("N")[..8] + ":";
        await using var a = await TestProxy.StartAsync(Yaml(upstream.Url, redis.Url, prefix, recheck: 0));
        await a.Admin.AssertRedisUpAsync(1);
        redis.Kill();
        await a.Admin.AssertRedisUpAsync(0);
        using (var limited = await a.Client.PostAsync("/v1/chat/completions", new StringContent("{}")))
        {
            Assert.Equal(HttpStatusCode.TooManyRequests, limited.StatusCode); // parked here only: Redis is away
        }
        await redis.StartAgainAsync(); // empty
        await a.Admin.AssertRedisUpAsync(1, TimeSpan.FromSeconds(20));
        await WaitUntilAsync(async () => await redis.CommandAsync($"EXISTS {prefix}up:u1:cool") == ":1", TimeSpan.FromSeconds(5));
        var ttl = int.Parse((await redis.CommandAsync($"PTTL {prefix}up:u1:cool"))!.TrimStart(':'), System.Globalization.CultureInfo.InvariantCulture);
        Assert.InRange(ttl, 60_000, 120_000);
    }
}
