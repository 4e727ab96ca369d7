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
    private readonly HashSet<(string Forward, string Client)> _clients = [];
    private readonly HashSet<string> _clientNames = new(StringComparer.Ordinal);

    /// <summary>The client keys (SPEC §15) of a forward, by name.</summary>
    public MetricScope AddClients(string forward, IEnumerable<string> clients)
    {
        ArgumentNullException.ThrowIfNull(clients);
        foreach (var client in clients)
        {
            _clients.Add((forward, client));
            _clientNames.Add(client);
        }
        return this;
    }

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

    /// <summary>Whether a series with these label values (null = the family has no such label) is still current. An empty
    /// <paramref name="client"/> is "no client key"; a named one must be a key of <paramref name="forward"/> (of some
    /// forward, for a family without a forward label).</summary>
    public bool Contains(string? group, string? upstream, string? strategy, string? forward = null, string? client = null)
    {
        if (!string.IsNullOrEmpty(client) && !(forward is null ? _clientNames.Contains(client) : _clients.Contains((forward, client))))
        {
            return false;
        }
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
