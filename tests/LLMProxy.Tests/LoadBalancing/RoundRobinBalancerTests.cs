using LLMProxy.LoadBalancing;

namespace LLMProxy.Tests.LoadBalancing;

public class RoundRobinBalancerTests
{
    [Fact]
    public void Select_AllEligible_RotatesInOrder()
    {
        var rr = new RoundRobinBalancer(3);
        bool[] all = BalancerTestKit.All(3);
        int[] picks = Enumerable.Range(0, 7).Select(_ => rr.Select(all, BalancerTestKit.Anyone)).ToArray();
        Assert.Equal([0, 1, 2, 0, 1, 2, 0], picks);
    }

    [Fact]
    public void Select_NPicks_EachMemberGetsExactlyNOverSize()
    {
        var rr = new RoundRobinBalancer(4);
        Assert.Equal([250, 250, 250, 250], BalancerTestKit.Count(rr, 4, 1000));
    }

    [Fact]
    public void Select_ConcurrentCallers_TotalCountsExact()
    {
        var rr = new RoundRobinBalancer(5);
        Assert.Equal([20_000, 20_000, 20_000, 20_000, 20_000], BalancerTestKit.CountParallel(rr, 5, 100_000));
    }

    [Fact]
    public void Select_OneIneligible_SkipsItAndSplitsEvenlyAmongTheRest()
    {
        var rr = new RoundRobinBalancer(3);
        Assert.Equal([500, 0, 500], BalancerTestKit.Count(rr, 3, 1000, [true, false, true]));
    }

    [Fact]
    public void Select_OneIneligible_StillStrictlyAlternates()
    {
        var rr = new RoundRobinBalancer(3);
        bool[] eligible = [true, false, true];
        int[] picks = Enumerable.Range(0, 6).Select(_ => rr.Select(eligible, BalancerTestKit.Anyone)).ToArray();
        Assert.Equal([0, 2, 0, 2, 0, 2], picks);
    }

    [Fact]
    public void Select_ClientHash_IsIgnored()
    {
        var rr = new RoundRobinBalancer(2);
        bool[] all = BalancerTestKit.All(2);
        Assert.Equal(0, rr.Select(all, BalancerTestKit.Anyone));
        Assert.Equal(1, rr.Select(all, BalancerTestKit.Anyone));
    }
}
