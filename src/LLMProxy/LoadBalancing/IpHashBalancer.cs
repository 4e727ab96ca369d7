namespace LLMProxy.LoadBalancing;

/// <summary><c>iphash</c>: builds a <see cref="IpHashBalancer"/>.</summary>
internal sealed class IpHashPolicy : ILoadBalancingPolicy
{
    public const string PolicyName = "iphash";

    public string Name => PolicyName;

    public ILoadBalancer Create(IReadOnlyList<BalancerMember> members)
    {
        ArgumentNullException.ThrowIfNull(members);
        return new IpHashBalancer(members);
    }
}

/// <summary>
/// <c>iphash</c>: <see cref="Rendezvous"/> hashing keyed by the <see cref="ClientHash"/> of the client IP, so a client
/// sticks to its member while that member is eligible and only a leaving member's clients move. Weights are ignored: the
/// reference applies them to weighted_roundrobin only, so a reference config with weights spreads clients evenly.
/// </summary>
internal sealed class IpHashBalancer(IReadOnlyList<BalancerMember> members) : ILoadBalancer
{
    private readonly Rendezvous _rendezvous = new(members, weighted: false);

    // Hashed here, not by the caller: only this policy needs it.
    public int Select(ReadOnlySpan<bool> eligible, in BalancingContext context) =>
        _rendezvous.Select(eligible, ClientHash.Of(context.Client));
}
