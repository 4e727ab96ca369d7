using LLMProxy.Configuration;
using LLMProxy.Observability;
using LLMProxy.Resilience;
using Microsoft.Extensions.Logging;

namespace LLMProxy.Runtime;

/// <summary>The compiled configuration the hot path reads: built once, never parsed per request.</summary>
internal sealed class ProxyRuntime : IDisposable
{
    /// <param name="previous">On reload, the runtime being replaced. What did not change is carried over (SPEC §16): an
    /// upstream whose config did not change keeps its live state (breaker, 429 cool-down, token bucket) by being reused as
    /// is; a group keeps its balancer and connection pool, a forward its client buckets (see their constructors).</param>
    /// <param name="cluster">The shared state of SPEC §17 (<c>cluster.redis</c>), owned by the host and the same across
    /// reloads; null = every decision is this instance's own.</param>
    public ProxyRuntime(ProxyConfig config, ProxyMetrics metrics, TimeProvider time, ILogger logger, ProxyRuntime? previous = null,
        Cluster.RedisCluster? cluster = null)
    {
        Config = config;
        UpstreamConnectionCap = Hosting.FileDescriptorBudget.UpstreamConnections(config);
        Cluster = cluster;
        Metrics = metrics;
        Time = time;
        var created = new List<UpstreamRuntime>();
        Upstreams = config.Upstreams.ToDictionary(u => u.Name, u =>
        {
            if (previous is not null && previous.Upstreams.TryGetValue(u.Name, out var kept) && ConfigEquality.Same(kept.Config, u))
            {
                return kept;
            }
            var fresh = new UpstreamRuntime(u, time);
            if (cluster is not null)
            {
                fresh.AttachShared(cluster);
            }
            created.Add(fresh);
            return fresh;
        }, StringComparer.Ordinal);
        Groups = config.UpstreamGroups.ToDictionary(g => g.Name,
            g => new GroupRuntime(g, Upstreams, metrics, previous?.Groups.GetValueOrDefault(g.Name)), StringComparer.Ordinal);
        Forwards = [.. config.HttpServer.Forwards.Select(f =>
            new ForwardRuntime(f, Groups, metrics, time, previous?.Forwards.FirstOrDefault(p => p.Name == f.Name), cluster))];

        if (previous is not null)
        {
            foreach (var old in previous.Upstreams.Values)
            {
                old.Replaced = !ReferenceEquals(Upstreams.GetValueOrDefault(old.Name), old);
            }
        }
        // Carried-over upstreams are already wired to the metrics; only new breakers are. A new config without a breaker
        // has no breaker series, as at start (not the replaced breaker's last state).
        foreach (var upstream in created)
        {
            var name = upstream.Name;
            if (upstream.Breaker is not { } breaker)
            {
                metrics.BreakerState.RemoveLabelled(name);
                continue;
            }
            var gauge = metrics.BreakerState.WithLabels(name);
            gauge.Set((int)breaker.State);
            breaker.StateChanged += (from, to) =>
            {
                if (upstream.Replaced)
                {
                    return;
                }
                gauge.Set((int)to);
                metrics.BreakerStateChanges.WithLabels(name, StateLabel(from), StateLabel(to)).Inc();
                Log.BreakerStateChanged(logger, name, StateLabel(from), StateLabel(to));
            };
        }
    }

    public ProxyConfig Config { get; }
    /// <summary>The shared state (SPEC §17), or null without <c>cluster.redis</c>.</summary>
    public Cluster.RedisCluster? Cluster { get; }
    public ProxyMetrics Metrics { get; }
    /// <summary>The most upstream connections this config's pools can hold at once (<c>maxPerHost</c> per distinct host
    /// and group): the room the descriptor ceiling keeps for them.</summary>
    public long UpstreamConnectionCap { get; }
    public TimeProvider Time { get; }
    public IReadOnlyDictionary<string, UpstreamRuntime> Upstreams { get; }
    public IReadOnlyDictionary<string, GroupRuntime> Groups { get; }
    public ForwardRuntime[] Forwards { get; }

    private int _activeRequests;
    private long _startedRequests;

    /// <summary>Requests in progress on every forward (the idle check of the memory trimmer).</summary>
    public int ActiveRequests => Volatile.Read(ref _activeRequests);

    /// <summary>Requests started since the process began.</summary>
    public long StartedRequests => Interlocked.Read(ref _startedRequests);

    public void RequestStarted()
    {
        Interlocked.Increment(ref _activeRequests);
        Interlocked.Increment(ref _startedRequests);
    }

    public void RequestEnded() => Interlocked.Decrement(ref _activeRequests);

    /// <summary>Sets the gauges of live state — <c>llmproxy_upstream_disabled</c>, <c>llmproxy_upstream_budget_remaining</c> and
    /// <c>_limit</c>, <c>llmproxy_upstream_cooldown_remaining_seconds</c>, <c>llmproxy_group_available_upstreams</c> — from every
    /// upstream's state and budgets (called before a scrape, so the hot path pays nothing); a budget not configured, or learned
    /// headroom unknown or past its reset, has no series.</summary>
    public void RefreshBudgetMetrics()
    {
        var gauge = Metrics.BudgetRemaining;
        var limit = Metrics.BudgetLimit;
        var now = Time.GetUtcNow();
        foreach (var u in Upstreams.Values)
        {
            Set(gauge, u.Name, "requests_per_minute", u.Rpm?.AvailableTokens);
            Set(limit, u.Name, "requests_per_minute", u.Rpm?.Burst);
            Set(gauge, u.Name, "tokens_per_minute", u.Tpm?.Available);
            Set(limit, u.Name, "tokens_per_minute", u.Tpm?.Capacity);
            Set(gauge, u.Name, "concurrent", u.MaxConcurrent == int.MaxValue ? null : u.MaxConcurrent - u.InFlight);
            Set(limit, u.Name, "concurrent", u.MaxConcurrent == int.MaxValue ? null : u.MaxConcurrent);
            var learned = u.Learned;
            Set(gauge, u.Name, "learned_requests", learned?.RequestsReset > now ? learned.RemainingRequests : null);
            Set(gauge, u.Name, "learned_tokens", learned?.TokensReset > now ? learned.RemainingTokens : null);
            Set(gauge, u.Name, "learned_input_tokens", learned?.InputTokens is { } input && input.Reset > now ? input.Remaining : null);
            Set(gauge, u.Name, "learned_output_tokens", learned?.OutputTokens is { } output && output.Reset > now ? output.Remaining : null);
            Metrics.UpstreamDisabled.WithLabels(u.Name).Set(u.Disabled is null ? 0 : 1);
            Metrics.CoolDownRemaining.WithLabels(u.Name).Set(u.CoolDown.Until is { } until && until > now ? (until - now).TotalSeconds : 0);
        }
        foreach (var g in Groups.Values)
        {
            var available = 0;
            foreach (var m in g.Members)
            {
                available += m.Check() == Unavailability.None ? 1 : 0;
            }
            Metrics.GroupAvailableUpstreams.WithLabels(g.Name).Set(available);
            Metrics.GroupUpstreams.WithLabels(g.Name).Set(g.Members.Length);
        }

        static void Set(Prometheus.Gauge gauge, string upstream, string budget, long? value)
        {
            if (value is { } v)
            {
                gauge.WithLabels(upstream, budget).Set(v);
            }
            else
            {
                gauge.RemoveLabelled(upstream, budget);
            }
        }
    }

    /// <summary>Removes the metric series of upstreams, groups, memberships, strategies and client keys this configuration no longer
    /// has (after a reload swapped it in, and again once the replaced runtime drained, since its last requests may have
    /// recreated some).</summary>
    public void RemoveStaleMetricSeries()
    {
        var scope = new MetricScope();
        foreach (var name in Upstreams.Keys)
        {
            scope.AddUpstream(name);
        }
        foreach (var group in Groups.Values)
        {
            scope.AddGroup(group.Name, group.StrategyLabel, group.Members.Select(m => m.Name));
        }
        foreach (var forward in Forwards)
        {
            scope.AddClients(forward.Name, forward.ClientKeys?.Keys.Select(k => k.Name) ?? []);
        }
        Metrics.RemoveOutside(scope);
    }

    public static string StateLabel(CircuitState state) => state switch
    {
        CircuitState.Open => "open",
        CircuitState.HalfOpen => "half_open",
        _ => "closed",
    };

    public void Dispose()
    {
        foreach (var g in Groups.Values)
        {
            g.Dispose();
        }
        foreach (var f in Forwards)
        {
            f.Dispose();
        }
    }
}
