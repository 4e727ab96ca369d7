using LLMProxy.Resilience;
using Microsoft.Extensions.Time.Testing;

namespace LLMProxy.Tests.Resilience;

public class CoolDownTests
{
    private readonly FakeTimeProvider _time = new();

    [Fact]
    public void New_NotCooling()
    {
        var cd = new CoolDown(_time);
        Assert.False(cd.IsCooling);
        Assert.Null(cd.Until);
    }

    [Fact]
    public void Park_CoolsUntilNowPlusDuration()
    {
        var cd = new CoolDown(_time);
        DateTimeOffset now = _time.GetUtcNow();
        cd.Park(TimeSpan.FromSeconds(5));
        Assert.True(cd.IsCooling);
        Assert.Equal(now + TimeSpan.FromSeconds(5), cd.Until);
    }

    [Fact]
    public void Park_Expires_AfterDuration()
    {
        var cd = new CoolDown(_time);
        cd.Park(TimeSpan.FromSeconds(5));
        _time.Advance(TimeSpan.FromMilliseconds(4_999));
        Assert.True(cd.IsCooling);
        _time.Advance(TimeSpan.FromMilliseconds(1));
        Assert.False(cd.IsCooling);
        Assert.Null(cd.Until);
    }

    [Fact]
    public void Park_Longer_Extends()
    {
        var cd = new CoolDown(_time);
        DateTimeOffset start = _time.GetUtcNow();
        cd.Park(TimeSpan.FromSeconds(5));
        _time.Advance(TimeSpan.FromSeconds(2));
        cd.Park(TimeSpan.FromSeconds(10));
        Assert.Equal(start + TimeSpan.FromSeconds(12), cd.Until);
    }

    [Fact]
    public void Park_Shorter_NeverShortens()
    {
        var cd = new CoolDown(_time);
        DateTimeOffset start = _time.GetUtcNow();
        cd.Park(TimeSpan.FromSeconds(60));
        cd.Park(TimeSpan.FromSeconds(1));
        _time.Advance(TimeSpan.FromSeconds(10));
        cd.Park(TimeSpan.FromSeconds(5));
        Assert.Equal(start + TimeSpan.FromSeconds(60), cd.Until);
    }

    [Fact]
    public void Park_AfterExpiry_StartsANewCoolDown()
    {
        var cd = new CoolDown(_time);
        cd.Park(TimeSpan.FromSeconds(1));
        _time.Advance(TimeSpan.FromSeconds(3));
        cd.Park(TimeSpan.FromSeconds(2));
        Assert.Equal(_time.GetUtcNow() + TimeSpan.FromSeconds(2), cd.Until);
    }

    [Fact]
    public void Park_ZeroOrNegative_Ignored()
    {
        var cd = new CoolDown(_time);
        cd.Park(TimeSpan.Zero);
        cd.Park(TimeSpan.FromSeconds(-3));
        Assert.False(cd.IsCooling);
    }

    [Fact]
    public void Park_Concurrent_LongestWins()
    {
        var cd = new CoolDown(_time);
        DateTimeOffset start = _time.GetUtcNow();
        Parallel.For(1, 2001, new ParallelOptions { MaxDegreeOfParallelism = 4 }, i => cd.Park(TimeSpan.FromMilliseconds(i)));
        Assert.Equal(start + TimeSpan.FromMilliseconds(2000), cd.Until);
    }
}
