namespace LLMProxy.LoadBalancing;

/// <summary><c>weighted_roundrobin</c>: builds a <see cref="SmoothWeightedRoundRobinBalancer"/>.</summary>
internal sealed class WeightedRoundRobinPolicy : ILoadBalancingPolicy
{
    public const string PolicyName = "weighted_roundrobin";

    public string Name => PolicyName;

    public ILoadBalancer Create(IReadOnlyList<BalancerMember> members)
    {
        ArgumentNullException.ThrowIfNull(members);
        return new SmoothWeightedRoundRobinBalancer(members);
    }
}

/// <summary>
/// <c>weighted_roundrobin</c>: nginx smooth weighted round robin. Per pick every eligible member's current weight grows
/// by its weight, the largest (first on ties) is chosen and loses the eligible total. Starting from the zero state, every
/// window of sum(weights) picks with all members eligible gives each member exactly its weight, interleaved
/// (5,1,1 → a a b a c a a). Ineligible members keep their current weight untouched, as nginx does.
/// A small lock keeps the read-modify-write of the weight vector atomic, so the counts stay exact under concurrency.
/// </summary>
internal sealed class SmoothWeightedRoundRobinBalancer : ILoadBalancer
{
    private readonly int[] _weights;
    private readonly long[] _current;
    private readonly Lock _lock = new();

    public SmoothWeightedRoundRobinBalancer(IReadOnlyList<BalancerMember> members)
    {
        ArgumentNullException.ThrowIfNull(members);
        ArgumentOutOfRangeException.ThrowIfLessThan(members.Count, 1);
        _weights = new int[members.Count];
        for (int i = 0; i < _weights.Length; i++)
        {
            _weights[i] = Math.Max(1, members[i].Weight);
        }

        _current = new long[members.Count];
    }

    public int Select(ReadOnlySpan<bool> eligible, in BalancingContext context)
    {
        Eligibility.CheckLength(eligible, _weights.Length);
        int[] weights = _weights;
        long[] current = _current;
        lock (_lock)
        {
            long total = 0;
            int best = -1;
            for (int i = 0; i < weights.Length; i++)
            {
                if (!eligible[i])
                {
                    continue;
                }

                long c = current[i] + weights[i];
                current[i] = c;
                total += weights[i];
                if (best < 0 || c > current[best])
                {
                    best = i;
                }
            }

            if (best >= 0)
            {
                current[best] -= total;
            }

            return best;
        }
    }
}
