using System.Net;
using LLMProxy.LoadBalancing;

namespace LLMProxy.Tests.LoadBalancing;

public class LoadBalancingPoliciesTests
{
    /// <summary>The built-in policies, with a seeded random so every theory row is deterministic.</summary>
    private static readonly LoadBalancingPolicies Seeded = new(
        [new RoundRobinPolicy(), new WeightedRoundRobinPolicy(), new RandomPolicy(new Random(1)), new IpHashPolicy()]);

    private static ILoadBalancer Create(string strategy, params int[] weights) => Seeded.Get(strategy).Create(BalancerTestKit.Members(weights));

    [Theory]
    [InlineData("roundrobin", typeof(RoundRobinBalancer))]
    [InlineData("weighted_roundrobin", typeof(SmoothWeightedRoundRobinBalancer))]
    [InlineData("random", typeof(RandomBalancer))]
    [InlineData("iphash", typeof(IpHashBalancer))]
    public void Get_EachBuiltInName_CreatesItsBalancer(string strategy, Type expected)
    {
        var policy = LoadBalancingPolicies.BuiltIn.Get(strategy);

        Assert.Equal(strategy, policy.Name);
        Assert.IsType(expected, policy.Create(BalancerTestKit.Members(1, 2)));
    }

    [Fact]
    public void BuiltIn_Names_AreTheFourStrategiesInDocumentedOrder() =>
        Assert.Equal(["roundrobin", "weighted_roundrobin", "random", "iphash"], LoadBalancingPolicies.BuiltIn.Names);

    [Fact]
    public void TryGet_AnyCase_FindsPolicyByRegisteredName()
    {
        Assert.True(LoadBalancingPolicies.BuiltIn.TryGet("Weighted_RoundRobin", out var policy));
        Assert.Equal("weighted_roundrobin", policy.Name);
    }

    [Fact]
    public void Get_UnknownName_Throws() =>
        Assert.Throws<KeyNotFoundException>(() => LoadBalancingPolicies.BuiltIn.Get("leastconn"));

    [Fact]
    public void Constructor_DuplicateName_Throws() =>
        Assert.Throws<ArgumentException>(() => new LoadBalancingPolicies([new RoundRobinPolicy(), new RoundRobinPolicy()]));

    [Fact]
    public void Constructor_AddedPolicy_IsFoundByItsName()
    {
        var policies = new LoadBalancingPolicies([new RoundRobinPolicy(), new FirstEligiblePolicy()]);

        Assert.Equal(["roundrobin", "first"], policies.Names);
        Assert.Equal(1, policies.Get("first").Create(BalancerTestKit.Members(1, 1)).Select([false, true], BalancerTestKit.Anyone));
    }

    [Theory]
    [InlineData("roundrobin")]
    [InlineData("weighted_roundrobin")]
    [InlineData("random")]
    [InlineData("iphash")]
    public void Create_NoMembers_Throws(string strategy) =>
        Assert.ThrowsAny<ArgumentException>(() => Seeded.Get(strategy).Create([]));

    [Theory]
    [InlineData("roundrobin")]
    [InlineData("weighted_roundrobin")]
    [InlineData("random")]
    [InlineData("iphash")]
    public void Select_NoneEligible_ReturnsMinusOne(string strategy) =>
        Assert.Equal(-1, Create(strategy, 1, 2, 3).Select(new bool[3], BalancerTestKit.Anyone));

    [Theory]
    [InlineData("roundrobin")]
    [InlineData("weighted_roundrobin")]
    [InlineData("random")]
    [InlineData("iphash")]
    public void Select_OnlyOneEligible_AlwaysReturnsIt(string strategy)
    {
        ILoadBalancer balancer = Create(strategy, 3, 1, 2);
        bool[] eligible = [false, true, false];
        for (int i = 0; i < 100; i++)
        {
            Assert.Equal(1, balancer.Select(eligible, new BalancingContext(new IPAddress(i * 7919))));
        }
    }

    [Theory]
    [InlineData("roundrobin")]
    [InlineData("weighted_roundrobin")]
    [InlineData("random")]
    [InlineData("iphash")]
    public void Select_EligibleLengthMismatch_Throws(string strategy)
    {
        ILoadBalancer balancer = Create(strategy, 1, 1, 1);
        Assert.Throws<ArgumentException>(() => balancer.Select(new bool[2], BalancerTestKit.Anyone));
    }

    [Theory]
    [InlineData("roundrobin")]
    [InlineData("weighted_roundrobin")]
    [InlineData("iphash")]
    public void Select_Steady_DoesNotAllocate(string strategy)
    {
        ILoadBalancer balancer = Create(strategy, 5, 1, 1);
        bool[] eligible = [true, false, true];
        var clients = new BalancingContext[16];
        for (int i = 0; i < clients.Length; i++)
        {
            clients[i] = new BalancingContext(new IPAddress(new byte[] { 10, 0, 0, (byte)i }));
        }
        balancer.Select(eligible, clients[0]); // warm up
        long before = GC.GetAllocatedBytesForCurrentThread();
        for (int i = 0; i < 1000; i++)
        {
            balancer.Select(eligible, clients[i % clients.Length]);
        }

        Assert.Equal(0, GC.GetAllocatedBytesForCurrentThread() - before);
    }

    /// <summary>A strategy added outside the built-ins: one class, one registration.</summary>
    private sealed class FirstEligiblePolicy : ILoadBalancingPolicy
    {
        public string Name => "first";

        public ILoadBalancer Create(IReadOnlyList<BalancerMember> members) => new FirstEligible();

        private sealed class FirstEligible : ILoadBalancer
        {
            public int Select(ReadOnlySpan<bool> eligible, in BalancingContext context) => eligible.IndexOf(true);
        }
    }
}
