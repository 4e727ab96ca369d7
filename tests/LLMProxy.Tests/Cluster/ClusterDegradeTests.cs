using System.Net;
using LLMProxy.Tests.Infrastructure;

namespace LLMProxy.Tests.Cluster;

/// <summary>Degrade, never drop (SPEC §17): a Redis that stops answering in time is left at once — every request still
/// answered, on local state — with one log line per transition, and used again when it answers.</summary>
public sealed class ClusterDegradeTests
{
    [RedisFact]
    public async Task SlowRedis_RequestsAnsweredOnLocalState_OneLinePerTransition_ResumesAfter()
    {
        await using var redis = await RedisServer.StartAsync();
        await using var upstream = await ScriptedUpstream.StartAsync(ScriptedUpstream.Json("u1"), recordBody: false);
        var yaml = TestProxy.Config($"""
            - name: u1
              url: "{upstream.Url}"
              ratelimit:
                perSecond: 1
                burst: 3
            """, "- name: u1") + $"""

            cluster:
              redis:
                url: "{redis.Url}"
                timeout: 300
            """;
        await using var proxy = await TestProxy.StartAsync(yaml);
        await proxy.Admin.AssertRedisUpAsync(1);

        // Redis holds every client (the probe's PING included) for 4 s: far slower than the 300 ms timeout (a
        // generous one: on a loaded test machine an idle Redis can take longer than the default 50 ms).
        Assert.Equal("+OK", await redis.CommandAsync("CLIENT PAUSE 4000 ALL"));
        var statuses = new List<HttpStatusCode>();
        for (var i = 0; i < 6; i++)
        {
            using var response = await proxy.Client.PostAsync("/v1/chat/completions", new StringContent("{}"));
            statuses.Add(response.StatusCode);
        }
        // Decided on the local bucket alone: its burst of 3 (one more if a second passed), the rest 429 — no error
        // because Redis was slow.
        Assert.InRange(statuses.Count(s => s == HttpStatusCode.OK), 3, 4);
        Assert.All(statuses, s => Assert.True(s is HttpStatusCode.OK or HttpStatusCode.TooManyRequests, s.ToString()));
        var metrics = await proxy.Admin.GetStringAsync("/metrics");
        Assert.True(Sample(metrics, "llmproxy_cluster_redis_up") == 0, string.Join(",", statuses) + "\n" + Lines(metrics, "llmproxy_cluster") + proxy.Logs.AllText);
        // Every admitted request fell back (the refused ones were refused locally, before any shared check).
        Assert.True(Sample(metrics, "llmproxy_cluster_fallbacks_total") >= statuses.Count(s => s == HttpStatusCode.OK), Lines(metrics, "llmproxy_cluster"));

        await proxy.Admin.AssertRedisUpAsync(1, TimeSpan.FromSeconds(15));
        // One line per transition, never per request: connected, unavailable, back (and so on, alternating).
        var transitions = proxy.Logs.Entries.Where(e => e.Id.Id is 70 or 71).Select(e => e.Id.Id).ToList();
        Assert.True(transitions.Count >= 3, string.Join(",", transitions));
        Assert.All(transitions.Select((id, i) => (id, i)), t => Assert.Equal(t.i % 2 == 0 ? 71 : 70, t.id));
        Assert.Contains(proxy.Logs.Entries, e => e.Id.Id == 71 && e.Message.Contains("sharing state again", StringComparison.Ordinal));
        using var after = await proxy.Client.PostAsync("/v1/chat/completions", new StringContent("{}"));
        Assert.True(after.StatusCode is HttpStatusCode.OK or HttpStatusCode.TooManyRequests);
    }

    [RedisFact]
    public async Task RedisNeverReached_ProxyServesOnLocalState_AndSaysSoOnce()
    {
        await using var redis = await RedisServer.StartAsync();
        var url = redis.Url;
        redis.Kill(); // a port where nothing listens any more
        await using var upstream = await ScriptedUpstream.StartAsync(ScriptedUpstream.Json("u1"), recordBody: false);
        var yaml = TestProxy.Config($"""
            - name: u1
              url: "{upstream.Url}"
            """, "- name: u1") + $"""

            cluster:
              redis:
                url: "{url}"
            """;
        await using var proxy = await TestProxy.StartAsync(yaml);
        for (var i = 0; i < 5; i++)
        {
            using var response = await proxy.Client.PostAsync("/v1/chat/completions", new StringContent("{}"));
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        }
        await WaitUntilAsync(() => proxy.Logs.Entries.Any(e => e.Id.Id == 70), TimeSpan.FromSeconds(10));
        await proxy.Admin.AssertRedisUpAsync(0);
        Assert.Single(proxy.Logs.Entries, e => e.Id.Id == 70);
    }

    [RedisFact]
    public async Task RedisAnswersWithAnError_ThatCallFallsBack_RedisStaysUp_OneLine()
    {
        await using var redis = await RedisServer.StartAsync();
        await using var upstream = await ScriptedUpstream.StartAsync(ScriptedUpstream.Json("u1"), recordBody: false);
        var prefix = "d" + Guid.NewGuid().ToString("N")[..8] + ":";
        var yaml = TestProxy.Config($"""
            - name: u1
              url: "{upstream.Url}"
            """, "- name: u1") + $"""

            cluster:
              redis:
                url: "{redis.Url}"
                prefix: "{prefix}"
                timeout: 1000
            """;
        await using var proxy = await TestProxy.StartAsync(yaml);
        await proxy.Admin.AssertRedisUpAsync(1);
        // A foreign key of another type where the admission script reads a hash: every admission answers WRONGTYPE.
        Assert.Equal("+OK", await redis.CommandAsync($"SET {prefix}up:u1:off foreign"));
        for (var i = 0; i < 8; i++)
        {
            using var response = await proxy.Client.PostAsync("/v1/chat/completions", new StringContent("{}"));
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
            await Task.Delay(300); // across a few probes: a flap would have shown by now
        }
        var metrics = await proxy.Admin.GetStringAsync("/metrics");
        Assert.True(Sample(metrics, "llmproxy_cluster_redis_up") == 1, Lines(metrics, "llmproxy_cluster") + proxy.Logs.AllText);
        Assert.True(Sample(metrics, "llmproxy_cluster_fallbacks_total") >= 8, Lines(metrics, "llmproxy_cluster"));
        Assert.DoesNotContain(proxy.Logs.Entries, e => e.Id.Id == 70); // never "unavailable"
        var error = Assert.Single(proxy.Logs.Entries, e => e.Id.Id == 72);
        Assert.Contains("WRONGTYPE", error.Message, StringComparison.Ordinal);
    }
}
