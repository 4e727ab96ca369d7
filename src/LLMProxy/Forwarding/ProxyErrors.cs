using System.Text;
using Microsoft.AspNetCore.Http;

namespace LLMProxy.Forwarding;

/// <summary>The errors the proxy itself answers (SPEC §6): exactly one OpenAI-style JSON body each.</summary>
internal static class ProxyErrors
{
    public const string RateLimited = "rate_limited";
    public const string NoAvailableUpstream = "no_available_upstream";
    public const string UpstreamRateLimited = "upstream_rate_limited";
    public const string UpstreamUnavailable = "upstream_unavailable";
    public const string UpstreamTimeout = "upstream_timeout";
    public const string RequestTooLarge = "request_too_large";
    public const string BadRequest = "bad_request";
    public const string MethodNotAllowed = "method_not_allowed";
    public const string RequestTimeout = "request_timeout";
    public const string Unauthorized = "unauthorized";
    public const string Internal = "internal_error";

    public static byte[] Body(string code, string message) =>
        Encoding.UTF8.GetBytes(
            $"{{\"error\":{{\"message\":{System.Text.Json.JsonSerializer.Serialize(message)},\"type\":\"llmproxy_error\",\"code\":\"{code}\"}}}}");

    // Bodies are fixed per code, so they are encoded once.
    private static readonly byte[] RateLimitedBody = Body(RateLimited, "Too many requests from this client; retry after the time in Retry-After.");
    private static readonly byte[] NoUpstreamBody = Body(NoAvailableUpstream, "No upstream is available right now (circuit breakers open); retry after the time in Retry-After.");
    private static readonly byte[] UpstreamRateLimitedBody = Body(UpstreamRateLimited, "Every upstream account is rate limited or cooling down after 429; retry after the time in Retry-After.");
    private static readonly byte[] UnavailableBody = Body(UpstreamUnavailable, "The upstream could not be reached or broke the connection.");
    private static readonly byte[] TimeoutBody = Body(UpstreamTimeout, "The upstream did not answer in time.");
    private static readonly byte[] TooLargeBody = Body(RequestTooLarge, "The request body is larger than this forward accepts.");
    private static readonly byte[] BadRequestBody = Body(BadRequest, "The request could not be read or cannot be forwarded as sent (e.g. a header value with non-ASCII or control characters).");
    private static readonly byte[] MethodNotAllowedBody = Body(MethodNotAllowed, "This method is not forwarded (CONNECT and TRACE never are).");
    private static readonly byte[] RequestTimeoutBody = Body(RequestTimeout, "The request body arrived too slowly.");
    private static readonly byte[] UnauthorizedBody = Body(Unauthorized, "A valid admin token is required.");
    private static readonly byte[] InternalBody = Body(Internal, "The proxy failed to handle the request.");

    private static byte[] BodyFor(string code) => code switch
    {
        RateLimited => RateLimitedBody,
        NoAvailableUpstream => NoUpstreamBody,
        UpstreamRateLimited => UpstreamRateLimitedBody,
        UpstreamUnavailable => UnavailableBody,
        UpstreamTimeout => TimeoutBody,
        RequestTooLarge => TooLargeBody,
        BadRequest => BadRequestBody,
        MethodNotAllowed => MethodNotAllowedBody,
        RequestTimeout => RequestTimeoutBody,
        Unauthorized => UnauthorizedBody,
        _ => InternalBody,
    };

    /// <summary>
    /// Replaces whatever response was being prepared with the error. Only valid before the response started.
    /// </summary>
    public static Task WriteAsync(HttpContext context, int status, string code, TimeSpan? retryAfter = null, string? requestId = null)
    {
        var response = context.Response;
        response.Clear();
        response.StatusCode = status;
        response.ContentType = "application/json";
        if (retryAfter is { } ra)
        {
            // Whole seconds, rounded up, at least 1: a client must never be told to retry at once.
            var seconds = Math.Max(1, (long)Math.Ceiling(ra.TotalSeconds));
            response.Headers.RetryAfter = seconds.ToString(System.Globalization.CultureInfo.InvariantCulture);
        }
        if (requestId is not null)
        {
            response.Headers[ForwardingHeaders.RequestId] = requestId;
        }
        var body = BodyFor(code);
        response.ContentLength = body.Length;
        return response.Body.WriteAsync(body, 0, body.Length, CancellationToken.None);
    }
}

internal static class ForwardingHeaders
{
    public const string RequestId = "X-Request-ID";
    public const string ForwardedFor = "X-Forwarded-For";
    public const string ForwardedProto = "X-Forwarded-Proto";
    public const string ForwardedHost = "X-Forwarded-Host";
}
