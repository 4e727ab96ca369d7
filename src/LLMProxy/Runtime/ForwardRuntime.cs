using LLMProxy.Configuration;
using LLMProxy.Forwarding.Stages;
using LLMProxy.Observability;
using LLMProxy.RateLimiting;

namespace LLMProxy.Runtime;

/// <summary>One forward listener, compiled, with its request pipeline composed.</summary>
internal sealed class ForwardRuntime : IDisposable
{
    private readonly Shared<ClientRateLimiter>? _limiter;

    /// <param name="previous">On reload, the forward of the same name in the runtime being replaced: its client buckets
    /// are kept when <c>ratelimit</c> did not change, so a client that spent its burst does not get a new one.</param>
    public ForwardRuntime(ForwardConfig config, GroupRuntime defaultGroup, ProxyMetrics metrics, TimeProvider time,
        ForwardRuntime? previous = null)
    {
        Config = config;
        Name = config.Name;
        DefaultGroup = defaultGroup;
        Metrics = new ForwardMetrics(metrics, config.Name);
        // Shared, not moved: the previous runtime's draining requests still take from the same buckets.
        _limiter = config.Ratelimit is not { } r ? null
            : previous?._limiter is { } kept && ConfigEquality.Same(previous.Config.Ratelimit, r) ? kept.Share()
            : Shared<ClientRateLimiter>.Create(new ClientRateLimiter(r, time));
        Limiter = _limiter?.Value;
        IpResolver = config.TrustedProxies.Count > 0 ? new ClientIpResolver(config.TrustedProxies) : null;
        Stages = PipelineComposer.Compose(this);
    }

    public string Name { get; }
    public ForwardConfig Config { get; }
    public GroupRuntime DefaultGroup { get; }
    public ForwardMetrics Metrics { get; }
    public ClientRateLimiter? Limiter { get; }
    /// <summary>Null when no proxy is trusted: the client is always the TCP peer.</summary>
    public ClientIpResolver? IpResolver { get; }
    /// <summary>The request pipeline, in order.</summary>
    public IRequestStage[] Stages { get; }

    /// <summary>Releases this runtime's reference to the client buckets.</summary>
    public void Dispose() => _limiter?.Dispose();
}
