using LLMProxy.Cluster;
using LLMProxy.Observability;
using LLMProxy.RateLimiting;

namespace LLMProxy.Forwarding.Stages;

/// <summary>The forward's per-client token bucket (SPEC §3.3): over it, 429 <c>rate_limited</c> with Retry-After. With
/// <c>cluster.redis</c> (SPEC §17) the client's bucket on the cluster is taken too, with the first attempt's admission
/// (no round trip of its own); the local bucket still answers first, and alone while Redis is away.</summary>
internal sealed class AdmitClientStage(ClientRateLimiter limiter, ForwardMetrics metrics, SharedBucket? shared = null) : IRequestStage
{
    public ValueTask<bool> RunAsync(RequestContext request)
    {
        if (limiter.TryAcquire(request.Client, out var limitedFor))
        {
            if (shared is not null)
            {
                request.TakeShared(shared.For(request.Client.ToString()));
            }
            return ValueTask.FromResult(true);
        }
        metrics.ClientRejections.Inc();
        return ValueTask.FromResult(request.Stop(RequestOutcome.RateLimited, limitedFor));
    }
}
