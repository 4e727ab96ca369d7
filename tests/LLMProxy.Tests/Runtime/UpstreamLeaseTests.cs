using LLMProxy.Configuration;
using LLMProxy.Observability;
using LLMProxy.Resilience;
using LLMProxy.Runtime;
using Microsoft.Extensions.Time.Testing;

namespace LLMProxy.Tests.Runtime;

/// <summary>A lease is acquire and release in one object: whatever happens between, the breaker slot, the in-flight
/// count and its gauge come back, and the verdict recorded on it (neutral by default) is what the breaker hears.</summary>
public class UpstreamLeaseTests
{
    private readonly FakeTimeProvider _time = new();

    private static readonly BreakerConfig OneTrial = new() { Threshold = 0.5, Cooldown = 1000, MaxRequests = 1, Interval = 10_000, MinRequests = 1 };

    private (UpstreamRuntime Upstream, MemberMetrics Metrics, ProxyMetrics Registry) Create(RateLimitConfig? limit = null)
    {
        var config = new UpstreamConfig { Name = "u", Url = "http://127.0.0.1:1", Breaker = OneTrial, Ratelimit = limit is null ? null : new UpstreamRateLimitConfig { PerSecond = limit.PerSecond, Burst = limit.Burst } };
        var registry = new ProxyMetrics(includeProcessMetrics: false);
        return (new UpstreamRuntime(config, _time), new MemberMetrics(registry, "g", "u", "roundrobin"), registry);
    }

    /// <summary>Opens the breaker and lets its cool-down pass: half-open with one trial slot.</summary>
    private void HalfOpen(UpstreamRuntime upstream, MemberMetrics metrics)
    {
        using (var first = upstream.TryLease(0, metrics)!)
        {
            first.Record(AttemptVerdict.Failure);
        }
        Assert.Equal(CircuitState.Open, upstream.Breaker!.State);
        _time.Advance(TimeSpan.FromMilliseconds(1001));
        Assert.Equal(CircuitState.HalfOpen, upstream.Breaker.State);
    }

    [Fact]
    public void Lease_DisposedWithoutVerdict_IsNeutral_TrialSlotComesBack()
    {
        var (upstream, metrics, _) = Create();
        HalfOpen(upstream, metrics);

        var lease = upstream.TryLease(0, metrics);
        Assert.NotNull(lease);
        Assert.Null(upstream.TryLease(0, metrics)); // the only trial slot is taken
        lease.Dispose();

        Assert.Equal(CircuitState.HalfOpen, upstream.Breaker!.State);
        using var again = upstream.TryLease(0, metrics);
        Assert.NotNull(again);
    }

    [Fact]
    public void Lease_ExceptionBetweenAcquireAndRelease_NothingLeaks()
    {
        var (upstream, metrics, _) = Create();
        HalfOpen(upstream, metrics);

        Assert.Throws<InvalidOperationException>((Action)(() =>
        {
            using var lease = upstream.TryLease(0, metrics)!;
            Assert.Equal(1, upstream.InFlight);
            throw new InvalidOperationException("a bug between select and send");
        }));

        Assert.Equal(0, upstream.InFlight);
        Assert.Equal(0, metrics.InFlight.Value);
        Assert.NotNull(upstream.TryLease(0, metrics));
    }

    [Theory]
    [InlineData(1, 0)] // success closes
    [InlineData(2, 2)] // failure reopens
    [InlineData(0, 1)] // neutral keeps it half-open
    public void Lease_Verdict_IsWhatTheBreakerHears(int verdictValue, int afterValue)
    {
        var (verdict, after) = ((AttemptVerdict)verdictValue, (CircuitState)afterValue);
        var (upstream, metrics, _) = Create();
        HalfOpen(upstream, metrics);

        using (var lease = upstream.TryLease(0, metrics)!)
        {
            lease.Record(verdict);
        }

        Assert.Equal(after, upstream.Breaker!.State);
    }

    [Fact]
    public void Lease_DisposedTwice_ReleasesOnce()
    {
        var (upstream, metrics, _) = Create();
        var a = upstream.TryLease(0, metrics)!;
        using var b = upstream.TryLease(0, metrics)!;
        a.Dispose();
        a.Dispose();

        Assert.Equal(1, upstream.InFlight);
        Assert.Equal(1, metrics.InFlight.Value);
    }

    [Fact]
    public void Lease_OutOfRateLimitTokens_NoLease_NoTrialSlotHeld()
    {
        var (upstream, metrics, _) = Create(new RateLimitConfig { PerSecond = 1, Burst = 1 });
        using (upstream.TryLease(0, metrics))
        {
        }

        Assert.Null(upstream.TryLease(0, metrics));
        Assert.Equal(0, upstream.InFlight);
        _time.Advance(TimeSpan.FromSeconds(1));
        Assert.NotNull(upstream.TryLease(0, metrics));
    }
}
