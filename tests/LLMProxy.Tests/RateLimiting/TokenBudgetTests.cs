using LLMProxy.RateLimiting;
using Microsoft.Extensions.Time.Testing;

namespace LLMProxy.Tests.RateLimiting;

public class TokenBudgetTests
{
    private readonly FakeTimeProvider _time = new();

    [Fact]
    public void New_StartsFull_ReserveUpToCapacityThenRefused()
    {
        var budget = new TokenBudget(1000, _time);
        Assert.Equal(1000, budget.Available);
        Assert.Equal(600, budget.TryReserve(600));
        Assert.False(budget.Covers(401));
        Assert.Equal(-1, budget.TryReserve(401));
        Assert.Equal(400, budget.TryReserve(400));
        Assert.Equal(0, budget.Available);
    }

    [Fact]
    public void Refill_Continuous_CapacityPerMinute()
    {
        var budget = new TokenBudget(600, _time);
        budget.TryReserve(600);
        Assert.Equal(TimeSpan.FromSeconds(10), budget.TimeUntil(100));
        _time.Advance(TimeSpan.FromSeconds(10));
        Assert.Equal(100, budget.Available);
        _time.Advance(TimeSpan.FromMinutes(5));
        Assert.Equal(600, budget.Available); // never above capacity
    }

    [Fact]
    public void Settle_ReturnsSurplusOrTakesShortfallIntoDebt()
    {
        var budget = new TokenBudget(1000, _time);
        var r = budget.TryReserve(500);
        budget.Settle(r, 200);
        Assert.Equal(800, budget.Available);

        var big = budget.TryReserve(800);
        budget.Settle(big, 1100); // real usage beyond the estimate: the bucket goes into debt
        Assert.Equal(-300, budget.Available);
        Assert.Equal(-1, budget.TryReserve(1));
        Assert.Equal(TimeSpan.FromSeconds(18.06), budget.TimeUntil(1)); // 301 tokens at 1000/min
    }

    [Fact]
    public void Refund_GivesTheReservationBackWhole()
    {
        var budget = new TokenBudget(1000, _time);
        var r = budget.TryReserve(700);
        budget.Refund(r);
        Assert.Equal(1000, budget.Available);
    }

    [Fact]
    public void Reserve_LargerThanCapacity_WaitsForAFullBucketInsteadOfNever()
    {
        var budget = new TokenBudget(100, _time);
        budget.TryReserve(1);
        Assert.Equal(-1, budget.TryReserve(5000));
        _time.Advance(TimeSpan.FromSeconds(1));
        Assert.Equal(100, budget.TryReserve(5000));
    }

    [Fact]
    public void Reserve_ManyParallel_NeverOverdraws()
    {
        var budget = new TokenBudget(10_000, _time);
        long granted = 0;
        Parallel.For(0, 2000, new ParallelOptions { MaxDegreeOfParallelism = 8 }, i =>
        {
            var got = budget.TryReserve(7 + i % 13);
            if (got > 0)
            {
                Interlocked.Add(ref granted, got);
            }
            Assert.True(budget.Available >= 0);
        });
        Assert.InRange(granted, 10_000 - 19, 10_000);
        Assert.True(budget.Available >= 0);
        Assert.Equal(10_000 - granted, budget.Available);
    }

    [Fact]
    public void ReserveAndSettle_ParallelWithTimeAdvancing_NeverNegativeWithoutRealUsage()
    {
        var budget = new TokenBudget(1_000, _time);
        Parallel.For(0, 4000, new ParallelOptions { MaxDegreeOfParallelism = 8 }, i =>
        {
            var got = budget.TryReserve(50);
            if (i % 100 == 0)
            {
                lock (_time)
                {
                    _time.Advance(TimeSpan.FromMilliseconds(50));
                }
            }
            if (got > 0)
            {
                budget.Settle(got, i % 2 == 0 ? 10 : 50); // usage never above the reservation
            }
            Assert.True(budget.Available >= 0);
        });
        Assert.InRange(budget.Available, 0, 1_000);
    }

    [Fact]
    public void Settle_HostileUsage_DebtBoundedToOneMinute()
    {
        var budget = new TokenBudget(1000, _time);
        budget.Settle(budget.TryReserve(10), long.MaxValue / 2);
        Assert.Equal(-1000, budget.Available);
        _time.Advance(TimeSpan.FromMinutes(2));
        Assert.Equal(1000, budget.Available);
    }

    [Theory]
    [InlineData(0, null, 1024)]
    [InlineData(4000, null, 2024)]
    [InlineData(4000, 50L, 1050)]
    [InlineData(-5, 0L, 0)]
    public void TokenEstimate_BodyQuarterPlusOutput(long body, long? maxOutput, long expected) =>
        Assert.Equal(expected, TokenEstimate.For(body, maxOutput));
}
