using Microsoft.AspNetCore.Http;

namespace LLMProxy.Forwarding;

/// <summary>How a request ended: one value per request, set by the stage that decided it.</summary>
internal enum RequestOutcome
{
    /// <summary>The upstream's answer was passed on (any status below 500 but 429).</summary>
    Ok,
    /// <summary>The upstream's own 5xx was passed on (every retry was used up).</summary>
    UpstreamError,
    /// <summary>The upstream's own 429 was passed on.</summary>
    Upstream429,
    /// <summary>The upstream broke off a response that had already started; the client's stream was aborted.</summary>
    UpstreamBrokenStream,
    /// <summary>The client went away; nothing to answer.</summary>
    ClientAborted,
    RateLimited,
    RequestTooLarge,
    BadRequest,
    /// <summary>The JSON body has a top-level key that is <c>model</c> in another letter case (<c>"MODEL"</c>): which
    /// model an upstream would run depends on its JSON parser, so the request is refused (400 <c>bad_request</c>).</summary>
    AmbiguousModel,
    MethodNotAllowed,
    RequestTimeout,
    NoAvailableUpstream,
    UpstreamRateLimited,
    UpstreamUnavailable,
    UpstreamTimeout,
    ModelNotFound,
    /// <summary>SPEC §15: no client key, or not one of the forward's.</summary>
    InvalidApiKey,
    /// <summary>SPEC §15: the client key may not ask for the request's model.</summary>
    ModelNotAllowed,
    /// <summary>SPEC §15: the client key is over its <c>ratelimit</c> or <c>tokensPerMinute</c>.</summary>
    ClientKeyRateLimited,
    /// <summary>The proxy itself had no file descriptor or socket buffer for a new upstream connection: no verdict on
    /// the upstream, nothing to fail over to.</summary>
    ProxyOverloaded,
    /// <summary>A bug: the one boundary catch answered it.</summary>
    InternalError,
}

/// <summary>What each outcome means on the wire and in logs and metrics: one table, no strings elsewhere.</summary>
internal readonly record struct OutcomeInfo(string Label, int Status, string? Code, string? Message)
{
    /// <summary>Whether the proxy answers this outcome itself with a JSON error body.</summary>
    public bool IsProxyError => Code is not null;
}

internal static class Outcomes
{
    /// <summary>Status recorded for a client that left before an answer (nginx's convention).</summary>
    public const int ClientClosedRequest = 499;

    private static readonly OutcomeInfo[] Table = Build();

    private static OutcomeInfo[] Build()
    {
        var t = new OutcomeInfo[Enum.GetValues<RequestOutcome>().Length];
        t[(int)RequestOutcome.Ok] = new("ok", 0, null, null);
        t[(int)RequestOutcome.UpstreamError] = new("upstream_error", 0, null, null);
        t[(int)RequestOutcome.Upstream429] = new("upstream_429", 0, null, null);
        t[(int)RequestOutcome.UpstreamBrokenStream] = new("upstream_broken_stream", 0, null, null);
        t[(int)RequestOutcome.ClientAborted] = new("client_aborted", ClientClosedRequest, null, null);
        t[(int)RequestOutcome.RateLimited] = new("rate_limited", StatusCodes.Status429TooManyRequests, ProxyErrors.RateLimited,
            "Too many requests from this client; retry after the time in Retry-After.");
        t[(int)RequestOutcome.RequestTooLarge] = new("request_too_large", StatusCodes.Status413PayloadTooLarge, ProxyErrors.RequestTooLarge,
            "The request body is larger than this forward accepts.");
        t[(int)RequestOutcome.BadRequest] = new("bad_request", StatusCodes.Status400BadRequest, ProxyErrors.BadRequest,
            "The request could not be read or cannot be forwarded as sent (e.g. a header value with non-ASCII or control characters).");
        t[(int)RequestOutcome.AmbiguousModel] = new("bad_request", StatusCodes.Status400BadRequest, ProxyErrors.BadRequest,
            "The request body has a top-level key that is 'model' in another letter case; send the model once, as 'model'.");
        t[(int)RequestOutcome.MethodNotAllowed] = new("method_not_allowed", StatusCodes.Status405MethodNotAllowed, ProxyErrors.MethodNotAllowed,
            "This method is not forwarded (CONNECT and TRACE never are).");
        t[(int)RequestOutcome.RequestTimeout] = new("request_timeout", StatusCodes.Status408RequestTimeout, ProxyErrors.RequestTimeout,
            "The request body arrived too slowly.");
        t[(int)RequestOutcome.NoAvailableUpstream] = new("no_available_upstream", StatusCodes.Status503ServiceUnavailable, ProxyErrors.NoAvailableUpstream,
            "No upstream is available right now (circuit breakers open or keys disabled); retry after the time in Retry-After.");
        t[(int)RequestOutcome.UpstreamRateLimited] = new("upstream_rate_limited", StatusCodes.Status429TooManyRequests, ProxyErrors.UpstreamRateLimited,
            "Every upstream account is rate limited or cooling down after 429; retry after the time in Retry-After.");
        t[(int)RequestOutcome.UpstreamUnavailable] = new("upstream_unavailable", StatusCodes.Status502BadGateway, ProxyErrors.UpstreamUnavailable,
            "The upstream could not be reached or broke the connection.");
        t[(int)RequestOutcome.UpstreamTimeout] = new("upstream_timeout", StatusCodes.Status504GatewayTimeout, ProxyErrors.UpstreamTimeout,
            "The upstream did not answer in time.");
        t[(int)RequestOutcome.ModelNotFound] = new("model_not_found", StatusCodes.Status404NotFound, ProxyErrors.ModelNotFound,
            "No upstream of this route serves the requested model.");
        t[(int)RequestOutcome.ProxyOverloaded] = new("proxy_overloaded", StatusCodes.Status503ServiceUnavailable, ProxyErrors.ProxyOverloaded,
            "The proxy is out of file descriptors for a new upstream connection; retry after the time in Retry-After.");
        t[(int)RequestOutcome.InvalidApiKey] = new("invalid_api_key", StatusCodes.Status401Unauthorized, ProxyErrors.InvalidApiKey,
            "A valid API key is required: send it as 'Authorization: Bearer <key>' or 'x-api-key: <key>'.");
        t[(int)RequestOutcome.ModelNotAllowed] = new("model_not_allowed", StatusCodes.Status403Forbidden, ProxyErrors.ModelNotAllowed,
            "This API key may not use the requested model (or the request names no model the proxy could read).");
        t[(int)RequestOutcome.ClientKeyRateLimited] = new("client_key_rate_limited", StatusCodes.Status429TooManyRequests, ProxyErrors.RateLimited,
            "This API key is over its request or token limit; retry after the time in Retry-After.");
        t[(int)RequestOutcome.InternalError] = new("internal_error", StatusCodes.Status502BadGateway, ProxyErrors.UpstreamUnavailable,
            "The upstream could not be reached or broke the connection.");
        return t;
    }

    public static OutcomeInfo Info(this RequestOutcome outcome) => Table[(int)outcome];

    public static string Label(this RequestOutcome outcome) => Table[(int)outcome].Label;
}
