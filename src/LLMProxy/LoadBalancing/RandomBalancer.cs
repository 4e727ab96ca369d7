namespace LLMProxy.LoadBalancing;

/// <summary><c>random</c>: builds a <see cref="RandomBalancer"/>.</summary>
/// <param name="random">Injected in tests for a seeded sequence; default <see cref="Random.Shared"/>.</param>
internal sealed class RandomPolicy(Random? random = null) : ILoadBalancingPolicy
{
    public const string PolicyName = "random";

    public string Name => PolicyName;

    public ILoadBalancer Create(IReadOnlyList<BalancerMember> members)
    {
        ArgumentNullException.ThrowIfNull(members);
        return new RandomBalancer(members.Count, random);
    }
}

/// <summary>
/// <c>random</c>: uniform among the eligible members. Uses <see cref="Random.Shared"/> (thread-safe, lock-free) unless a
/// <see cref="Random"/> is injected; an injected instance (e.g. seeded in tests) is not thread-safe, so calls on it are
/// serialized by a lock.
/// </summary>
internal sealed class RandomBalancer : ILoadBalancer
{
    private readonly int _count;
    private readonly Random _random;
    private readonly Lock? _lock;

    public RandomBalancer(int count, Random? random = null)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(count, 1);
        _count = count;
        _random = random ?? Random.Shared;
        _lock = ReferenceEquals(_random, Random.Shared) ? null : new Lock();
    }

    public int Select(ReadOnlySpan<bool> eligible, in BalancingContext context)
    {
        Eligibility.CheckLength(eligible, _count);
        int available = Eligibility.Count(eligible);
        if (available == 0)
        {
            return -1;
        }

        int k;
        if (_lock is null)
        {
            k = _random.Next(available);
        }
        else
        {
            lock (_lock)
            {
                k = _random.Next(available);
            }
        }

        return available == _count ? k : Eligibility.Nth(eligible, k);
    }
}
