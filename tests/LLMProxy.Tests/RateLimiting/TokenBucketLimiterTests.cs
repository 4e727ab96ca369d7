using System.Threading.RateLimiting;
using LLMProxy.Configuration;
using LLMProxy.RateLimiting;
using Microsoft.Extensions.Time.Testing;

namespace LLMProxy.Tests.RateLimiting;

public class TokenBucketLimiterTests
{
    private readonly FakeTimeProvider _time = new();

    private static int Drain(TokenBucketLimiter bucket)
    {
        int n = 0;
        while (bucket.TryTake(out _))
        {
            n++;
        }

        return n;
    }

    [Fact]
    public void New_StartsFull_BurstTokensThenRefused()
    {
        var bucket = new TokenBucketLimiter(10, 5, _time);
        Assert.Equal(5, bucket.AvailableTokens);
        Assert.Equal(5, Drain(bucket));
        Assert.False(bucket.HasToken);
    }

    [Fact]
    public void TryTake_Empty_RetryAfterIsTimeToNextToken()
    {
        var bucket = new TokenBucketLimiter(10, 5, _time);
        Drain(bucket);
        Assert.False(bucket.TryTake(out TimeSpan retryAfter));
        Assert.Equal(TimeSpan.FromMilliseconds(100), retryAfter);

        _time.Advance(TimeSpan.FromMilliseconds(30));
        Assert.False(bucket.TryTake(out retryAfter));
        Assert.Equal(TimeSpan.FromMilliseconds(70), retryAfter);
    }

    [Fact]
    public void TryTake_Success_RetryAfterZero()
    {
        var bucket = new TokenBucketLimiter(1, 1, _time);
        Assert.True(bucket.TryTake(out TimeSpan retryAfter));
        Assert.Equal(TimeSpan.Zero, retryAfter);
    }

    [Fact]
    public void Refill_AtRate_OneTokenPerInterval()
    {
        var bucket = new TokenBucketLimiter(10, 5, _time);
        Drain(bucket);
        _time.Advance(TimeSpan.FromMilliseconds(99));
        Assert.False(bucket.HasToken);
        _time.Advance(TimeSpan.FromMilliseconds(1));
        Assert.True(bucket.HasToken);
        Assert.True(bucket.TryTake(out _));
        Assert.False(bucket.TryTake(out _));
        _time.Advance(TimeSpan.FromMilliseconds(250));
        Assert.Equal(2, Drain(bucket));
    }

    [Fact]
    public void Refill_LongIdle_CappedAtBurst()
    {
        var bucket = new TokenBucketLimiter(10, 5, _time);
        Drain(bucket);
        _time.Advance(TimeSpan.FromHours(1));
        Assert.Equal(5, bucket.AvailableTokens);
        Assert.Equal(5, Drain(bucket));
    }

    [Fact]
    public void Rate_SustainedOverOneMinute_ExactlyRateTimesSecondsPlusBurst()
    {
        var bucket = new TokenBucketLimiter(7, 3, _time);
        int granted = 0;
        for (int ms = 0; ms < 60_000; ms++)
        {
            while (bucket.TryTake(out _))
            {
                granted++;
            }

            _time.Advance(TimeSpan.FromMilliseconds(1));
        }

        Assert.InRange(granted, 3 + 7 * 60 - 1, 3 + 7 * 60);
    }

    [Fact]
    public void HasToken_DoesNotTake()
    {
        var bucket = new TokenBucketLimiter(1, 2, _time);
        Assert.True(bucket.HasToken);
        Assert.True(bucket.HasToken);
        Assert.Equal(2, Drain(bucket));
    }

    [Fact]
    public void FractionalRate_RetryAfterRoundedUp()
    {
        var bucket = new TokenBucketLimiter(0.5, 1, _time);
        Assert.True(bucket.TryTake(out _));
        Assert.False(bucket.TryTake(out TimeSpan retryAfter));
        Assert.Equal(TimeSpan.FromSeconds(2), retryAfter);
    }

    [Fact]
    public void IdleDuration_NullWhileNotFull_TimeSinceFullOtherwise()
    {
        var bucket = new TokenBucketLimiter(10, 2, _time);
        _time.Advance(TimeSpan.FromSeconds(3));
        Assert.Equal(TimeSpan.FromSeconds(3), bucket.IdleDuration);

        bucket.TryTake(out _);
        bucket.TryTake(out _);
        Assert.Null(bucket.IdleDuration);
        _time.Advance(TimeSpan.FromMilliseconds(150));
        Assert.Null(bucket.IdleDuration); // 1.5 tokens
        _time.Advance(TimeSpan.FromMilliseconds(50));
        Assert.Equal(TimeSpan.Zero, bucket.IdleDuration); // full exactly now
        _time.Advance(TimeSpan.FromSeconds(11));
        Assert.Equal(TimeSpan.FromSeconds(11), bucket.IdleDuration);
    }

    [Fact]
    public void AttemptAcquire_Success_CachedLeaseWithoutAllocation()
    {
        var bucket = new TokenBucketLimiter(1000, 100, _time);
        RateLimitLease first = bucket.AttemptAcquire();
        long before = GC.GetAllocatedBytesForCurrentThread();
        RateLimitLease second = bucket.AttemptAcquire();
        Assert.Equal(0, GC.GetAllocatedBytesForCurrentThread() - before);
        Assert.True(first.IsAcquired);
        Assert.Same(first, second);
    }

    [Fact]
    public void TryTake_DoesNotAllocate()
    {
        var bucket = new TokenBucketLimiter(10, 2, _time);
        bucket.TryTake(out _);
        long before = GC.GetAllocatedBytesForCurrentThread();
        for (int i = 0; i < 100; i++)
        {
            bucket.TryTake(out _);
            _ = bucket.HasToken;
        }

        Assert.Equal(0, GC.GetAllocatedBytesForCurrentThread() - before);
    }

    [Fact]
    public void AttemptAcquire_Refused_LeaseCarriesRetryAfter()
    {
        var bucket = new TokenBucketLimiter(4, 1, _time);
        bucket.AttemptAcquire().Dispose();
        using RateLimitLease lease = bucket.AttemptAcquire();
        Assert.False(lease.IsAcquired);
        Assert.True(lease.TryGetMetadata(MetadataName.RetryAfter, out TimeSpan retryAfter));
        Assert.Equal(TimeSpan.FromMilliseconds(250), retryAfter);
        Assert.Contains(MetadataName.RetryAfter.Name, lease.MetadataNames);
    }

    [Fact]
    public void AttemptAcquire_MultiplePermits_AllOrNothing()
    {
        var bucket = new TokenBucketLimiter(10, 5, _time);
        Assert.True(bucket.AttemptAcquire(3).IsAcquired);
        Assert.False(bucket.AttemptAcquire(3).IsAcquired);
        Assert.Equal(2, bucket.AvailableTokens);
        Assert.Throws<ArgumentOutOfRangeException>(() => bucket.AttemptAcquire(6));
    }

    [Fact]
    public void AttemptAcquire_ZeroPermits_ReportsAvailabilityWithoutTaking()
    {
        var bucket = new TokenBucketLimiter(10, 1, _time);
        Assert.True(bucket.AttemptAcquire(0).IsAcquired);
        Assert.Equal(1, bucket.AvailableTokens);
        bucket.TryTake(out _);
        Assert.False(bucket.AttemptAcquire(0).IsAcquired);
    }

    [Fact]
    public async Task AcquireAsync_Empty_FailsImmediatelyWithoutQueueing()
    {
        var bucket = new TokenBucketLimiter(1, 1, _time);
        Assert.True((await bucket.AcquireAsync()).IsAcquired);
        ValueTask<RateLimitLease> pending = bucket.AcquireAsync();
        Assert.True(pending.IsCompleted);
        Assert.False((await pending).IsAcquired);
        await Assert.ThrowsAnyAsync<OperationCanceledException>(async () => await bucket.AcquireAsync(1, new CancellationToken(true)));
    }

    [Fact]
    public void GetStatistics_CountsSuccessesFailuresAndAvailable()
    {
        var bucket = new TokenBucketLimiter(10, 3, _time);
        bucket.TryTake(out _);
        bucket.AttemptAcquire().Dispose();
        bucket.TryTake(out _);
        bucket.TryTake(out _);
        bucket.AttemptAcquire().Dispose();
        RateLimiterStatistics stats = bucket.GetStatistics();
        Assert.Equal(3, stats.TotalSuccessfulLeases);
        Assert.Equal(2, stats.TotalFailedLeases);
        Assert.Equal(0, stats.CurrentAvailablePermits);
        Assert.Equal(0, stats.CurrentQueuedCount);
    }

    [Fact]
    public void TryTake_ConcurrentCallers_ExactlyBurstGranted()
    {
        var bucket = new TokenBucketLimiter(1, 500, _time);
        int granted = 0;
        Parallel.For(0, 5_000, new ParallelOptions { MaxDegreeOfParallelism = 4 }, i =>
        {
            if (bucket.TryTake(out _))
            {
                Interlocked.Increment(ref granted);
            }
        });
        Assert.Equal(500, granted);
    }

    [Fact]
    public void For_UpstreamConfigWithoutBurst_BurstEqualsPerSecond()
    {
        TokenBucketLimiter bucket = TokenBucketLimiter.For(new UpstreamRateLimitConfig { PerSecond = 4 }, _time);
        Assert.Equal(4, bucket.Burst);
        Assert.Equal(4, Drain(bucket));
        Assert.Equal(7, TokenBucketLimiter.For(new UpstreamRateLimitConfig { PerSecond = 4, Burst = 7 }, _time).Burst);
    }

    [Theory]
    [InlineData(0, 1)]
    [InlineData(-1, 1)]
    [InlineData(double.NaN, 1)]
    [InlineData(1, 0)]
    public void Ctor_InvalidArguments_Throw(double rate, int burst) =>
        Assert.Throws<ArgumentOutOfRangeException>(() => new TokenBucketLimiter(rate, burst, _time));

    [Fact]
    public void TimeUntilToken_EmptyBucket_IsTheRefillWait_AndTakesNothing()
    {
        var bucket = new TokenBucketLimiter(tokensPerSecond: 4, burst: 1, _time);
        Assert.Equal(TimeSpan.Zero, bucket.TimeUntilToken);
        Assert.True(bucket.TryTake(out _));

        Assert.Equal(TimeSpan.FromMilliseconds(250), bucket.TimeUntilToken);
        Assert.Equal(TimeSpan.FromMilliseconds(250), bucket.TimeUntilToken); // asking twice takes nothing
        _time.Advance(TimeSpan.FromMilliseconds(100));
        Assert.Equal(TimeSpan.FromMilliseconds(150), bucket.TimeUntilToken);
        _time.Advance(TimeSpan.FromMilliseconds(150));
        Assert.Equal(TimeSpan.Zero, bucket.TimeUntilToken);
        Assert.True(bucket.TryTake(out _));
    }
}
