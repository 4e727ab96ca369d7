using LLMProxy.LoadBalancing;

namespace LLMProxy.Tests.LoadBalancing;

public class SmoothWeightedRoundRobinBalancerTests
{
    [Fact]
    public void Select_Weights511_FollowsNginxInterleavedPattern()
    {
        var wrr = new SmoothWeightedRoundRobinBalancer(BalancerTestKit.Members(5, 1, 1));
        bool[] all = BalancerTestKit.All(3);
        string pattern = new(Enumerable.Range(0, 14).Select(_ => (char)('a' + wrr.Select(all, BalancerTestKit.Anyone))).ToArray());
        Assert.Equal("aabacaa" + "aabacaa", pattern);
    }

    [Theory]
    [InlineData(new[] { 5, 1, 1 })]
    [InlineData(new[] { 3, 2 })]
    [InlineData(new[] { 1, 1, 1, 1 })]
    [InlineData(new[] { 7, 4, 2, 1 })]
    public void Select_AnyWindowOfSumWeights_EachMemberGetsExactlyItsWeight(int[] weights)
    {
        var wrr = new SmoothWeightedRoundRobinBalancer(BalancerTestKit.Members(weights));
        bool[] all = BalancerTestKit.All(weights.Length);
        int sum = weights.Sum();
        int[] sequence = Enumerable.Range(0, sum * 20).Select(_ => wrr.Select(all, BalancerTestKit.Anyone)).ToArray();
        for (int start = 0; start + sum <= sequence.Length; start++) // sliding, not only aligned windows
        {
            var counts = new int[weights.Length];
            for (int i = start; i < start + sum; i++)
            {
                counts[sequence[i]]++;
            }

            Assert.Equal(weights, counts);
        }
    }

    [Fact]
    public void Select_Weights31_NeverGivesTheLightMemberTwiceInARow()
    {
        var wrr = new SmoothWeightedRoundRobinBalancer(BalancerTestKit.Members(3, 1));
        bool[] all = BalancerTestKit.All(2);
        int previous = -1;
        for (int i = 0; i < 400; i++)
        {
            int pick = wrr.Select(all, BalancerTestKit.Anyone);
            Assert.False(pick == 1 && previous == 1);
            previous = pick;
        }
    }

    [Fact]
    public void Select_ConcurrentCallers_TotalCountsExact()
    {
        var wrr = new SmoothWeightedRoundRobinBalancer(BalancerTestKit.Members(5, 3, 2));
        Assert.Equal([50_000, 30_000, 20_000], BalancerTestKit.CountParallel(wrr, 3, 100_000));
    }

    [Fact]
    public void Select_HeaviestIneligible_RestKeepTheirRelativeWeights()
    {
        var wrr = new SmoothWeightedRoundRobinBalancer(BalancerTestKit.Members(5, 3, 1));
        Assert.Equal([0, 300, 100], BalancerTestKit.Count(wrr, 3, 400, [false, true, true]));
    }

    [Fact]
    public void Select_MemberReturns_FullDistributionIsRestoredOverWindows()
    {
        var wrr = new SmoothWeightedRoundRobinBalancer(BalancerTestKit.Members(2, 1));
        BalancerTestKit.Count(wrr, 2, 5, [true, false]);
        int[] counts = BalancerTestKit.Count(wrr, 2, 3000);
        Assert.InRange(counts[0], 1998, 2002);
        Assert.Equal(3000, counts.Sum());
    }

    [Fact]
    public void Select_WeightBelowOne_TreatedAsOne()
    {
        var wrr = new SmoothWeightedRoundRobinBalancer(BalancerTestKit.Members(0, 1));
        Assert.Equal([50, 50], BalancerTestKit.Count(wrr, 2, 100));
    }
}
