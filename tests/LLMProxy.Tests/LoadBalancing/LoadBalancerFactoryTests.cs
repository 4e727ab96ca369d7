using LLMProxy.Configuration;
using LLMProxy.LoadBalancing;

namespace LLMProxy.Tests.LoadBalancing;

public class LoadBalancerFactoryTests
{
    [Theory]
    [InlineData(BalanceStrategy.RoundRobin, typeof(RoundRobinBalancer))]
    [InlineData(BalanceStrategy.WeightedRoundRobin, typeof(SmoothWeightedRoundRobinBalancer))]
    [InlineData(BalanceStrategy.Random, typeof(RandomBalancer))]
    [InlineData(BalanceStrategy.IpHash, typeof(IpHashBalancer))]
    public void Create_EachStrategy_ReturnsItsBalancer(BalanceStrategy strategy, Type expected)
    {
        ILoadBalancer balancer = LoadBalancerFactory.Create(strategy, BalancerTestKit.Members(1, 2));
        Assert.IsType(expected, balancer);
    }

    [Fact]
    public void Create_NoMembers_Throws() =>
        Assert.Throws<ArgumentException>(() => LoadBalancerFactory.Create(BalanceStrategy.RoundRobin, []));

    [Theory]
    [InlineData(BalanceStrategy.RoundRobin)]
    [InlineData(BalanceStrategy.WeightedRoundRobin)]
    [InlineData(BalanceStrategy.Random)]
    [InlineData(BalanceStrategy.IpHash)]
    public void Select_NoneEligible_ReturnsMinusOne(BalanceStrategy strategy)
    {
        ILoadBalancer balancer = LoadBalancerFactory.Create(strategy, BalancerTestKit.Members(1, 2, 3), new Random(1));
        Assert.Equal(-1, balancer.Select(new bool[3], 42));
    }

    [Theory]
    [InlineData(BalanceStrategy.RoundRobin)]
    [InlineData(BalanceStrategy.WeightedRoundRobin)]
    [InlineData(BalanceStrategy.Random)]
    [InlineData(BalanceStrategy.IpHash)]
    public void Select_OnlyOneEligible_AlwaysReturnsIt(BalanceStrategy strategy)
    {
        ILoadBalancer balancer = LoadBalancerFactory.Create(strategy, BalancerTestKit.Members(3, 1, 2), new Random(1));
        bool[] eligible = [false, true, false];
        for (ulong i = 0; i < 100; i++)
        {
            Assert.Equal(1, balancer.Select(eligible, i * 7919));
        }
    }

    [Theory]
    [InlineData(BalanceStrategy.RoundRobin)]
    [InlineData(BalanceStrategy.WeightedRoundRobin)]
    [InlineData(BalanceStrategy.Random)]
    [InlineData(BalanceStrategy.IpHash)]
    public void Select_EligibleLengthMismatch_Throws(BalanceStrategy strategy)
    {
        ILoadBalancer balancer = LoadBalancerFactory.Create(strategy, BalancerTestKit.Members(1, 1, 1));
        Assert.Throws<ArgumentException>(() => balancer.Select(new bool[2], 0));
    }

    [Theory]
    [InlineData(BalanceStrategy.RoundRobin)]
    [InlineData(BalanceStrategy.WeightedRoundRobin)]
    [InlineData(BalanceStrategy.IpHash)]
    public void Select_Steady_DoesNotAllocate(BalanceStrategy strategy)
    {
        ILoadBalancer balancer = LoadBalancerFactory.Create(strategy, BalancerTestKit.Members(5, 1, 1));
        bool[] eligible = [true, false, true];
        balancer.Select(eligible, 1); // warm up
        long before = GC.GetAllocatedBytesForCurrentThread();
        for (int i = 0; i < 1000; i++)
        {
            balancer.Select(eligible, (ulong)i);
        }

        Assert.Equal(0, GC.GetAllocatedBytesForCurrentThread() - before);
    }
}
