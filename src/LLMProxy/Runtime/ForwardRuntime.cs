using LLMProxy.Configuration;
using LLMProxy.Forwarding.Stages;
using LLMProxy.Observability;
using LLMProxy.RateLimiting;
using LLMProxy.Routing;

namespace LLMProxy.Runtime;

/// <summary>One forward listener, compiled, with its request pipeline composed.</summary>
internal sealed class ForwardRuntime : IDisposable
{
    private readonly Shared<ClientRateLimiter>? _limiter;

    /// <param name="previous">On reload, the forward of the same name in the runtime being replaced: its client buckets
    /// are kept when <c>ratelimit</c> did not change, so a client that spent its burst does not get a new one.</param>
    public ForwardRuntime(ForwardConfig config, IReadOnlyDictionary<string, GroupRuntime> groups, ProxyMetrics metrics, TimeProvider time,
        ForwardRuntime? previous = null, Cluster.RedisCluster? cluster = null)
    {
        Config = config;
        Name = config.Name;
        DefaultGroup = groups[config.DefaultGroup];
        Metrics = new ForwardMetrics(metrics, config.Name);
        Routes = config.Routes.Count > 0 ? new RouteSelector(config.Routes) : RouteSelector.Empty;
        RouteGroups = [.. Routes.Groups.Select(g => groups[g])];
        RouteCounters = [.. Enumerable.Range(0, Routes.Count).Select(i => metrics.RouteRequests.WithLabels(Name, Routes.Labels[i], RouteGroups[i].Name)),
            metrics.RouteRequests.WithLabels(Name, DefaultRouteLabel, DefaultGroup.Name)];
        var reachable = RouteGroups.Append(DefaultGroup).ToArray();
        ReachesLlmEndpoint = reachable.Any(g => g.Members.Any(m => m.EndpointIsLlmCall));
        ClientKeys = config.Keys.Count > 0 ? new ClientKeyTable(config.Keys, Name, metrics, time, previous?.ClientKeys, cluster) : null;
        NeedsFacts = config.Routes.Any(r => r.Model is not null) || reachable.Any(g => g.HasModelRules || g.HasBodyAffinity || g.HasTokenBudgets)
            || ClientKeys?.NeedsFacts == true;
        BuffersBodies = NeedsFacts || reachable.Any(g => g.MaxAttempts > 1);
        // Shared, not moved: the previous runtime's draining requests still take from the same buckets.
        _limiter = config.Ratelimit is not { } r ? null
            : previous?._limiter is { } kept && ConfigEquality.Same(previous.Config.Ratelimit, r) ? kept.Share()
            : Shared<ClientRateLimiter>.Create(new ClientRateLimiter(r, time));
        Limiter = _limiter?.Value;
        SharedClients = cluster is not null && config.Ratelimit is { } shared
            ? new Cluster.SharedBucket(cluster, "fwd:" + config.Name + ":ip", shared.PerSecond, shared.Burst)
            : null;
        IpResolver = config.TrustedProxies.Count > 0 ? new ClientIpResolver(config.TrustedProxies) : null;
        Stages = PipelineComposer.Compose(this);
    }

    public string Name { get; }
    public ForwardConfig Config { get; }
    public GroupRuntime DefaultGroup { get; }

    /// <summary>The <c>route</c> label of requests no route matched.</summary>
    public const string DefaultRouteLabel = "default";
    /// <summary>The forward's routes, compiled; <see cref="RouteSelector.Empty"/> without <c>routes</c>.</summary>
    public RouteSelector Routes { get; }
    /// <summary>The group of each route, by route index.</summary>
    public GroupRuntime[] RouteGroups { get; }
    /// <summary><c>llmproxy_route_requests_total</c> per route index; the last one counts the default group.</summary>
    public Prometheus.Counter.Child[] RouteCounters { get; }
    /// <summary>Whether a route or a member decides by the request's model, a group's affinity reads a body key, a
    /// member or a client key has a TPM budget (which reserves the request's max-output field), or a client key allows
    /// only some models, so the body's facts must be read.</summary>
    public bool NeedsFacts { get; }
    /// <summary>Some group of this forward has a member whose url is a full LLM endpoint: every request with a body may
    /// be an LLM call there, whatever its path (Forwarding/ApiShapes).</summary>
    public bool ReachesLlmEndpoint { get; }
    /// <summary>Whether every request body is buffered: its facts are needed or some reachable group retries. When false,
    /// only requests to a <c>/completions</c> path are (for include_usage, SPEC §13.2; see <see cref="ReadBodyStage"/>).</summary>
    public bool BuffersBodies { get; }
    public ForwardMetrics Metrics { get; }
    public ClientRateLimiter? Limiter { get; }
    /// <summary>The per-IP limit on the cluster (SPEC §17); null without <c>cluster.redis</c> or <c>ratelimit</c>.</summary>
    public Cluster.SharedBucket? SharedClients { get; }
    /// <summary>SPEC §15 client keys; null without <c>keys</c> (then no stage asks for one).</summary>
    public ClientKeyTable? ClientKeys { get; }
    /// <summary>Null when no proxy is trusted: the client is always the TCP peer.</summary>
    public ClientIpResolver? IpResolver { get; }
    /// <summary>The request pipeline, in order.</summary>
    public IRequestStage[] Stages { get; }

    /// <summary>Releases this runtime's reference to the client buckets.</summary>
    public void Dispose() => _limiter?.Dispose();
}
