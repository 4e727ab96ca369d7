using LLMProxy.RateLimiting;
using Microsoft.AspNetCore.Http;

namespace LLMProxy.Forwarding.Stages;

/// <summary>
/// SPEC §15, once the request's facts are read: the client key's <c>models</c> (403 <c>model_not_allowed</c>) and its
/// <c>tokensPerMinute</c> (reserve an LLM call's estimate, as an upstream budget does — a request off SPEC §11's API shapes reserves nothing; 429 <c>rate_limited</c> with
/// Retry-After when the budget cannot cover it). The reservation is settled when the request ends
/// (<see cref="Settle"/>). With <c>cluster.redis</c> the same tokens are reserved on the cluster's budget of the key
/// with the first attempt's admission (<see cref="AttemptStage"/>), and settled with the local reservation. Only in the
/// pipeline of a forward with <c>keys</c>, after <see cref="AuthenticateClientStage"/>.
/// <para>A key with <c>models</c> and a request with a body whose model the proxy could not read (not JSON, chunked, over
/// the 4 MiB buffer) is refused: an unreadable body must not be a way around the list. A request without a body (such
/// as <c>GET /v1/models</c>) calls no model and passes.</para>
/// </summary>
internal sealed class AuthorizeClientStage : IRequestStage
{
    public static readonly AuthorizeClientStage Instance = new();

    public ValueTask<bool> RunAsync(RequestContext request)
    {
        if (request.ClientKey is not { } key)
        {
            return ValueTask.FromResult(true);
        }
        var hasBody = AttemptStage.HasBody(request);
        if (key.HasModels && (request.Facts.Model is { } model ? !key.Allows(model) : hasBody))
        {
            return ValueTask.FromResult(request.Stop(RequestOutcome.ModelNotAllowed));
        }
        if (key.Limiter.HasTokenBudget && AttemptStage.IsLlmCall(request))
        {
            request.ClientTokens = ClientTokenLease.TryTake(key.Limiter, AttemptStage.EstimateTokens(request).Total, out var refused, out var retryAfter,
                key.SharedTokens);
            if (refused)
            {
                request.Forward.Metrics.ClientKeyRejections.Inc();
                return ValueTask.FromResult(request.Stop(RequestOutcome.ClientKeyRateLimited, retryAfter));
            }
        }
        return ValueTask.FromResult(true);
    }

    /// <summary>When the request has ended: settles the key's reservation to the usage the answer reported; else keeps the
    /// estimate when an upstream's 2xx answer reached the client (tokens were generated, even if the stream then broke or
    /// the client left — so leaving early is no way around the budget); else refunds it (nothing was answered).</summary>
    public static void Settle(RequestContext request)
    {
        if (request.ClientTokens is not { } lease)
        {
            return;
        }
        if (request.ResponseBody.Usage?.Usage is { Found: true } usage)
        {
            lease.Settle(usage.Total);
            return;
        }
        var response = request.Http.Response;
        var answered = request.Attempts > 0 && response.HasStarted && !request.Outcome.Info().IsProxyError
            && response.StatusCode is >= StatusCodes.Status200OK and < 300;
        lease.Settle(answered ? null : 0);
    }
}
