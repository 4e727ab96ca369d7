using LLMProxy.Runtime;
using Microsoft.Extensions.Time.Testing;

namespace LLMProxy.Tests.Runtime;

/// <summary>The per-upstream "last minute" counters of the admin API: 60 one-second slots on fake time.</summary>
public class RecentCounterTests
{
    [Fact]
    public void RecentCounter_CountsWithinTheMinute_ForgetsSecondsOlderThan60()
    {
        var time = new FakeTimeProvider(DateTimeOffset.UtcNow);
        var counter = new RecentCounter(time);
        for (var second = 0; second < 30; second++)
        {
            counter.AddRequest();
            counter.AddTokens(100);
            time.Advance(TimeSpan.FromSeconds(1));
        }
        Assert.Equal(30, counter.Requests);
        Assert.Equal(3000, counter.Tokens);

        time.Advance(TimeSpan.FromSeconds(39)); // now = second 69: seconds 0-9 are a minute old or more
        Assert.Equal(20, counter.Requests);
        Assert.Equal(2000, counter.Tokens);

        counter.AddRequest(); // second 69 reuses second 9's slot: its old count is replaced, not added to
        Assert.Equal(21, counter.Requests);

        time.Advance(TimeSpan.FromMinutes(5));
        Assert.Equal(0, counter.Requests);
        Assert.Equal(0, counter.Tokens);
    }

    [Fact]
    public void RecentCounter_SlotBoundaries_ASecondCountsUntilItsSlotIs60SecondsOld_AndTheLastTickOfASecondStaysInIt()
    {
        var start = DateTimeOffset.UnixEpoch.AddDays(20_000); // on a whole second
        var time = new FakeTimeProvider(start);
        var counter = new RecentCounter(time);
        counter.AddRequest(); // second 0
        time.Advance(TimeSpan.FromSeconds(1) - TimeSpan.FromTicks(1));
        counter.AddRequest(); // the last tick of second 0: same slot
        time.Advance(TimeSpan.FromTicks(1));
        counter.AddRequest(); // second 1
        Assert.Equal(3, counter.Requests);

        time.Advance(TimeSpan.FromSeconds(59) - TimeSpan.FromTicks(1)); // 59.9999999 s: second 0 is still within the minute
        Assert.Equal(3, counter.Requests);
        time.Advance(TimeSpan.FromTicks(1)); // second 60: second 0's slot is a minute old
        Assert.Equal(1, counter.Requests);
        counter.AddRequest(); // second 60 takes over second 0's slot, replacing its count
        Assert.Equal(2, counter.Requests);
        time.Advance(TimeSpan.FromSeconds(1)); // second 61: second 1 has left, second 60 stays
        Assert.Equal(1, counter.Requests);
    }

    [Fact]
    public void RecentCounter_HostileTokenCounts_NegativeIgnored_HugeSaturatesWithoutCorruptingOtherSeconds()
    {
        var time = new FakeTimeProvider(DateTimeOffset.UtcNow);
        var counter = new RecentCounter(time);
        counter.AddTokens(-5);
        Assert.Equal(0, counter.Tokens);
        counter.AddTokens(long.MaxValue);
        counter.AddTokens(long.MaxValue);
        var saturated = counter.Tokens;
        Assert.True(saturated > 1_000_000_000_000, $"saturated at {saturated}");
        time.Advance(TimeSpan.FromSeconds(1));
        counter.AddTokens(7);
        Assert.Equal(saturated + 7, counter.Tokens);
        time.Advance(TimeSpan.FromSeconds(59)); // the saturated second is out of the minute, the 7 still in
        Assert.Equal(7, counter.Tokens);
    }

    [Fact]
    public async Task RecentCounter_ConcurrentAdds_NoneLost()
    {
        var time = new FakeTimeProvider(DateTimeOffset.UtcNow);
        var counter = new RecentCounter(time);
        const int threads = 4, each = 20_000;
        await Task.WhenAll(Enumerable.Range(0, threads).Select(_ => Task.Run(() =>
        {
            for (var i = 0; i < each; i++)
            {
                counter.AddRequest();
                counter.AddTokens(3);
            }
        })));
        Assert.Equal(threads * each, counter.Requests);
        Assert.Equal(threads * each * 3L, counter.Tokens);
    }
}
