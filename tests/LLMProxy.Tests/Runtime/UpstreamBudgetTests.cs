using LLMProxy.Configuration;
using LLMProxy.Observability;
using LLMProxy.Runtime;
using Microsoft.Extensions.Time.Testing;

namespace LLMProxy.Tests.Runtime;

/// <summary>Budgets (SPEC §13.1) live in the upstream's lease: a concurrency slot, an RPM token and a TPM reservation
/// are taken together or not at all, and the reservation comes back unless the attempt settles it.</summary>
public class UpstreamBudgetTests
{
    private readonly FakeTimeProvider _time = new();

    private (UpstreamRuntime Upstream, MemberMetrics Metrics) Create(UpstreamRateLimitConfig limit)
    {
        var config = new UpstreamConfig { Name = "u", Url = "http://127.0.0.1:1", Ratelimit = limit };
        var registry = new ProxyMetrics(includeProcessMetrics: false);
        return (new UpstreamRuntime(config, _time), new MemberMetrics(registry, "g", "u", "roundrobin"));
    }

    [Fact]
    public void MaxConcurrent_FullThenFreedByDispose()
    {
        var (u, m) = Create(new UpstreamRateLimitConfig { MaxConcurrent = 2 });
        var a = u.TryLease(0, m)!;
        using var b = u.TryLease(0, m)!;
        Assert.Null(u.TryLease(0, m));
        Assert.Equal(Unavailability.RateLimited, u.Check());
        Assert.Equal(_time.GetUtcNow() + UpstreamRuntime.ConcurrencyRetry, u.AvailableAt(_time));
        a.Dispose();
        Assert.Equal(Unavailability.None, u.Check());
        using var c = u.TryLease(0, m);
        Assert.NotNull(c);
    }

    [Fact]
    public void Rpm_CapacityThenRefillsOverTheMinute()
    {
        var (u, m) = Create(new UpstreamRateLimitConfig { RequestsPerMinute = 3 });
        for (var i = 0; i < 3; i++)
        {
            u.TryLease(0, m)!.Dispose();
        }
        Assert.Null(u.TryLease(0, m));
        Assert.Equal(_time.GetUtcNow() + TimeSpan.FromSeconds(20), u.AvailableAt(_time));
        _time.Advance(TimeSpan.FromSeconds(20));
        Assert.NotNull(u.TryLease(0, m));
    }

    [Fact]
    public void Tpm_ReservationRefundedWhenNotSettled()
    {
        var (u, m) = Create(new UpstreamRateLimitConfig { TokensPerMinute = 1000 });
        using (var lease = u.TryLease(0, m, 800)!)
        {
            Assert.Equal(800, lease.ReservedTokens);
            Assert.Equal(Unavailability.RateLimited, u.Check(300));
            Assert.Null(u.TryLease(0, m, 300));
        }
        Assert.Equal(1000, u.Tpm!.Available);
    }

    [Fact]
    public void Tpm_SettledToUsage_OrKeptWhenUsageUnknown()
    {
        var (u, m) = Create(new UpstreamRateLimitConfig { TokensPerMinute = 1000 });
        using (var lease = u.TryLease(0, m, 800)!)
        {
            lease.SettleTokens(100);
        }
        Assert.Equal(900, u.Tpm!.Available);
        using (var lease = u.TryLease(0, m, 200)!)
        {
            lease.SettleTokens(null);
        }
        Assert.Equal(700, u.Tpm.Available);
    }

    [Fact]
    public void Refusal_TakesNothing_NoLeakedSlotOrReservation()
    {
        var (u, m) = Create(new UpstreamRateLimitConfig { TokensPerMinute = 1000, RequestsPerMinute = 1, MaxConcurrent = 5 });
        u.TryLease(0, m, 10)!.Dispose(); // takes the only RPM token
        Assert.Null(u.TryLease(0, m, 500)); // refused by RPM after the TPM reservation: that is given back
        Assert.Equal(1000, u.Tpm!.Available);
        Assert.Equal(0, u.InFlight);
    }

    [Fact]
    public void Learned_BlocksUntilReset()
    {
        var (u, m) = Create(new UpstreamRateLimitConfig());
        var response = new HttpResponseMessage();
        response.Headers.TryAddWithoutValidation("x-ratelimit-remaining-tokens", "100");
        response.Headers.TryAddWithoutValidation("x-ratelimit-reset-tokens", "3s");
        u.Learn(response.Headers);
        Assert.Equal(Unavailability.None, u.Check(50));
        Assert.Equal(Unavailability.RateLimited, u.Check(500));
        Assert.Equal(_time.GetUtcNow() + TimeSpan.FromSeconds(3), u.AvailableAt(_time, 500));
        _time.Advance(TimeSpan.FromSeconds(3));
        Assert.Equal(Unavailability.None, u.Check(500));
        Assert.NotNull(u.TryLease(0, m, 500));
    }

    [Fact]
    public void Learned_CountsWhatWasSentSinceTheProviderSpoke_UntilItSpeaksAgain()
    {
        var (u, m) = Create(new UpstreamRateLimitConfig());
        var response = new HttpResponseMessage();
        response.Headers.TryAddWithoutValidation("x-ratelimit-remaining-requests", "2");
        response.Headers.TryAddWithoutValidation("x-ratelimit-reset-requests", "10s");
        response.Headers.TryAddWithoutValidation("x-ratelimit-remaining-tokens", "1000");
        response.Headers.TryAddWithoutValidation("x-ratelimit-reset-tokens", "10s");
        u.Learn(response.Headers);

        u.TryLease(0, m, 600)!.Dispose();
        Assert.Equal(Unavailability.RateLimited, u.Check(600)); // 400 tokens left by the provider's count and ours
        Assert.Equal(Unavailability.None, u.Check(300));
        u.TryLease(0, m, 300)!.Dispose();
        Assert.Equal(Unavailability.RateLimited, u.Check(1)); // both requests the provider allowed were sent

        u.Learn(response.Headers); // the provider speaks again: its numbers replace ours
        Assert.Equal(Unavailability.None, u.Check(600));
    }

    [Fact]
    public void Leases_ManyParallel_ConcurrencyAndTpmNeverOverdrawn()
    {
        var (u, m) = Create(new UpstreamRateLimitConfig { PerSecond = 1_000_000, TokensPerMinute = 10_000, MaxConcurrent = 3 });
        var peak = 0;
        Parallel.For(0, 4000, new ParallelOptions { MaxDegreeOfParallelism = 8 }, i =>
        {
            using var lease = u.TryLease(0, m, 100 + i % 7);
            if (lease is null)
            {
                return;
            }
            var inFlight = u.InFlight;
            InterlockedMax(ref peak, inFlight);
            Assert.True(u.Tpm!.Available >= 0);
            if (i % 3 == 0)
            {
                lease.SettleTokens(lease.ReservedTokens / 2); // real usage below the estimate returns the rest
            }
            // otherwise disposed unsettled: refunded whole
        });
        Assert.InRange(peak, 1, 3);
        Assert.Equal(0, u.InFlight);
        Assert.InRange(u.Tpm!.Available, 0, 10_000);
    }

    private static void InterlockedMax(ref int target, int value)
    {
        var seen = Volatile.Read(ref target);
        while (value > seen)
        {
            var was = Interlocked.CompareExchange(ref target, value, seen);
            if (was == seen)
            {
                return;
            }
            seen = was;
        }
    }
}
