using System.Diagnostics.CodeAnalysis;

namespace LLMProxy.LoadBalancing;

/// <summary>
/// The balancing policies by name. Config validation accepts a <c>balance.strategy</c> only when it is in
/// <see cref="Names"/>, so <see cref="Get"/> never misses at run time. Adding a strategy is one class implementing
/// <see cref="ILoadBalancingPolicy"/> and one line in <see cref="BuiltIn"/>.
/// </summary>
internal sealed class LoadBalancingPolicies
{
    /// <summary>Every strategy this build knows, in the order error messages list them.</summary>
    public static LoadBalancingPolicies BuiltIn { get; } = new(
    [
        new RoundRobinPolicy(),
        new WeightedRoundRobinPolicy(),
        new RandomPolicy(),
        new IpHashPolicy(),
    ]);

    private readonly Dictionary<string, ILoadBalancingPolicy> _byName = new(StringComparer.OrdinalIgnoreCase);

    public LoadBalancingPolicies(IEnumerable<ILoadBalancingPolicy> policies)
    {
        ArgumentNullException.ThrowIfNull(policies);
        var names = new List<string>();
        foreach (var policy in policies)
        {
            if (!_byName.TryAdd(policy.Name, policy))
            {
                throw new ArgumentException($"Two balancing policies are named '{policy.Name}'.", nameof(policies));
            }
            names.Add(policy.Name);
        }
        Names = names;
    }

    /// <summary>Registered names, in registration order.</summary>
    public IReadOnlyList<string> Names { get; }

    /// <summary>Case-insensitive, like every other named value in the config.</summary>
    public bool TryGet(string name, [NotNullWhen(true)] out ILoadBalancingPolicy? policy) => _byName.TryGetValue(name, out policy);

    /// <summary>The policy of a validated config; a miss is a bug (validation and runtime disagree), not a config error.</summary>
    public ILoadBalancingPolicy Get(string name) =>
        TryGet(name, out var policy) ? policy : throw new KeyNotFoundException($"No balancing policy named '{name}' is registered.");
}
