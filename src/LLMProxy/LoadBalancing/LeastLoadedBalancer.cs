namespace LLMProxy.LoadBalancing;

/// <summary><c>least_loaded</c>: builds a <see cref="LeastLoadedBalancer"/>.</summary>
/// <param name="random">Injected in tests for a seeded sequence; default <see cref="Random.Shared"/>.</param>
internal sealed class LeastLoadedPolicy(Random? random = null) : ILoadBalancingPolicy
{
    public const string PolicyName = "least_loaded";

    public string Name => PolicyName;

    public ILoadBalancer Create(IReadOnlyList<BalancerMember> members)
    {
        ArgumentNullException.ThrowIfNull(members);
        return new LeastLoadedBalancer(members, random);
    }
}

/// <summary>
/// <c>least_loaded</c>: power of two choices. Two distinct eligible members are drawn at random and the one with the
/// smaller in-flight ÷ weight wins (compared by cross-multiplication, so no division and no rounding); equal loads go to
/// the larger <see cref="IMemberLoad.Headroom"/>, then to the lower index. Two random candidates instead of a scan for
/// the global minimum keep many proxy instances (or many concurrent picks that see the same stale counts) from all
/// piling onto the one member that looked idlest. With two eligible members it is exactly "the less loaded one".
/// Loads come from <see cref="BalancingContext.Load"/>; without it every member is idle and the lower index of the two
/// wins. Random as in <see cref="RandomBalancer"/>: <see cref="Random.Shared"/>, or an injected instance under a lock.
/// </summary>
internal sealed class LeastLoadedBalancer : ILoadBalancer
{
    private readonly int[] _weights;
    private readonly Random _random;
    private readonly Lock? _lock;

    public LeastLoadedBalancer(IReadOnlyList<BalancerMember> members, Random? random = null)
    {
        ArgumentNullException.ThrowIfNull(members);
        ArgumentOutOfRangeException.ThrowIfLessThan(members.Count, 1);
        _weights = new int[members.Count];
        for (int i = 0; i < _weights.Length; i++)
        {
            _weights[i] = Math.Max(1, members[i].Weight);
        }

        _random = random ?? Random.Shared;
        _lock = ReferenceEquals(_random, Random.Shared) ? null : new Lock();
    }

    public int Select(ReadOnlySpan<bool> eligible, in BalancingContext context)
    {
        Eligibility.CheckLength(eligible, _weights.Length);
        int available = Eligibility.Count(eligible);
        if (available <= 1)
        {
            return available == 0 ? -1 : Eligibility.Nth(eligible, 0);
        }

        int first, second;
        if (available == 2)
        {
            first = Eligibility.Nth(eligible, 0);
            second = Eligibility.Nth(eligible, 1);
        }
        else
        {
            int k1, k2;
            if (_lock is null)
            {
                (k1, k2) = Draw(_random, available);
            }
            else
            {
                lock (_lock)
                {
                    (k1, k2) = Draw(_random, available);
                }
            }

            first = Eligibility.Nth(eligible, k1);
            second = Eligibility.Nth(eligible, k2);
        }

        return Better(first, second, context.Load) ? first : second;
    }

    /// <summary>Two distinct ranks in [0, n): the second drawn from n - 1 and shifted past the first.</summary>
    private static (int, int) Draw(Random random, int n)
    {
        int a = random.Next(n);
        int b = random.Next(n - 1);
        return (a, b >= a ? b + 1 : b);
    }

    /// <summary>Whether member <paramref name="a"/> should win over <paramref name="b"/>.</summary>
    private bool Better(int a, int b, IMemberLoad? load)
    {
        if (load is null)
        {
            return a < b;
        }

        // inFlight(a) / w(a) vs inFlight(b) / w(b), as longs: no overflow for int counts and weights.
        long la = (long)Math.Max(0, load.InFlight(a)) * _weights[b];
        long lb = (long)Math.Max(0, load.InFlight(b)) * _weights[a];
        if (la != lb)
        {
            return la < lb;
        }

        long ha = load.Headroom(a);
        long hb = load.Headroom(b);
        if (ha != hb)
        {
            return ha > hb;
        }

        return a < b;
    }
}
