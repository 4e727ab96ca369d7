using LLMProxy.Configuration;

namespace LLMProxy.LoadBalancing;

/// <summary>Builds the balancer for a group's <c>balance.strategy</c>.</summary>
internal static class LoadBalancerFactory
{
    /// <param name="strategy">The group's strategy.</param>
    /// <param name="members">Group members in config order; the index space of <see cref="ILoadBalancer.Select"/>.</param>
    /// <param name="random">Only for <see cref="BalanceStrategy.Random"/>; default <see cref="System.Random.Shared"/>.</param>
    public static ILoadBalancer Create(BalanceStrategy strategy, IReadOnlyList<BalancerMember> members, Random? random = null)
    {
        ArgumentNullException.ThrowIfNull(members);
        if (members.Count == 0)
        {
            throw new ArgumentException("A balanced group needs at least one member.", nameof(members));
        }

        return strategy switch
        {
            BalanceStrategy.RoundRobin => new RoundRobinBalancer(members.Count),
            BalanceStrategy.WeightedRoundRobin => new SmoothWeightedRoundRobinBalancer(members),
            BalanceStrategy.Random => new RandomBalancer(members.Count, random),
            BalanceStrategy.IpHash => new IpHashBalancer(members),
            _ => throw new ArgumentOutOfRangeException(nameof(strategy), strategy, "Unknown balance strategy."),
        };
    }

    internal static void CheckLength(ReadOnlySpan<bool> eligible, int count)
    {
        if (eligible.Length != count)
        {
            ThrowLengthMismatch(eligible.Length, count);
        }
    }

    private static void ThrowLengthMismatch(int got, int count) =>
        throw new ArgumentException($"eligible has {got} entries but the group has {count} members.", "eligible");

    /// <summary>Index of the <paramref name="k"/>-th (0-based) true entry; caller guarantees it exists.</summary>
    internal static int NthEligible(ReadOnlySpan<bool> eligible, int k)
    {
        for (int i = 0; i < eligible.Length; i++)
        {
            if (eligible[i] && k-- == 0)
            {
                return i;
            }
        }

        return -1;
    }

    internal static int CountEligible(ReadOnlySpan<bool> eligible)
    {
        int n = 0;
        foreach (bool e in eligible)
        {
            if (e)
            {
                n++;
            }
        }

        return n;
    }
}
