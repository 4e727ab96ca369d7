namespace LLMProxy.Observability;

/// <summary>
/// The upstreams, groups and group memberships one configuration has, with each group's strategy: a series labelled
/// with anything else belongs to a configuration a reload replaced, and would be exported unchanged forever.
/// </summary>
internal sealed class MetricScope
{
    private readonly HashSet<string> _upstreams = new(StringComparer.Ordinal);
    private readonly Dictionary<string, string> _strategies = new(StringComparer.Ordinal);
    private readonly HashSet<(string Group, string Upstream)> _members = [];

    public MetricScope AddUpstream(string upstream)
    {
        _upstreams.Add(upstream);
        return this;
    }

    public MetricScope AddGroup(string group, string strategy, IEnumerable<string> members)
    {
        ArgumentNullException.ThrowIfNull(members);
        _strategies[group] = strategy;
        foreach (var member in members)
        {
            _members.Add((group, member));
        }
        return this;
    }

    /// <summary>Whether a series with these label values (null = the family has no such label) is still current.</summary>
    public bool Contains(string? group, string? upstream, string? strategy)
    {
        if (upstream is not null && !_upstreams.Contains(upstream))
        {
            return false;
        }
        if (group is null)
        {
            return true;
        }
        if (!_strategies.TryGetValue(group, out var current))
        {
            return false;
        }
        return (upstream is null || _members.Contains((group, upstream))) && (strategy is null || strategy == current);
    }
}
