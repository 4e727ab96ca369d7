using System.Net;
using LLMProxy.Configuration;
using LLMProxy.RateLimiting;
using Microsoft.Extensions.Time.Testing;

namespace LLMProxy.Tests.RateLimiting;

public sealed class ClientRateLimiterTests : IDisposable
{
    private readonly FakeTimeProvider _time = new();
    private readonly List<IDisposable> _disposables = [];

    public void Dispose() => _disposables.ForEach(d => d.Dispose());

    private ClientRateLimiter Create(int perSecond = 10, int burst = 2, int cap = ClientRateLimiter.DefaultMaxTrackedClients)
    {
        var limiter = new ClientRateLimiter(new RateLimitConfig { PerSecond = perSecond, Burst = burst }, _time, cap);
        _disposables.Add(limiter);
        return limiter;
    }

    private static IPAddress Ip(int i) => new(new byte[] { 100, (byte)(i >> 16), (byte)(i >> 8), (byte)i });

    [Fact]
    public void TryAcquire_OverBurst_RefusedWithRetryAfter()
    {
        ClientRateLimiter limiter = Create(perSecond: 10, burst: 2);
        Assert.True(limiter.TryAcquire(Ip(1), out _));
        Assert.True(limiter.TryAcquire(Ip(1), out _));
        Assert.False(limiter.TryAcquire(Ip(1), out TimeSpan retryAfter));
        Assert.Equal(TimeSpan.FromMilliseconds(100), retryAfter);
    }

    [Fact]
    public void TryAcquire_DifferentIps_IsolatedBuckets()
    {
        ClientRateLimiter limiter = Create(perSecond: 1, burst: 1);
        Assert.True(limiter.TryAcquire(Ip(1), out _));
        Assert.False(limiter.TryAcquire(Ip(1), out _));
        Assert.True(limiter.TryAcquire(Ip(2), out _));
        Assert.True(limiter.TryAcquire(IPAddress.IPv6Loopback, out _));
        Assert.Equal(3, limiter.TrackedClients);
    }

    [Fact]
    public void TryAcquire_EqualAddressDifferentInstance_SameBucket()
    {
        ClientRateLimiter limiter = Create(perSecond: 1, burst: 1);
        Assert.True(limiter.TryAcquire(IPAddress.Parse("203.0.113.9"), out _));
        Assert.False(limiter.TryAcquire(IPAddress.Parse("203.0.113.9"), out _));
        Assert.Equal(1, limiter.TrackedClients);
    }

    [Fact]
    public void TryAcquire_AfterRefill_AllowedAgain()
    {
        ClientRateLimiter limiter = Create(perSecond: 10, burst: 1);
        Assert.True(limiter.TryAcquire(Ip(1), out _));
        Assert.False(limiter.TryAcquire(Ip(1), out _));
        _time.Advance(TimeSpan.FromMilliseconds(100));
        Assert.True(limiter.TryAcquire(Ip(1), out _));
    }

    [Fact]
    public void TryAcquire_KnownClient_DoesNotAllocate()
    {
        ClientRateLimiter limiter = Create(perSecond: 1000, burst: 1000);
        IPAddress ip = Ip(7);
        limiter.TryAcquire(ip, out _);
        long before = GC.GetAllocatedBytesForCurrentThread();
        for (int i = 0; i < 100; i++)
        {
            limiter.TryAcquire(ip, out _);
        }

        Assert.Equal(0, GC.GetAllocatedBytesForCurrentThread() - before);
    }

    [Fact]
    public void Sweep_IdleFullBuckets_EvictedAfterIdleLimit()
    {
        ClientRateLimiter limiter = Create(perSecond: 10, burst: 2);
        for (int i = 0; i < 1000; i++)
        {
            limiter.TryAcquire(Ip(i), out _);
        }

        Assert.Equal(1000, limiter.TrackedClients);
        _time.Advance(TimeSpan.FromSeconds(5)); // full since ~0.1 s, not idle long enough
        Assert.Equal(1000, limiter.TrackedClients);
        _time.Advance(TimeSpan.FromSeconds(6)); // timer sweeps once per second on fake time
        Assert.Equal(0, limiter.TrackedClients);
    }

    [Fact]
    public void Sweep_ActiveClient_KeptWhileIdleOnesGo()
    {
        ClientRateLimiter limiter = Create(perSecond: 1, burst: 5);
        limiter.TryAcquire(Ip(1), out _);
        for (int s = 0; s < 20; s++)
        {
            Assert.True(limiter.TryAcquire(Ip(2), out _)); // one per second keeps it below full
            _time.Advance(TimeSpan.FromSeconds(1));
        }

        Assert.Equal(1, limiter.TrackedClients);
    }

    [Fact]
    public void Sweep_EmptiedBucket_NotEvictedBeforeItRefills_SoLimitIsNotReset()
    {
        ClientRateLimiter limiter = Create(perSecond: 1, burst: 20);
        for (int i = 0; i < 20; i++)
        {
            limiter.TryAcquire(Ip(1), out _);
        }

        _time.Advance(TimeSpan.FromSeconds(15)); // 15 of 20 tokens back: not full, must be kept
        Assert.Equal(1, limiter.TrackedClients);
        Assert.Equal(15, Enumerable.Range(0, 30).Count(_ => limiter.TryAcquire(Ip(1), out TimeSpan _)));
    }

    [Fact]
    public void Flood_100kDistinctIps_NeverExceedsCapAndDrainsAfterIdle()
    {
        const int Cap = 10_000;
        ClientRateLimiter limiter = Create(perSecond: 10, burst: 5, cap: Cap);
        int max = 0;
        for (int i = 0; i < 100_000; i++)
        {
            limiter.TryAcquire(Ip(i), out _);
            max = Math.Max(max, limiter.TrackedClients);
            if (i % 1000 == 999)
            {
                _time.Advance(TimeSpan.FromMilliseconds(10));
            }
        }

        Assert.True(max <= Cap, $"max tracked {max}");
        Assert.True(limiter.TrackedClients > 0);
        _time.Advance(TimeSpan.FromSeconds(12));
        Assert.Equal(0, limiter.TrackedClients);
    }

    [Fact]
    public void Flood_DefaultCap_Bounded()
    {
        ClientRateLimiter limiter = Create(perSecond: 100, burst: 200);
        for (int i = 0; i < 150_000; i++)
        {
            limiter.TryAcquire(Ip(i), out _);
        }

        Assert.Equal(ClientRateLimiter.DefaultMaxTrackedClients, limiter.TrackedClients);
    }

    [Fact]
    public void Cap_Reached_FullBucketsMakeRoomForNewClients()
    {
        ClientRateLimiter limiter = Create(perSecond: 10, burst: 2, cap: 3);
        for (int i = 0; i < 3; i++)
        {
            limiter.TryAcquire(Ip(i), out _);
        }

        _time.Advance(TimeSpan.FromMilliseconds(100)); // all three full again, but idle for < 10 s
        Assert.True(limiter.TryAcquire(Ip(99), out _));
        Assert.Equal(1, limiter.TrackedClients);
        Assert.True(limiter.TryAcquire(Ip(99), out _));
        Assert.False(limiter.TryAcquire(Ip(99), out _)); // its own bucket, not an untracked pass
    }

    [Fact]
    public void Cap_ReachedWithAllBucketsBusy_NewClientsShareOverflowBucket()
    {
        ClientRateLimiter limiter = Create(perSecond: 1, burst: 2, cap: 2);
        limiter.TryAcquire(Ip(1), out _);
        limiter.TryAcquire(Ip(2), out _);

        Assert.True(limiter.TryAcquire(Ip(3), out _));
        Assert.True(limiter.TryAcquire(Ip(4), out _));
        Assert.False(limiter.TryAcquire(Ip(5), out TimeSpan retryAfter)); // the overflow bucket is shared
        Assert.Equal(TimeSpan.FromSeconds(1), retryAfter);
        Assert.Equal(2, limiter.TrackedClients);

        Assert.True(limiter.TryAcquire(Ip(1), out _)); // tracked clients keep their own allowance
    }

    [Fact]
    public void Concurrent_ManyThreadsSameAndDistinctIps_CountConsistent()
    {
        ClientRateLimiter limiter = Create(perSecond: 1, burst: 1000);
        Parallel.For(0, 40_000, new ParallelOptions { MaxDegreeOfParallelism = 4 }, i => limiter.TryAcquire(Ip(i % 2000), out _));
        Assert.Equal(2000, limiter.TrackedClients);
        _time.Advance(TimeSpan.FromSeconds(1000));
        Assert.Equal(0, limiter.TrackedClients);
    }

    [Fact]
    public void Dispose_StopsSweepTimer()
    {
        ClientRateLimiter limiter = Create();
        limiter.TryAcquire(Ip(1), out _);
        limiter.Dispose();
        _time.Advance(TimeSpan.FromMinutes(1)); // no callback into a disposed limiter
        Assert.Equal(0, limiter.TrackedClients);
    }
}
