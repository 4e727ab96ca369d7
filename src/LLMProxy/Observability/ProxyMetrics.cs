using Prometheus;

namespace LLMProxy.Observability;

/// <summary>
/// Every <c>llmproxy_*</c> family, on a registry owned by one proxy instance (so several instances can
/// live in one test process). Labels are bounded: forward, group, upstream, method (normalized), status,
/// outcome — never a path, a key or a client IP.
/// </summary>
internal sealed class ProxyMetrics
{
    private static readonly double[] DurationBuckets =
        [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300];
    private static readonly double[] SizeBuckets = Histogram.ExponentialBuckets(64, 4, 10);

    public CollectorRegistry Registry { get; }

    public Counter HttpRequests { get; }
    public Histogram HttpRequestDuration { get; }
    public Histogram HttpRequestSize { get; }
    public Histogram HttpResponseSize { get; }
    public Gauge ActiveConnections { get; }
    public Counter UpstreamRequests { get; }
    public Counter UpstreamErrors { get; }
    public Histogram UpstreamTimeToFirstByte { get; }
    public Gauge UpstreamInFlight { get; }
    public Gauge BreakerState { get; }
    public Counter BreakerStateChanges { get; }
    public Counter BalancerSelections { get; }
    public Counter RateLimitRejections { get; }
    public Counter Retries { get; }
    public Counter CoolDowns { get; }
    public Counter UpstreamTokens { get; }
    /// <summary>SPEC §13.1 budgets per upstream, refreshed on every scrape (<see cref="Runtime.ProxyRuntime.RefreshBudgetMetrics"/>).</summary>
    public Gauge BudgetRemaining { get; }
    /// <summary>SPEC §13.4: 1 while an upstream's key is disabled as bad, else 0; refreshed on every scrape.</summary>
    public Gauge UpstreamDisabled { get; }
    /// <summary>The configured limit of each SPEC §13.1 budget (what <see cref="BudgetRemaining"/> is a part of), so a
    /// dashboard or an alert can show usage as a ratio; refreshed on every scrape.</summary>
    public Gauge BudgetLimit { get; }
    /// <summary>Seconds left of an upstream's 429 cool-down (0 when not cooling); refreshed on every scrape.</summary>
    public Gauge CoolDownRemaining { get; }
    /// <summary>Members of a group that could take a request now, and members in all; refreshed on every scrape.</summary>
    public Gauge GroupAvailableUpstreams { get; }
    public Gauge GroupUpstreams { get; }
    public Counter RouteRequests { get; }
    public Counter ClientStalls { get; }
    public Gauge ClientConnections { get; }
    public Counter ConnectionsRejected { get; }
    public Counter AcceptPauses { get; }
    public Counter ConnectionsShed { get; }
    /// <summary>Operator actions on the admin API (disable, enable, reset, reload) by result.</summary>
    public Counter AdminActions { get; }
    /// <summary>Admin requests refused: a missing or wrong <c>admin.token</c>, or a cross-origin action.</summary>
    public Counter AdminUnauthorized { get; }

    public ProxyMetrics(bool includeProcessMetrics = true)
    {
        Registry = Metrics.NewCustomRegistry();
        if (includeProcessMetrics)
        {
            DotNetStats.Register(Registry);
        }

        var f = Metrics.WithCustomRegistry(Registry);
        // No exemplars: reading the trace context on every Inc/Observe costs time on the hot path and we export none.
        f.ExemplarBehavior = new ExemplarBehavior { DefaultExemplarProvider = static (_, _) => Exemplar.None };
        HttpRequests = f.CreateCounter("llmproxy_http_requests_total",
            "Requests answered by a forward, by method, status and client key (client = the key's name; empty without one).", "forward", "method", "status", "client");
        HttpRequestDuration = f.CreateHistogram("llmproxy_http_request_duration_seconds",
            "Time from request start to the end of the response.",
            new HistogramConfiguration { LabelNames = ["forward", "method", "status", "client"], Buckets = DurationBuckets });
        HttpRequestSize = f.CreateHistogram("llmproxy_http_request_size_bytes",
            "Request body bytes received from clients.",
            new HistogramConfiguration { LabelNames = ["forward"], Buckets = SizeBuckets });
        HttpResponseSize = f.CreateHistogram("llmproxy_http_response_size_bytes",
            "Response body bytes sent to clients.",
            new HistogramConfiguration { LabelNames = ["forward"], Buckets = SizeBuckets });
        ActiveConnections = f.CreateGauge("llmproxy_active_connections",
            "Requests currently being served by a forward.", "forward");
        UpstreamRequests = f.CreateCounter("llmproxy_upstream_requests_total",
            "Attempts sent to an upstream, by the status it answered (0 = no response).", "group", "upstream", "status_code");
        UpstreamErrors = f.CreateCounter("llmproxy_upstream_errors_total",
            "Failed upstream attempts by kind (connect, timeout, reset, status_5xx, status_429, stream).", "group", "upstream", "error");
        UpstreamTimeToFirstByte = f.CreateHistogram("llmproxy_upstream_ttfb_seconds",
            "Time from sending an attempt to receiving the upstream's response headers.",
            new HistogramConfiguration { LabelNames = ["group", "upstream"], Buckets = DurationBuckets });
        UpstreamInFlight = f.CreateGauge("llmproxy_upstream_inflight",
            "Attempts currently in flight per upstream.", "upstream");
        BreakerState = f.CreateGauge("llmproxy_circuit_breaker_state",
            "Circuit breaker state per upstream: 0 closed, 1 half-open, 2 open.", "upstream");
        BreakerStateChanges = f.CreateCounter("llmproxy_circuit_breaker_state_changes_total",
            "Circuit breaker transitions.", "upstream", "from", "to");
        BalancerSelections = f.CreateCounter("llmproxy_load_balancer_selections_total",
            "Upstreams chosen by the balancer.", "group", "upstream", "strategy");
        RateLimitRejections = f.CreateCounter("llmproxy_rate_limit_rejections_total",
            "Requests rejected by a rate limit (client = per client IP, upstream = every member out of tokens, client_key = a client key's ratelimit or tokensPerMinute).", "forward", "limit_type");
        Retries = f.CreateCounter("llmproxy_retries_total",
            "Failover attempts made after a failed attempt, by reason.", "group", "reason");
        CoolDowns = f.CreateCounter("llmproxy_upstream_cooldowns_total",
            "Times an upstream was parked after answering 429.", "upstream");
        RouteRequests = f.CreateCounter("llmproxy_route_requests_total",
            "Requests by the route that chose their group (route = its name or index; default = no route matched).", "forward", "route", "group");
        UpstreamTokens = f.CreateCounter("llmproxy_upstream_tokens_total",
            "LLM token usage reported by upstream answers (type: prompt, completion, cached, reasoning; cached and reasoning are parts of prompt and completion).",
            "group", "upstream", "type", "client");
        BudgetRemaining = f.CreateGauge("llmproxy_upstream_budget_remaining",
            "What an upstream's budgets have left: requests_per_minute, tokens_per_minute (negative in debt), concurrent, and "
            + "the provider's own learned_requests / learned_tokens (Anthropic's learned_input_tokens / learned_output_tokens) until their reset. Only configured or known budgets appear.",
            "upstream", "budget");
        UpstreamDisabled = f.CreateGauge("llmproxy_upstream_disabled",
            "1 while an upstream's key is disabled as bad (401/402/403, or a 429 saying quota or billing), else 0.", "upstream");
        BudgetLimit = f.CreateGauge("llmproxy_upstream_budget_limit",
            "The configured limit of an upstream's budgets (requests_per_minute, tokens_per_minute, concurrent): "
            + "used = limit - llmproxy_upstream_budget_remaining. Only configured budgets appear.", "upstream", "budget");
        CoolDownRemaining = f.CreateGauge("llmproxy_upstream_cooldown_remaining_seconds",
            "Seconds until an upstream parked after a 429 takes traffic again (0 when not cooling down).", "upstream");
        GroupAvailableUpstreams = f.CreateGauge("llmproxy_group_available_upstreams",
            "Members of a group that could take a request now (not disabled, breaker not open, not cooling down, within rate limit "
            + "and budgets); 0 means the group answers every request with 503 or 429.", "group");
        GroupUpstreams = f.CreateGauge("llmproxy_group_upstreams", "Members of a group.", "group");
        ClientStalls = f.CreateCounter("llmproxy_client_stalls_total",
            "Requests ended because the client made no progress: its request body stopped arriving for timeout.read (direction=read; 408 or cut) or it stopped reading the response for timeout.write (direction=write; cut).",
            "forward", "direction");
        ClientConnections = f.CreateGauge("llmproxy_client_connections",
            "Client TCP connections open on a forward (what httpServer.forwards[].maxConnections caps).", "forward");
        ConnectionsRejected = f.CreateCounter("llmproxy_connections_rejected_total",
            "Client connections closed unanswered because the forward already had maxConnections open.", "forward");
        AcceptPauses = f.CreateCounter("llmproxy_accept_pauses_total",
            "Times a listener paused accepting for 100 ms because the process had no file descriptor (EMFILE/ENFILE) or socket buffer left.");
        ConnectionsShed = f.CreateCounter("llmproxy_connections_shed_total",
            "Connections closed unanswered as soon as accepted because the process's file descriptors were down to the room kept for upstream connections, admin and the runtime (listener forward or admin).",
            "listener");
        AdminActions = f.CreateCounter("llmproxy_admin_actions_total",
            "Operator actions on the admin API: action disable, enable, reset or reload; result ok, not_found (no such upstream) or rejected (an invalid config file).",
            "action", "result");
        AdminUnauthorized = f.CreateCounter("llmproxy_admin_unauthorized_total",
            "Admin API requests refused: 401 because admin.token is set and the request did not carry it, or 403 for a cross-origin action (CSRF).");
    }

    /// <summary>
    /// Removes every series whose group, upstream, membership, strategy or client key is outside <paramref name="scope"/>
    /// (SPEC §16: a reload keeps what did not change, and what it removed must not linger on /metrics). Lists every family
    /// — those without a group, upstream or client label are skipped — so a family added later only needs a line here.
    /// </summary>
    public void RemoveOutside(MetricScope scope)
    {
        ArgumentNullException.ThrowIfNull(scope);
        RemoveOutside(HttpRequests, scope);
        RemoveOutside(HttpRequestDuration, scope);
        RemoveOutside(HttpRequestSize, scope);
        RemoveOutside(HttpResponseSize, scope);
        RemoveOutside(ActiveConnections, scope);
        RemoveOutside(UpstreamRequests, scope);
        RemoveOutside(UpstreamErrors, scope);
        RemoveOutside(UpstreamTimeToFirstByte, scope);
        RemoveOutside(UpstreamInFlight, scope);
        RemoveOutside(BreakerState, scope);
        RemoveOutside(BreakerStateChanges, scope);
        RemoveOutside(BalancerSelections, scope);
        RemoveOutside(RateLimitRejections, scope);
        RemoveOutside(Retries, scope);
        RemoveOutside(CoolDowns, scope);
        RemoveOutside(UpstreamTokens, scope);
        RemoveOutside(RouteRequests, scope);
        RemoveOutside(BudgetRemaining, scope);
        RemoveOutside(UpstreamDisabled, scope);
        RemoveOutside(BudgetLimit, scope);
        RemoveOutside(CoolDownRemaining, scope);
        RemoveOutside(GroupAvailableUpstreams, scope);
        RemoveOutside(GroupUpstreams, scope);
    }

    private static void RemoveOutside<TChild>(Collector<TChild> family, MetricScope scope) where TChild : ChildBase
    {
        var names = family.LabelNames;
        int group = Array.IndexOf(names, "group"), upstream = Array.IndexOf(names, "upstream"), strategy = Array.IndexOf(names, "strategy");
        int forward = Array.IndexOf(names, "forward"), client = Array.IndexOf(names, "client");
        if (group < 0 && upstream < 0 && client < 0)
        {
            return;
        }
        // A copy: removing while enumerating the family's children is not allowed.
        foreach (var values in family.GetAllLabelValues().ToArray())
        {
            if (!scope.Contains(At(values, group), At(values, upstream), At(values, strategy), At(values, forward), At(values, client)))
            {
                family.RemoveLabelled(values);
            }
        }
    }

    private static string? At(string[] values, int index) => index >= 0 ? values[index] : null;

    private static readonly string[] StatusStrings = CreateStatusStrings();

    private static string[] CreateStatusStrings()
    {
        var s = new string[600];
        for (var i = 0; i < s.Length; i++)
        {
            s[i] = i.ToString(System.Globalization.CultureInfo.InvariantCulture);
        }
        return s;
    }

    /// <summary>Cached status label (no allocation per request).</summary>
    public static string StatusLabel(int status) => (uint)status < (uint)StatusStrings.Length ? StatusStrings[status] : "other";
}
