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
        _requests = new(Methods.Length * Statuses, i => metrics.HttpRequests.WithLabels(forward, Methods[i / Statuses], ProxyMetrics.StatusLabel(i % Statuses)));
        _durations = new(Methods.Length * Statuses, i => metrics.HttpRequestDuration.WithLabels(forward, Methods[i / Statuses], ProxyMetrics.StatusLabel(i % Statuses)));
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
        Selections = metrics.BalancerSelections.WithLabels(group, upstream, strategy);
        InFlight = metrics.UpstreamInFlight.WithLabels(upstream);
        TimeToFirstByte = metrics.UpstreamTimeToFirstByte.WithLabels(group, upstream);
        CoolDowns = metrics.CoolDowns.WithLabels(upstream);
        PromptTokens = metrics.UpstreamTokens.WithLabels(group, upstream, "prompt");
        CompletionTokens = metrics.UpstreamTokens.WithLabels(group, upstream, "completion");
        CachedTokens = metrics.UpstreamTokens.WithLabels(group, upstream, "cached");
        ReasoningTokens = metrics.UpstreamTokens.WithLabels(group, upstream, "reasoning");
        _requests = new(600, status => metrics.UpstreamRequests.WithLabels(group, upstream, ProxyMetrics.StatusLabel(status)));
        _errors = new(ErrorLabels.Length, kind => metrics.UpstreamErrors.WithLabels(group, upstream, ErrorLabels[kind]));
    }

    public Counter.Child Selections { get; }
    public Gauge.Child InFlight { get; }
    public Histogram.Child TimeToFirstByte { get; }
    public Counter.Child CoolDowns { get; }
    public Counter.Child PromptTokens { get; }
    public Counter.Child CompletionTokens { get; }
    public Counter.Child CachedTokens { get; }
    public Counter.Child ReasoningTokens { get; }

    /// <summary>Counts one answer's usage under <c>llmproxy_upstream_tokens_total</c>.</summary>
    public void CountTokens(in Forwarding.TokenUsage usage)
    {
        PromptTokens.Inc(usage.Prompt);
        CompletionTokens.Inc(usage.Completion);
        CachedTokens.Inc(usage.Cached);
        ReasoningTokens.Inc(usage.Reasoning);
    }

    public Counter.Child Requests(int status) => _requests[(uint)status < 600 ? status : 0];
    public Counter.Child Errors(AttemptError kind) => _errors[(int)kind];

    public static string Label(AttemptError kind) => ErrorLabels[(int)kind];
}

/// <summary>Pre-bound metrics of one group.</summary>
internal sealed class GroupMetrics(ProxyMetrics metrics, string group)
{
    private readonly LabelCache<Counter.Child> _retries = new(MemberMetrics.ErrorLabels.Length, kind => metrics.Retries.WithLabels(group, MemberMetrics.Label((AttemptError)kind)));

    public Counter.Child Retries(AttemptError reason) => _retries[(int)reason];
}
