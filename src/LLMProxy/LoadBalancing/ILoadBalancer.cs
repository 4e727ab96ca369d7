namespace LLMProxy.LoadBalancing;

/// <summary>
/// Chooses one member of an upstream group. Implementations are thread-safe and allocation-free per call;
/// one instance lives as long as the compiled group (its state — counters, smooth weights — is per group).
/// </summary>
internal interface ILoadBalancer
{
    /// <summary>
    /// Picks a member. <paramref name="eligible"/>[i] says whether member i may be chosen now (its length must equal
    /// the member count); <paramref name="clientHash"/> is <see cref="ClientHash.Of"/> of the client IP (only iphash uses it).
    /// Returns the chosen index, or -1 when no member is eligible.
    /// </summary>
    int Select(ReadOnlySpan<bool> eligible, ulong clientHash);
}

/// <summary>One member of a balanced group: upstream name and its weight (≥ 1; values below 1 are treated as 1).</summary>
internal readonly record struct BalancerMember(string Name, int Weight);
