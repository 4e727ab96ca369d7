using LLMProxy.Observability;
using LLMProxy.RateLimiting;

namespace LLMProxy.Forwarding.Stages;

/// <summary>The forward's per-client token bucket (SPEC §3.3): over it, 429 <c>rate_limited</c> with Retry-After.</summary>
internal sealed class AdmitClientStage(ClientRateLimiter limiter, ForwardMetrics metrics) : IRequestStage
{
    public ValueTask<bool> RunAsync(RequestContext request)
    {
        if (limiter.TryAcquire(request.Client, out var limitedFor))
        {
            return ValueTask.FromResult(true);
        }
        metrics.ClientRejections.Inc();
        return ValueTask.FromResult(request.Stop(RequestOutcome.RateLimited, limitedFor));
    }
}
