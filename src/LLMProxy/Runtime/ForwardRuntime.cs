using LLMProxy.Configuration;
using LLMProxy.Forwarding.Stages;
using LLMProxy.Observability;
using LLMProxy.RateLimiting;

namespace LLMProxy.Runtime;

/// <summary>One forward listener, compiled, with its request pipeline composed.</summary>
internal sealed class ForwardRuntime : IDisposable
{
    public ForwardRuntime(ForwardConfig config, GroupRuntime defaultGroup, ProxyMetrics metrics, TimeProvider time)
    {
        Config = config;
        Name = config.Name;
        DefaultGroup = defaultGroup;
        Metrics = new ForwardMetrics(metrics, config.Name);
        Limiter = config.Ratelimit is { } r ? new ClientRateLimiter(r, time) : null;
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

    public void Dispose() => Limiter?.Dispose();
}
