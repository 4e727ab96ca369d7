using LLMProxy.Configuration;
using LLMProxy.RateLimiting;

namespace LLMProxy.Runtime;

/// <summary>One forward listener, compiled.</summary>
internal sealed class ForwardRuntime : IDisposable
{
    public ForwardRuntime(ForwardConfig config, GroupRuntime defaultGroup, TimeProvider time)
    {
        Config = config;
        Name = config.Name;
        DefaultGroup = defaultGroup;
        Limiter = config.Ratelimit is { } r ? new ClientRateLimiter(r, time) : null;
        IpResolver = config.TrustedProxies.Count > 0 ? new ClientIpResolver(config.TrustedProxies) : null;
    }

    public string Name { get; }
    public ForwardConfig Config { get; }
    public GroupRuntime DefaultGroup { get; }
    public ClientRateLimiter? Limiter { get; }
    /// <summary>Null when no proxy is trusted: the client is always the TCP peer.</summary>
    public ClientIpResolver? IpResolver { get; }

    public void Dispose() => Limiter?.Dispose();
}
