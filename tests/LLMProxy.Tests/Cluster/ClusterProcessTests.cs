using System.Diagnostics;
using System.Globalization;
using System.Net;
using LLMProxy.Tests.Forwarding;
using LLMProxy.Tests.Infrastructure;
using Microsoft.AspNetCore.Http;

namespace LLMProxy.Tests.Cluster;

/// <summary>
/// SPEC §17 with real processes: two or three <c>llmproxy</c> binaries against one real redis-server and one scripted
/// upstream. Shared budgets admit the configured total, not N×; a 429 or a bad key seen through one instance keeps the
/// key out on all; killing Redis loses no request, and a Redis started again is used again.
/// </summary>
public sealed class ClusterProcessTests
{
    /// <summary>One proxy process with its ports and clients.</summary>
    private sealed class Instance : IAsyncDisposable
    {
        public required ProxyProcess Process { get; init; }
        public required HttpClient Client { get; init; }
        public required HttpClient Admin { get; init; }
        public required string ConfigPath { get; init; }

        public async Task<string> MetricsAsync() => await Admin.GetStringAsync("/metrics");

        public async ValueTask DisposeAsync()
        {
            Client.Dispose();
            Admin.Dispose();
            await Process.DisposeAsync();
            File.Delete(ConfigPath);
        }
    }

    private static string Yaml(int port, int admin, string upstreams, string members, string redisUrl, string prefix, int timeoutMs) => $"""
        httpServer:
          forwards:
            - name: main
              port: {port}
              address: "127.0.0.1"
              defaultGroup: g
          admin:
            port: {admin}
            address: "127.0.0.1"
        upstreams:
        {upstreams}
        upstreamGroups:
          - name: g
            upstreams:
        {members}
        cluster:
          redis:
            url: "{redisUrl}"
            prefix: "{prefix}"
            timeout: {timeoutMs}
        """;

    /// <summary>Starts <paramref name="count"/> instances on one config shape and waits until each shares through Redis.</summary>
    private static async Task<Instance[]> StartAsync(int count, string upstreams, string members, RedisServer redis, string prefix, int timeoutMs = 1000)
    {
        var instances = await Task.WhenAll(Enumerable.Range(0, count).Select(async _ =>
        {
            var (port, admin) = (StreamingAndErrorTests.FreePort(), StreamingAndErrorTests.FreePort());
            var path = Path.Combine(Path.GetTempPath(), $"llmproxy-cluster-{Guid.NewGuid():N}.yaml");
            await File.WriteAllTextAsync(path, Yaml(port, admin, upstreams, members, redis.Url, prefix, timeoutMs));
            var process = ProxyProcess.Start("-c", path);
            var instance = new Instance
            {
                Process = process,
                ConfigPath = path,
                Client = new HttpClient { BaseAddress = new Uri($"http://127.0.0.1:{port}"), Timeout = TimeSpan.FromSeconds(30) },
                Admin = new HttpClient { BaseAddress = new Uri($"http://127.0.0.1:{admin}"), Timeout = TimeSpan.FromSeconds(30) },
            };
            await process.WaitForOutputAsync("ready:", count: 2);
            await instance.Admin.AssertRedisUpAsync(1);
            return instance;
        }));
        return instances;
    }

    private static string Prefix() => "c" + Guid.NewGuid().ToString("N")[..8] + ":";

    private static Task<HttpResponseMessage> PostAsync(HttpClient client, string body = "{\"model\":\"m\"}") =>
        client.PostAsync("/v1/chat/completions", new StringContent(body, System.Text.Encoding.UTF8, "application/json"));

    [RedisFact]
    public async Task PerSecondLimit_ThreeInstances_AdmitTheSharedTotalNotThreeTimes()
    {
        await using var redis = await RedisServer.StartAsync();
        await using var upstream = await ScriptedUpstream.StartAsync(ScriptedUpstream.Json("u1"), recordBody: false);
        var instances = await StartAsync(3, $"""
              - name: u1
                url: "{upstream.Url}"
                ratelimit:
                  perSecond: 1
                  burst: 10
            """, "      - name: u1", redis, Prefix());
        try
        {
            var clock = Stopwatch.StartNew();
            // 3 instances × 30 requests, 5 at a time each: far more than the shared bucket holds.
            var statuses = await Task.WhenAll(instances.Select(i => SendManyAsync(i.Client, 30, 5)));
            var elapsed = clock.Elapsed;
            var admitted = upstream.Count;
            var all = statuses.SelectMany(s => s).ToList();
            Assert.Equal(admitted, all.Count(s => s == HttpStatusCode.OK));
            Assert.All(all, s => Assert.True(s is HttpStatusCode.OK or HttpStatusCode.TooManyRequests, s.ToString()));
            // The shared bucket: its burst of 10 plus one token a second while the load ran (+1 for rounding).
            // Three local buckets would have let at least 30 through.
            var bound = 10 + (int)Math.Ceiling(elapsed.TotalSeconds) + 1;
            Assert.True(admitted >= 10 && admitted <= bound, $"admitted {admitted}, expected 10..{bound} over {elapsed.TotalSeconds:F1} s");
        }
        finally
        {
            await DisposeAllAsync(instances);
        }
    }

    [RedisFact]
    public async Task TokensPerMinute_ThreeInstances_ReserveFromOneSharedBudget()
    {
        await using var redis = await RedisServer.StartAsync();
        await using var upstream = await ScriptedUpstream.StartAsync(ScriptedUpstream.Json("u1"), recordBody: false);
        // Each request reserves ≈ 1 008 tokens (its bytes ÷ 4 + max_tokens) and, answered without usage, spends them.
        var instances = await StartAsync(3, $"""
              - name: u1
                url: "{upstream.Url}"
                ratelimit:
                  perSecond: 1000
                  tokensPerMinute: 2500
            """, "      - name: u1", redis, Prefix());
        try
        {
            var clock = Stopwatch.StartNew();
            var statuses = await Task.WhenAll(instances.Select(i => SendManyAsync(i.Client, 10, 2,
                "{\"model\":\"m\",\"max_tokens\":1000,\"messages\":[]}")));
            var elapsed = clock.Elapsed;
            Assert.Equal(upstream.Count, statuses.SelectMany(s => s).Count(s => s == HttpStatusCode.OK));
            // 2 500 tokens hold two reservations; the refill (≈ 42 tokens/s) adds one more per ≈ 24 s of load.
            // Three local budgets would have admitted six.
            var bound = 2 + (int)Math.Ceiling(elapsed.TotalSeconds * 2500 / 60 / 1008);
            Assert.InRange(upstream.Count, 2, bound);
        }
        finally
        {
            await DisposeAllAsync(instances);
        }
    }

    [RedisFact]
    public async Task Upstream429_SeenByOneInstance_CoolsTheKeyOnAll()
    {
        await using var redis = await RedisServer.StartAsync();
        await using var limited = await ScriptedUpstream.StartAsync(async ctx =>
        {
            ctx.Response.StatusCode = StatusCodes.Status429TooManyRequests;
            ctx.Response.Headers.RetryAfter = "60";
            await ctx.Response.WriteAsync("{\"error\":{\"message\":\"slow down\",\"type\":\"rate_limit_error\"}}");
        }, recordBody: false);
        await using var healthy = await ScriptedUpstream.StartAsync(ScriptedUpstream.Json("u2"), recordBody: false);
        var prefix = Prefix();
        var instances = await StartAsync(3, UpstreamsYaml(limited.Url, healthy.Url), "      - name: u1\n      - name: u2", redis, prefix);
        try
        {
            await LearnedThroughFirstServedByOthersAsync(instances, limited, redis, $"{prefix}up:u1:*:cool");
        }
        finally
        {
            await DisposeAllAsync(instances);
        }
    }

    [RedisFact]
    public async Task KeyDisabledByA401_ThroughOneInstance_IsDisabledOnAll()
    {
        await using var redis = await RedisServer.StartAsync();
        await using var revoked = await ScriptedUpstream.StartAsync(async ctx =>
        {
            ctx.Response.StatusCode = StatusCodes.Status401Unauthorized;
            await ctx.Response.WriteAsync("{\"error\":{\"message\":\"invalid key\",\"type\":\"invalid_request_error\"}}");
        }, recordBody: false);
        await using var healthy = await ScriptedUpstream.StartAsync(ScriptedUpstream.Json("u2"), recordBody: false);
        var prefix = Prefix();
        var instances = await StartAsync(2, UpstreamsYaml(revoked.Url, healthy.Url), "      - name: u1\n      - name: u2", redis, prefix);
        try
        {
            await LearnedThroughFirstServedByOthersAsync(instances, revoked, redis, $"{prefix}up:u1:off");
            // The second instance learned it from the cluster and shows it as its own state.
            await AssertSampleAsync(instances[1].Admin, "llmproxy_upstream_disabled{upstream=\"u1\"}", 1);
        }
        finally
        {
            await DisposeAllAsync(instances);
        }
    }

    [RedisFact]
    public async Task RedisKilledMidRun_LosesNoRequest_FallsBackAndResumesWhenBack()
    {
        await using var redis = await RedisServer.StartAsync();
        await using var upstream = await ScriptedUpstream.StartAsync(ScriptedUpstream.Json("u1"), recordBody: false);
        var prefix = Prefix();
        var instances = await StartAsync(2, $"""
              - name: u1
                url: "{upstream.Url}"
                ratelimit:
                  perSecond: 1
                  burst: 100000
            """, "      - name: u1", redis, prefix, timeoutMs: 200);
        try
        {
            var done = 0;
            var killed = new TaskCompletionSource();
            var workers = Enumerable.Range(0, 4).Select(w => Task.Run(async () =>
            {
                var statuses = new List<HttpStatusCode>();
                for (var i = 0; i < 40; i++)
                {
                    if (Interlocked.Increment(ref done) == 40)
                    {
                        redis.Kill();
                        killed.SetResult();
                    }
                    using var response = await PostAsync(instances[(w + i) % 2].Client);
                    statuses.Add(response.StatusCode);
                }
                return statuses;
            })).ToArray();
            var all = (await Task.WhenAll(workers)).SelectMany(s => s).ToList();
            await killed.Task;
            Assert.Equal(160, all.Count);
            Assert.All(all, s => Assert.Equal(HttpStatusCode.OK, s));
            foreach (var instance in instances)
            {
                await instance.Admin.AssertRedisUpAsync(0);
                Assert.True(Sample(await instance.MetricsAsync(), "llmproxy_cluster_fallbacks_total") > 0);
                // One line per transition, however many requests fell back: one more "unavailable" than "back"
                // (a loaded machine may have made Redis miss the timeout before, each time with its own pair).
                await instance.Process.WaitForOutputAsync("unavailable");
                var lines = instance.Process.Stdout.Split('\n').Where(l => l.Contains("cluster: redis", StringComparison.Ordinal)).ToList();
                Assert.Equal(1, lines.Count(l => l.Contains("unavailable", StringComparison.Ordinal)) - lines.Count(l => l.Contains("sharing state again", StringComparison.Ordinal)));
            }

            await redis.StartAgainAsync(); // empty: no persistence
            foreach (var instance in instances)
            {
                await instance.Admin.AssertRedisUpAsync(1, TimeSpan.FromSeconds(20));
                await instance.Process.WaitForOutputAsync("sharing state again", count: instance.Process.Stdout.Split('\n').Count(l => l.Contains("unavailable", StringComparison.Ordinal)));
                using var response = await PostAsync(instance.Client);
                Assert.Equal(HttpStatusCode.OK, response.StatusCode);
            }
            // The new server holds the shared bucket again (a burst this deep, drawn from, lives for minutes).
            Assert.NotNull(await redis.KeyAsync($"{prefix}up:u1:*:rps"));
        }
        finally
        {
            await DisposeAllAsync(instances);
        }
    }

    /// <summary>Through the first instance until <paramref name="failing"/> (u1) has answered once — round robin: within
    /// two requests, failed over to u2 — and Redis holds <paramref name="key"/>; then six requests through each other
    /// instance, all served by u2. Without sharing, each other instance would have sent u1 its own first request.</summary>
    private static async Task LearnedThroughFirstServedByOthersAsync(Instance[] instances, ScriptedUpstream failing, RedisServer redis, string key)
    {
        while (failing.Count == 0)
        {
            using var response = await PostAsync(instances[0].Client);
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        }
        await WaitUntilAsync(async () => await redis.KeyAsync(key) is not null, TimeSpan.FromSeconds(5));
        foreach (var other in instances.Skip(1))
        {
            for (var i = 0; i < 6; i++)
            {
                using var response = await PostAsync(other.Client);
                Assert.Equal(HttpStatusCode.OK, response.StatusCode);
            }
        }
        Assert.Equal(1, failing.Count);
    }

    private static string UpstreamsYaml(string first, string second) => $"""
          - name: u1
            url: "{first}"
            auth:
              type: bearer
              token: "sk-cluster-test-one-1111"
          - name: u2
            url: "{second}"
            auth:
              type: bearer
              token: "sk-cluster-test-two-2222"
        """;

    private static async Task<List<HttpStatusCode>> SendManyAsync(HttpClient client, int total, int concurrency, string body = "{\"model\":\"m\"}")
    {
        var left = total;
        var statuses = new System.Collections.Concurrent.ConcurrentBag<HttpStatusCode>();
        await Task.WhenAll(Enumerable.Range(0, concurrency).Select(_ => Task.Run(async () =>
        {
            while (Interlocked.Decrement(ref left) >= 0)
            {
                using var response = await PostAsync(client, body);
                statuses.Add(response.StatusCode);
            }
        })));
        return [.. statuses];
    }

    private static async Task DisposeAllAsync(Instance[] instances)
    {
        foreach (var instance in instances)
        {
            await instance.DisposeAsync();
        }
    }
}

internal static class ClusterAssertions
{
    /// <summary>Waits until <c>llmproxy_cluster_redis_up</c> reads <paramref name="expected"/>.</summary>
    public static async Task AssertRedisUpAsync(this HttpClient admin, double expected, TimeSpan? timeout = null)
    {
        var metrics = "";
        await WaitUntilAsync(async () =>
            {
                metrics = await admin.GetStringAsync("/metrics");
                return metrics.Contains("llmproxy_cluster_redis_up ", StringComparison.Ordinal) && Sample(metrics, "llmproxy_cluster_redis_up") == expected;
            },
            timeout ?? TimeSpan.FromSeconds(10),
            () => Task.FromResult($"llmproxy_cluster_redis_up: expected {expected}\n{Lines(metrics, "llmproxy_cluster")}"));
    }
}
