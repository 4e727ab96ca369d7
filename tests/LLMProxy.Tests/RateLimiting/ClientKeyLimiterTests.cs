using LLMProxy.Configuration;
using LLMProxy.RateLimiting;
using Microsoft.Extensions.Time.Testing;

namespace LLMProxy.Tests.RateLimiting;

/// <summary>One client key's limits (SPEC §15) on fake time.</summary>
public class ClientKeyLimiterTests
{
    private static ClientKeyLimiter Limiter(FakeTimeProvider time, int? perSecond = null, int? burst = null, long? tpm = null) =>
        new(new ClientKeyConfig
        {
            Name = "k",
            Key = "0123456789abcdef",
            Ratelimit = perSecond is { } ps ? new ClientKeyRateLimitConfig { PerSecond = ps, Burst = burst } : null,
            TokensPerMinute = tpm,
        }, time);

    [Fact]
    public void Unlimited_AdmitsEverything_ReservesNothing()
    {
        var limiter = Limiter(new FakeTimeProvider());
        for (var i = 0; i < 1000; i++)
        {
            Assert.True(limiter.TryAcquire(out _));
        }
        Assert.Equal(0, limiter.TryReserve(5000, out _));
        Assert.Null(limiter.Tokens);
    }

    [Fact]
    public void Ratelimit_BurstDefaultsToPerSecond_RefusesWithRetryAfter_RefillsWithTime()
    {
        var time = new FakeTimeProvider();
        var limiter = Limiter(time, perSecond: 2);
        Assert.True(limiter.TryAcquire(out _));
        Assert.True(limiter.TryAcquire(out _));
        Assert.False(limiter.TryAcquire(out var retryAfter));
        Assert.Equal(TimeSpan.FromMilliseconds(500), retryAfter);
        time.Advance(TimeSpan.FromMilliseconds(500));
        Assert.True(limiter.TryAcquire(out _));
        Assert.False(limiter.TryAcquire(out _));
    }

    [Fact]
    public void Tokens_ReserveSettleRefund_RetryAfterIsTheRefillTime()
    {
        var time = new FakeTimeProvider();
        var limiter = Limiter(time, tpm: 6000);
        var first = limiter.TryReserve(4000, out _);
        Assert.Equal(4000, first);
        Assert.Equal(-1, limiter.TryReserve(4000, out var retryAfter));
        Assert.Equal(TimeSpan.FromSeconds(20), retryAfter); // 2,000 missing at 100 per second
        limiter.Settle(first, 1000);                        // the answer used 1,000: 3,000 come back
        Assert.Equal(4000, limiter.TryReserve(4000, out _));
        Assert.Equal(1000, limiter.Tokens!.Available);
    }

    [Fact]
    public void Lease_DisposedUnsettledRefunds_SettledOnceOnly_RefusedGivesNoLease()
    {
        var limiter = Limiter(new FakeTimeProvider(), tpm: 6000);
        using (var lease = ClientTokenLease.TryTake(limiter, 4000, out var refused, out _))
        {
            Assert.False(refused);
            Assert.Equal(4000, lease!.Reserved);
            Assert.Equal(2000, limiter.Tokens!.Available);
        }
        Assert.Equal(6000, limiter.Tokens!.Available); // disposed unsettled: refunded

        var kept = ClientTokenLease.TryTake(limiter, 4000, out _, out _)!;
        kept.Settle(null);                               // an answer without usage keeps the estimate
        kept.Settle(0);                                  // a second settlement changes nothing
        kept.Dispose();                                  // nor does disposing
        Assert.Equal(2000, limiter.Tokens.Available);

        Assert.Null(ClientTokenLease.TryTake(limiter, 4000, out var over, out var retryAfter));
        Assert.True(over);
        Assert.Equal(TimeSpan.FromSeconds(20), retryAfter);
        Assert.Null(ClientTokenLease.TryTake(Limiter(new FakeTimeProvider()), 4000, out var unlimited, out _));
        Assert.False(unlimited);
    }

    /// <summary>Many requests reserving and settling at once (usage never above the estimate): the budget never goes
    /// below zero and never admits more than it holds.</summary>
    [Fact]
    public async Task Tokens_Concurrent_NeverNegative_NeverOverAdmitted()
    {
        var time = new FakeTimeProvider();
        var limiter = Limiter(time, tpm: 10_000);
        long held = 0, maxHeld = 0, minSeen = long.MaxValue;
        var workers = Enumerable.Range(0, 8).Select(w => Task.Run(() =>
        {
            var random = new Random(w);
            for (var i = 0; i < 5_000; i++)
            {
                var want = random.Next(1, 3000);
                var reserved = limiter.TryReserve(want, out _);
                if (reserved <= 0)
                {
                    continue;
                }
                var now = Interlocked.Add(ref held, reserved);
                InterlockedMax(ref maxHeld, now);
                InterlockedMin(ref minSeen, limiter.Tokens!.Available);
                Interlocked.Add(ref held, -reserved);
                limiter.Settle(reserved, random.Next(0, (int)reserved + 1));
            }
        })).ToArray();
        await Task.WhenAll(workers);

        Assert.True(minSeen >= 0, $"budget went to {minSeen}");
        Assert.True(maxHeld <= 10_000, $"{maxHeld} reserved at once");
        Assert.InRange(limiter.Tokens!.Available, 0, 10_000);
    }

    private static void InterlockedMax(ref long target, long value)
    {
        var seen = Interlocked.Read(ref target);
        while (value > seen && Interlocked.CompareExchange(ref target, value, seen) is var now && now != seen)
        {
            seen = now;
        }
    }

    private static void InterlockedMin(ref long target, long value)
    {
        var seen = Interlocked.Read(ref target);
        while (value < seen && Interlocked.CompareExchange(ref target, value, seen) is var now && now != seen)
        {
            seen = now;
        }
    }
}
