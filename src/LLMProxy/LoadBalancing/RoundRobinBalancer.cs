namespace LLMProxy.LoadBalancing;

/// <summary><c>roundrobin</c>: builds a <see cref="RoundRobinBalancer"/>.</summary>
internal sealed class RoundRobinPolicy : ILoadBalancingPolicy
{
    public const string PolicyName = "roundrobin";

    public string Name => PolicyName;

    public ILoadBalancer Create(IReadOnlyList<BalancerMember> members)
    {
        ArgumentNullException.ThrowIfNull(members);
        return new RoundRobinBalancer(members.Count);
    }
}

/// <summary>
/// <c>roundrobin</c>: strict rotation over the eligible members. One shared Interlocked counter; request n takes the
/// (n mod eligibleCount)-th eligible member, so with a stable eligible set every eligible member gets exactly its share
/// (walking forward from n mod size instead would hand the member after an ineligible one a double share).
/// </summary>
internal sealed class RoundRobinBalancer : ILoadBalancer
{
    private readonly int _count;
    private long _counter = -1;

    public RoundRobinBalancer(int count)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(count, 1);
        _count = count;
    }

    public int Select(ReadOnlySpan<bool> eligible, in BalancingContext context)
    {
        Eligibility.CheckLength(eligible, _count);
        int available = Eligibility.Count(eligible);
        if (available == 0)
        {
            return -1;
        }

        ulong ticket = (ulong)Interlocked.Increment(ref _counter);
        if (available == _count)
        {
            return (int)(ticket % (ulong)_count);
        }

        return Eligibility.Nth(eligible, (int)(ticket % (ulong)available));
    }
}
