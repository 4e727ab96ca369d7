using Prometheus;

namespace LLMProxy.Observability;

/// <summary>Kinds of failed upstream attempts: the <c>error</c> and <c>reason</c> label values.</summary>
internal enum AttemptError { Connect, Timeout, Reset, Stream, Status5xx, Status429, StatusOther, Protocol, BadKey }

/// <summary>
/// Metric children resolved once per index and kept: the hot path never builds label arrays or looks
/// labels up (prometheus-net returns the same child for the same labels, so a racing fill is harmless).
/// </summary>
internal sealed class LabelCache<TChild>(int size, Func<int, TChild> create) where TChild : class
{
    private readonly TChild?[] _children = new TChild?[size];

    public TChild this[int index] => _children[index] ?? (_children[index] = create(index));
}

/// <summary>Pre-bound metrics of one forward.</summary>
internal sealed class ForwardMetrics
{
    private const int Statuses = 600;
    private static readonly string[] Methods = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "OTHER"];
    private readonly LabelCache<Counter.Child> _requests;
    private readonly LabelCache<Histogram.Child> _durations;

    public ForwardMetrics(ProxyMetrics metrics, string forward)
    {
        Active = metrics.ActiveConnections.WithLabels(forward);
        RequestSize = metrics.HttpRequestSize.WithLabels(forward);
        ResponseSize = metrics.HttpResponseSize.WithLabels(forward);
        ClientRejections = metrics.RateLimitRejections.WithLabels(forward, "client");
        UpstreamRejections = metrics.RateLimitRejections.WithLabels(forward, "upstream");
        ClientKeyRejections = metrics.RateLimitRejections.WithLabels(forward, "client_key");
        _requests = new(Methods.Length * Statuses, i => metrics.HttpRequests.WithLabels(forward, Methods[i / Statuses], ProxyMetrics.StatusLabel(i % Statuses), NoClient));
        _durations = new(Methods.Length * Statuses, i => metrics.HttpRequestDuration.WithLabels(forward, Methods[i / Statuses], ProxyMetrics.StatusLabel(i % Statuses), NoClient));
    }

    /// <summary>The <c>client</c> label of requests that presented no client key (every request of a forward without
    /// <c>keys</c>): empty, which Prometheus treats as no label, so queries written before client keys still match.</summary>
    public const string NoClient = "";

    /// <summary>Requests a rate limit of a client key refused (SPEC §15: its <c>ratelimit</c> or <c>tokensPerMinute</c>).</summary>
    public Counter.Child ClientKeyRejections { get; }

    /// <summary>Request metrics of one client key of this forward (<c>client</c> = the key's name), bound lazily one
    /// method at a time: a key costs memory only for the methods it uses.</summary>
    internal sealed class ClientRequests(ProxyMetrics metrics, string forward, string client)
    {
        private readonly LabelCache<LabelCache<Counter.Child>> _requests = new(Methods.Length, m =>
            new(Statuses, s => metrics.HttpRequests.WithLabels(forward, Methods[m], ProxyMetrics.StatusLabel(s), client)));
        private readonly LabelCache<LabelCache<Histogram.Child>> _durations = new(Methods.Length, m =>
            new(Statuses, s => metrics.HttpRequestDuration.WithLabels(forward, Methods[m], ProxyMetrics.StatusLabel(s), client)));

        public void Record(string method, int status, double seconds)
        {
            var m = MethodIndex(method);
            var s = (uint)status < Statuses ? status : 0;
            _requests[m][s].Inc();
            _durations[m][s].Observe(seconds);
        }
    }

    public Gauge.Child Active { get; }
    public Histogram.Child RequestSize { get; }
    public Histogram.Child ResponseSize { get; }
    public Counter.Child ClientRejections { get; }
    public Counter.Child UpstreamRejections { get; }

    public void RecordRequest(string method, int status, double seconds)
    {
        var index = MethodIndex(method) * Statuses + ((uint)status < Statuses ? status : 0);
        _requests[index].Inc();
        _durations[index].Observe(seconds);
    }

    private static int MethodIndex(string method) => method switch
    {
        "GET" => 0,
        "POST" => 1,
        "PUT" => 2,
        "DELETE" => 3,
        "PATCH" => 4,
        "HEAD" => 5,
        "OPTIONS" => 6,
        _ => 7,
    };
}

/// <summary>Pre-bound metrics of one upstream as a member of one group.</summary>
internal sealed class MemberMetrics
{
    internal static readonly string[] ErrorLabels = ["connect", "timeout", "reset", "stream", "status_5xx", "status_429", "status_other", "protocol", "bad_key"];
    private readonly LabelCache<Counter.Child> _requests;
    private readonly LabelCache<Counter.Child> _errors;

    public MemberMetrics(ProxyMetrics metrics, string group, string upstream, string strategy)
    {
        Group = group;
        Upstream = upstream;
        Selections = metrics.BalancerSelections.WithLabels(group, upstream, strategy);
        InFlight = metrics.UpstreamInFlight.WithLabels(upstream);
        TimeToFirstByte = metrics.UpstreamTimeToFirstByte.WithLabels(group, upstream);
        CoolDowns = metrics.CoolDowns.WithLabels(upstream);
        Tokens = new TokenCounters(metrics, group, upstream, ForwardMetrics.NoClient);
        _requests = new(600, status => metrics.UpstreamRequests.WithLabels(group, upstream, ProxyMetrics.StatusLabel(status)));
        _errors = new(ErrorLabels.Length, kind => metrics.UpstreamErrors.WithLabels(group, upstream, ErrorLabels[kind]));
    }

    public string Group { get; }
    public string Upstream { get; }
    public Counter.Child Selections { get; }
    public Gauge.Child InFlight { get; }
    public Histogram.Child TimeToFirstByte { get; }
    public Counter.Child CoolDowns { get; }
    /// <summary><c>llmproxy_upstream_tokens_total</c> of requests without a client key.</summary>
    public TokenCounters Tokens { get; }

    /// <summary>Counts one answer's usage under <c>llmproxy_upstream_tokens_total</c> (no client key).</summary>
    public void CountTokens(in Forwarding.TokenUsage usage) => Tokens.Count(usage);

    public Counter.Child Requests(int status) => _requests[(uint)status < 600 ? status : 0];
    public Counter.Child Errors(AttemptError kind) => _errors[(int)kind];

    public static string Label(AttemptError kind) => ErrorLabels[(int)kind];
}

/// <summary><c>llmproxy_upstream_tokens_total</c> of one member of a group for one <c>client</c> label.</summary>
internal sealed class TokenCounters(ProxyMetrics metrics, string group, string upstream, string client)
{
    private readonly Counter.Child _prompt = metrics.UpstreamTokens.WithLabels(group, upstream, "prompt", client);
    private readonly Counter.Child _completion = metrics.UpstreamTokens.WithLabels(group, upstream, "completion", client);
    private readonly Counter.Child _cached = metrics.UpstreamTokens.WithLabels(group, upstream, "cached", client);
    private readonly Counter.Child _reasoning = metrics.UpstreamTokens.WithLabels(group, upstream, "reasoning", client);

    public void Count(in Forwarding.TokenUsage usage)
    {
        _prompt.Inc(usage.Prompt);
        _completion.Inc(usage.Completion);
        _cached.Inc(usage.Cached);
        _reasoning.Inc(usage.Reasoning);
    }
}

/// <summary>Pre-bound metrics of one group.</summary>
internal sealed class GroupMetrics(ProxyMetrics metrics, string group)
{
    private readonly LabelCache<Counter.Child> _retries = new(MemberMetrics.ErrorLabels.Length, kind => metrics.Retries.WithLabels(group, MemberMetrics.Label((AttemptError)kind)));

    public Counter.Child Retries(AttemptError reason) => _retries[(int)reason];
}
