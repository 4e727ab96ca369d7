using LLMProxy.Cluster;
using LLMProxy.Configuration;
using LLMProxy.Observability;
using LLMProxy.Runtime;
using LLMProxy.Tests.Infrastructure;
using Microsoft.Extensions.Logging.Abstractions;
using StackExchange.Redis;

namespace LLMProxy.Tests.Cluster;

/// <summary>The shared-state scripts against a real redis-server: GCRA and token-bucket arithmetic in Redis time, all or
/// nothing taken, never below zero under concurrent callers. Rates are chosen so that the refill during a test is
/// below one token, which makes every count exact.</summary>
public sealed class SharedScriptsTests : IAsyncLifetime
{
    private RedisServer _redis = null!;
    private RedisCluster _cluster = null!;
    private readonly string _prefix = "t" + Guid.NewGuid().ToString("N")[..8] + ":";

    public async Task InitializeAsync()
    {
        _redis = await RedisServer.StartAsync();
        _cluster = new RedisCluster(new RedisConfig { Url = _redis.Url, Prefix = _prefix, Timeout = 2000 }, new ProxyMetrics(false), NullLogger.Instance);
        await WaitUntilAsync(() => _cluster.IsUp, TimeSpan.FromSeconds(10));
    }

    public async Task DisposeAsync()
    {
        _cluster.Dispose();
        await _redis.DisposeAsync();
    }

    private async Task<int[]> Take(string key, double perSecond, int burst)
    {
        var (interval, depth) = SharedUpstream.Gcra(perSecond, burst);
        var result = await _cluster.EvaluateAsync(SharedScripts.Take, [_prefix + key], [interval, depth]);
        Assert.NotNull(result);
        return [.. ((RedisResult[])result!).Select(r => (int)r)];
    }

    [RedisFact]
    public async Task Gcra_BurstThenRefusedWithRetryAfterOfOneInterval()
    {
        for (var i = 0; i < 5; i++)
        {
            Assert.Equal(0, (await Take("b", 0.1, 5))[0]);
        }
        var refused = await Take("b", 0.1, 5);
        Assert.Equal(1, refused[0]);
        // One token every 10 s: the next one is at most 10 s away, and most of it is still ahead.
        Assert.InRange(refused[1], 9_000, 10_000);
    }

    [RedisFact]
    public async Task Gcra_ConcurrentCallers_AdmitExactlyTheBurst()
    {
        var results = await Task.WhenAll(Enumerable.Range(0, 200).Select(_ => Task.Run(() => Take("c", 0.01, 20))));
        Assert.Equal(20, results.Count(r => r[0] == 0));
        Assert.Equal(180, results.Count(r => r[0] == 1));
    }

    private (UpstreamRuntime Upstream, MemberMetrics Metrics) Upstream(string name, UpstreamRateLimitConfig limits)
    {
        var upstream = new UpstreamRuntime(new UpstreamConfig
        {
            Name = name,
            Url = "http://127.0.0.1:1",
            Auth = new AuthConfig { Type = AuthType.Bearer, Token = "sk-test-" + name },
            Ratelimit = limits,
        }, TimeProvider.System);
        upstream.AttachShared(_cluster);
        return (upstream, new MemberMetrics(new ProxyMetrics(false), "g", name, "roundrobin"));
    }

    /// <summary>The shared TPM level as stored (whole tokens, rounded down).</summary>
    private async Task<double> TpmLevel(string name) => await Level((await _redis.KeyAsync($"{_prefix}up:{name}:*:tpm"))!);

    /// <summary>A stored token-bucket level (whole tokens, rounded down).</summary>
    internal static async Task<double> Level(RedisServer redis, string key) =>
        double.Parse(await SecondLine(redis, $"EVAL \"return tostring(math.floor(tonumber(redis.call('HGET', KEYS[1], 'l'))))\" 1 {key}"),
            System.Globalization.CultureInfo.InvariantCulture);

    private Task<double> Level(string key) => Level(_redis, key);

    // A bulk reply: "$<length>", then the value.
    private static async Task<string> SecondLine(RedisServer redis, string command)
    {
        using var client = new System.Net.Sockets.TcpClient();
        await client.ConnectAsync(System.Net.IPAddress.Loopback, redis.Port);
        var stream = client.GetStream();
        await stream.WriteAsync(System.Text.Encoding.ASCII.GetBytes(command + "\r\n"));
        using var reader = new StreamReader(stream, System.Text.Encoding.ASCII);
        var first = await reader.ReadLineAsync();
        Assert.StartsWith("$", first);
        return (await reader.ReadLineAsync())!;
    }

    [RedisFact]
    public async Task Tpm_ReserveSettleRefund_MoveTheSharedLevel()
    {
        var (upstream, _) = Upstream("tpm", new UpstreamRateLimitConfig { PerSecond = 1000, TokensPerMinute = 1_000_000 });
        var shared = upstream.Shared!;
        var first = await shared.AcquireAsync(upstream, trial: false, 600_000, null);
        Assert.Equal((SharedVerdict.Admitted, 600_000L), (first.Verdict, first.Reserved));
        var second = await shared.AcquireAsync(upstream, trial: false, 600_000, null);
        Assert.Equal(SharedVerdict.UpstreamRefused, second.Verdict);
        Assert.InRange(second.RetryAfter.TotalSeconds, 11, 13); // 200 000 short at 1 000 000/min: 12 s
        // The refusal is local state now: the next selection skips the key without asking.
        Assert.Equal(Unavailability.RateLimited, upstream.Check());

        shared.Settle(600_000, 100_000); // real usage far below the estimate gives the rest back
        await WaitUntilAsync(async () => await TpmLevel("tpm") >= 900_000, TimeSpan.FromSeconds(5));
        shared.Settle(300_000, 0); // a refund, capped at the capacity
        await WaitUntilAsync(async () => await TpmLevel("tpm") == 1_000_000, TimeSpan.FromSeconds(5));
    }

    [RedisFact]
    public async Task Tpm_ConcurrentReservations_NeverOverdraw()
    {
        var (upstream, _) = Upstream("tpmc", new UpstreamRateLimitConfig { PerSecond = 100_000, TokensPerMinute = 6_000 });
        var results = await Task.WhenAll(Enumerable.Range(0, 100).Select(_ => Task.Run(async () =>
            (await upstream.Shared!.AcquireAsync(upstream, trial: false, 500, null)).Verdict)));
        // 6 000 tokens, 100 per second refill: 12 reservations of 500, one more at most if the calls took over 5 s.
        Assert.InRange(results.Count(v => v == SharedVerdict.Admitted), 12, 13);
        Assert.True(await TpmLevel("tpmc") >= 0, "the shared TPM level went below zero");
    }

    [RedisFact]
    public async Task CoolDown_ParkedByOne_RefusesOthersAndParksThemLocally()
    {
        var (a, _) = Upstream("cool", new UpstreamRateLimitConfig { PerSecond = 1000 });
        var (b, _) = Upstream("cool", new UpstreamRateLimitConfig { PerSecond = 1000 }); // another instance's view
        a.Shared!.Park(TimeSpan.FromSeconds(30));
        a.Shared!.Park(TimeSpan.FromSeconds(5)); // a shorter one never shortens it
        await WaitUntilAsync(async () => (await b.Shared!.AcquireAsync(b, false, 0, null)).Verdict == SharedVerdict.UpstreamRefused, TimeSpan.FromSeconds(5));
        Assert.True(b.CoolDown.IsCooling);
        Assert.InRange((b.CoolDown.Until!.Value - DateTimeOffset.UtcNow).TotalSeconds, 20, 30);
    }

    [RedisFact]
    public async Task Disabled_SharedForTheSameCredentialOnly_AndTrialsPass()
    {
        var (a, _) = Upstream("off", new UpstreamRateLimitConfig { PerSecond = 1000 });
        var (b, _) = Upstream("off", new UpstreamRateLimitConfig { PerSecond = 1000 });
        a.Disable("status_401");
        await WaitUntilAsync(async () => (await b.Shared!.AcquireAsync(b, false, 0, null)).Verdict == SharedVerdict.UpstreamRefused, TimeSpan.FromSeconds(5));
        Assert.Equal("status_401", b.Disabled?.Reason);
        // A trial is never refused for being disabled: it is how a key comes back.
        Assert.Equal(SharedVerdict.Admitted, (await b.Shared!.AcquireAsync(b, trial: true, 0, null)).Verdict);

        // The same name with another credential (a rotated key after a reload) is not disabled.
        var rotated = new UpstreamRuntime(new UpstreamConfig
        {
            Name = "off", Url = "http://127.0.0.1:1", Auth = new AuthConfig { Type = AuthType.Bearer, Token = "sk-rotated" },
            Ratelimit = new UpstreamRateLimitConfig { PerSecond = 1000 },
        }, TimeProvider.System);
        rotated.AttachShared(_cluster);
        Assert.Equal(SharedVerdict.Admitted, (await rotated.Shared!.AcquireAsync(rotated, false, 0, null)).Verdict);

        // Enabled by a passed trial on one instance: admitted again on the cluster.
        b.EndTrial(success: true);
        await WaitUntilAsync(async () => (await a.Shared!.AcquireAsync(a, false, 0, null)).Verdict == SharedVerdict.Admitted, TimeSpan.FromSeconds(5));
    }

    [RedisFact]
    public async Task ClientBucket_TakenWithTheAdmission_OnlyWhenAdmitted()
    {
        var (upstream, _) = Upstream("cl", new UpstreamRateLimitConfig { PerSecond = 1, Burst = 1 });
        var bucket = new SharedBucket(_cluster, "fwd:main:ip", 0.01, 2);
        Assert.Equal(SharedVerdict.Admitted, (await upstream.Shared!.AcquireAsync(upstream, false, 0, [bucket.For("10.0.0.1")])).Verdict);
        // The upstream's one token is spent: refused, and the client's bucket is not charged for it.
        Assert.Equal(SharedVerdict.UpstreamRefused, (await upstream.Shared!.AcquireAsync(upstream, false, 0, [bucket.For("10.0.0.1")])).Verdict);
        Assert.Equal(0, (await Take("cl:fwd:main:ip:10.0.0.1", 0.01, 2))[0]); // the second token was still there
        var (other, _) = Upstream("cl2", new UpstreamRateLimitConfig { PerSecond = 1000 });
        var limited = await other.Shared!.AcquireAsync(other, false, 0, [bucket.For("10.0.0.1")]);
        Assert.Equal(SharedVerdict.ClientLimited, limited.Verdict);
        Assert.InRange(limited.RetryAfter.TotalSeconds, 90, 100);
        // Another client has its own bucket.
        Assert.Equal(SharedVerdict.Admitted, (await other.Shared!.AcquireAsync(other, false, 0, [bucket.For("10.0.0.2")])).Verdict);
    }

    [RedisFact]
    public async Task ClientKeyBudget_ReservedWithTheAdmission_OnlyWhenAdmitted_SettledAndRefunded()
    {
        // 6 000 tokens a minute: 100 a second of refill, so levels are read with that slack.
        var budget = new SharedBudget(_cluster, "fwd:main:tpm:team", 6_000);
        var key = _prefix + "cl:fwd:main:tpm:team";
        Assert.Equal((RedisKey)key, budget.Key);
        var (busy, _) = Upstream("ckb", new UpstreamRateLimitConfig { PerSecond = 1000, RequestsPerMinute = 1 });
        Assert.Equal(SharedVerdict.Admitted, (await busy.Shared!.AcquireAsync(busy, false, 0, null)).Verdict);
        // The upstream's one request a minute is spent: refused, and the key's budget is not charged for it.
        var refused = await busy.Shared!.AcquireAsync(busy, false, 4_000, null, new SharedBudgetTake(budget, 4_000));
        Assert.Equal(SharedVerdict.UpstreamRefused, refused.Verdict);
        Assert.Equal(":0", await _redis.CommandAsync($"EXISTS {key}"));

        var (free, _) = Upstream("ckf", new UpstreamRateLimitConfig { PerSecond = 1000 });
        var admitted = await free.Shared!.AcquireAsync(free, false, 4_000, null, new SharedBudgetTake(budget, 4_000));
        Assert.Equal((SharedVerdict.Admitted, 4_000L), (admitted.Verdict, admitted.ClientReserved));
        Assert.InRange(await Level(key), 2_000, 2_500);
        // 2 000 short of 4 000 at 100 a second: 20 s; a client key's refusal, whatever the upstream could take.
        var limited = await free.Shared!.AcquireAsync(free, false, 4_000, null, new SharedBudgetTake(budget, 4_000));
        Assert.Equal((SharedVerdict.ClientLimited, true, 0L), (limited.Verdict, limited.ByClientKey, limited.ClientReserved));
        Assert.InRange(limited.RetryAfter.TotalSeconds, 14, 20);
        Assert.InRange(await Level(key), 2_000, 2_500); // the refusal took nothing

        budget.Settle(4_000, 1_000); // real usage below the estimate gives the rest back
        await WaitUntilAsync(async () => await Level(key) >= 5_000, TimeSpan.FromSeconds(5));
        budget.Settle(4_000, 0); // a refund, capped at the capacity
        await WaitUntilAsync(async () => await Level(key) == 6_000, TimeSpan.FromSeconds(5));
        // A request larger than the whole budget reserves the whole budget (it waits for a full one, never forever).
        var whole = await free.Shared!.AcquireAsync(free, false, 50_000, null, new SharedBudgetTake(budget, 50_000));
        Assert.Equal((SharedVerdict.Admitted, 6_000L), (whole.Verdict, whole.ClientReserved));
    }

    [RedisFact]
    public async Task ClientKeyBudget_AndClientBuckets_RideTheSameAdmission()
    {
        var (upstream, _) = Upstream("ckmix", new UpstreamRateLimitConfig { PerSecond = 1000 });
        var bucket = new SharedBucket(_cluster, "fwd:main:key", 0.01, 1, isClientKey: true);
        var budget = new SharedBudget(_cluster, "fwd:main:tpm:mix", 600); // 10 tokens a second of refill
        var first = await upstream.Shared!.AcquireAsync(upstream, false, 100, [bucket.For("mix")], new SharedBudgetTake(budget, 100));
        Assert.Equal((SharedVerdict.Admitted, 100L), (first.Verdict, first.ClientReserved));
        // The key's request bucket (burst 1) is empty now: refused by it, and the budget is not charged.
        var level = await Level(_prefix + "cl:fwd:main:tpm:mix");
        var second = await upstream.Shared!.AcquireAsync(upstream, false, 100, [bucket.For("mix")], new SharedBudgetTake(budget, 100));
        Assert.Equal((SharedVerdict.ClientLimited, true), (second.Verdict, second.ByClientKey));
        Assert.InRange(await Level(_prefix + "cl:fwd:main:tpm:mix"), level, level + 50);
    }

    [RedisFact]
    public async Task Headroom_LearnedByOne_BlocksAllWhenSpent()
    {
        var (a, _) = Upstream("head", new UpstreamRateLimitConfig { PerSecond = 1000 });
        var (b, _) = Upstream("head", new UpstreamRateLimitConfig { PerSecond = 1000 });
        using var response = new HttpResponseMessage();
        response.Headers.TryAddWithoutValidation("x-ratelimit-remaining-requests", "2");
        response.Headers.TryAddWithoutValidation("x-ratelimit-reset-requests", "30s");
        a.Learn(response.Headers);
        await WaitUntilAsync(async () => await _redis.KeyAsync($"{_prefix}up:head:*:head") is not null, TimeSpan.FromSeconds(5));
        Assert.Equal(SharedVerdict.Admitted, (await b.Shared!.AcquireAsync(b, false, 10, null)).Verdict);
        Assert.Equal(SharedVerdict.Admitted, (await b.Shared!.AcquireAsync(b, false, 10, null)).Verdict);
        var blocked = await b.Shared!.AcquireAsync(b, false, 10, null);
        Assert.Equal(SharedVerdict.UpstreamRefused, blocked.Verdict);
        Assert.InRange(blocked.RetryAfter.TotalSeconds, 20, 30);
    }
    [RedisFact]
    public async Task Headroom_EstimateAsLargeAsAClientCanAsk_IsCountedAndKeepsRedisUp()
    {
        // Requests learned, tokens unknown: the admission adds the estimate to what was sent since. A client's
        // max_tokens makes it up to long.MaxValue / 2 (TokenEstimate.For), which Lua cannot hand to HINCRBY as is.
        var (upstream, _) = Upstream("huge", new UpstreamRateLimitConfig { PerSecond = 1000 });
        using var response = new HttpResponseMessage();
        response.Headers.TryAddWithoutValidation("x-ratelimit-remaining-requests", "2");
        response.Headers.TryAddWithoutValidation("x-ratelimit-reset-requests", "30s");
        upstream.Learn(response.Headers);
        await WaitUntilAsync(async () => await _redis.KeyAsync($"{_prefix}up:huge:*:head") is not null, TimeSpan.FromSeconds(5));
        var huge = global::LLMProxy.RateLimiting.TokenEstimate.For(0, long.MaxValue);
        Assert.Equal(SharedVerdict.Admitted, (await upstream.Shared!.AcquireAsync(upstream, false, huge, null)).Verdict);
        Assert.True(_cluster.IsUp);
        Assert.Equal(SharedVerdict.Admitted, (await upstream.Shared!.AcquireAsync(upstream, false, huge, null)).Verdict);
        // Both were counted by Redis (not let through locally): the learned two requests are spent.
        Assert.Equal(SharedVerdict.UpstreamRefused, (await upstream.Shared!.AcquireAsync(upstream, false, 10, null)).Verdict);
        Assert.True(_cluster.IsUp);
    }
}
