using LLMProxy.Configuration;
using LLMProxy.RateLimiting;

namespace LLMProxy.Runtime;

/// <summary>One forward listener, compiled.</summary>
internal sealed class ForwardRuntime : IDisposable
{
    private readonly Shared<ClientRateLimiter>? _limiter;

    /// <param name="previous">On reload, the forward of the same name in the runtime being replaced: its client buckets
    /// are kept when <c>ratelimit</c> did not change, so a client that spent its burst does not get a new one.</param>
    public ForwardRuntime(ForwardConfig config, GroupRuntime defaultGroup, TimeProvider time, ForwardRuntime? previous = null)
    {
        Config = config;
        Name = config.Name;
        DefaultGroup = defaultGroup;
        // Shared, not moved: the previous runtime's draining requests still take from the same buckets.
        _limiter = config.Ratelimit is not { } r ? null
            : previous?._limiter is { } kept && ConfigEquality.Same(previous.Config.Ratelimit, r) ? kept.Share()
            : Shared<ClientRateLimiter>.Create(new ClientRateLimiter(r, time));
        Limiter = _limiter?.Value;
        IpResolver = config.TrustedProxies.Count > 0 ? new ClientIpResolver(config.TrustedProxies) : null;
    }

    public string Name { get; }
    public ForwardConfig Config { get; }
    public GroupRuntime DefaultGroup { get; }
    public ClientRateLimiter? Limiter { get; }
    /// <summary>Null when no proxy is trusted: the client is always the TCP peer.</summary>
    public ClientIpResolver? IpResolver { get; }

    /// <summary>Releases this runtime's reference to the client buckets.</summary>
    public void Dispose() => _limiter?.Dispose();
}
