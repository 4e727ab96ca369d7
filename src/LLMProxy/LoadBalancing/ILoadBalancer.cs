using System.Net;

namespace LLMProxy.LoadBalancing;

/// <summary>
/// Chooses one member of an upstream group. Implementations are thread-safe and allocation-free per call;
/// one instance lives as long as the compiled group (its state — counters, smooth weights — is per group) and
/// is carried over by a reload that changes neither the group's members nor its strategy.
/// </summary>
internal interface ILoadBalancer
{
    /// <summary>
    /// Picks a member. <paramref name="eligible"/>[i] says whether member i may be chosen now (its length must equal
    /// the member count); <paramref name="context"/> is what the policy may know about the request.
    /// Returns the chosen index, or -1 when no member is eligible.
    /// </summary>
    int Select(ReadOnlySpan<bool> eligible, in BalancingContext context);
}

/// <summary>
/// A load-balancing strategy as <c>balance.strategy</c> names it (as YARP's <c>ILoadBalancingPolicy</c>): builds the
/// balancer of one group. Registered in <see cref="LoadBalancingPolicies"/>, where config validation finds its name.
/// </summary>
internal interface ILoadBalancingPolicy
{
    /// <summary>The <c>balance.strategy</c> value (lower case), also the <c>strategy</c> metric label.</summary>
    string Name { get; }

    /// <summary>A balancer over <paramref name="members"/> (config order, ≥ 1; the index space of <see cref="ILoadBalancer.Select"/>).</summary>
    ILoadBalancer Create(IReadOnlyList<BalancerMember> members);
}

/// <summary>One member of a balanced group: upstream name and its weight (≥ 1; values below 1 are treated as 1).</summary>
internal readonly record struct BalancerMember(string Name, int Weight);

/// <summary>
/// What a balancer may know about the request it places. It carries facts, not derived values: iphash hashes
/// <see cref="Client"/> itself, so requests of every other strategy never pay for a hash. Passed by <c>in</c>
/// reference, so a later field costs neither a copy nor a changed call site.
/// </summary>
internal readonly struct BalancingContext(IPAddress client)
{
    /// <summary>The client as the forward identified it (the TCP peer, or X-Forwarded-For from a trusted proxy).</summary>
    public IPAddress Client { get; } = client ?? throw new ArgumentNullException(nameof(client));

    /// <summary>The request's estimated LLM tokens (SPEC §13.1): what a member's TPM budget or learned provider headroom
    /// must cover for it to be eligible, with its output part (Anthropic limits input and output apart). 0 = unknown
    /// (any member with budget left).</summary>
    public RateLimiting.TokenNeed Tokens { get; init; }

    /// <summary>Live load of the group's members (same index space as the eligibility span); null when the caller
    /// knows none, in which case load-aware policies treat every member as idle.</summary>
    public IMemberLoad? Load { get; init; }
}

/// <summary>
/// What load-aware policies (<c>least_loaded</c>) may read about a member now. Implemented by the group runtime over
/// its upstreams; tests use fakes. Reads only, never leases.
/// </summary>
internal interface IMemberLoad
{
    /// <summary>Requests member <paramref name="index"/> is serving right now.</summary>
    int InFlight(int index);

    /// <summary>How much more member <paramref name="index"/> may take before a limit (learned from the provider or
    /// declared in its budget), in any unit comparable across the members of one group; larger is better.
    /// <see cref="long.MaxValue"/> when unknown or unlimited, so members without a budget tie.</summary>
    long Headroom(int index);
}
