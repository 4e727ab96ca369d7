using System.Text;
using Microsoft.AspNetCore.Http;

namespace LLMProxy.Forwarding;

/// <summary>The errors the proxy itself answers (SPEC §6, §14): exactly one OpenAI-style JSON body each; which status and
/// message go with which outcome is the table in <see cref="Outcomes"/>.</summary>
internal static class ProxyErrors
{
    public const string RateLimited = "rate_limited";
    public const string NoAvailableUpstream = "no_available_upstream";
    public const string UpstreamRateLimited = "upstream_rate_limited";
    public const string UpstreamUnavailable = "upstream_unavailable";
    public const string UpstreamTimeout = "upstream_timeout";
    public const string ProxyOverloaded = "proxy_overloaded";
    public const string RequestTooLarge = "request_too_large";
    public const string BadRequest = "bad_request";
    public const string MethodNotAllowed = "method_not_allowed";
    public const string RequestTimeout = "request_timeout";
    public const string Unauthorized = "unauthorized";
    public const string Internal = "internal_error";

    public const string ModelNotFound = "model_not_found";
    public const string InvalidApiKey = "invalid_api_key";
    public const string ModelNotAllowed = "model_not_allowed";

    public static byte[] Body(string code, string message) =>
        Encoding.UTF8.GetBytes(
            $"{{\"error\":{{\"message\":{System.Text.Json.JsonSerializer.Serialize(message)},\"type\":\"llmproxy_error\",\"code\":\"{code}\"}}}}");

    /// <summary>Milliseconds to wait, which the official SDKs prefer to <c>Retry-After</c>.</summary>
    public const string RetryAfterMs = "retry-after-ms";

    // Bodies are fixed per outcome, so they are encoded once.
    private static readonly byte[]?[] OutcomeBodies = [.. Enum.GetValues<RequestOutcome>()
        .Select(o => o.Info() is { IsProxyError: true } info ? Body(info.Code!, info.Message!) : null)];
    private static readonly byte[] UnauthorizedBody = Body(Unauthorized, "A valid admin token is required.");

    /// <summary>The proxy's own answer for <paramref name="outcome"/> (see <see cref="Outcomes"/>), replacing whatever
    /// response was being prepared. Only valid before the response started.</summary>
    public static Task WriteAsync(HttpContext context, RequestOutcome outcome, TimeSpan? retryAfter = null, string? requestId = null)
    {
        var info = outcome.Info();
        return WriteAsync(context, info.Status, OutcomeBodies[(int)outcome] ?? OutcomeBodies[(int)RequestOutcome.InternalError]!, retryAfter, requestId);
    }

    /// <summary>401 <c>unauthorized</c> of the admin API.</summary>
    public static Task WriteUnauthorizedAsync(HttpContext context) =>
        WriteAsync(context, StatusCodes.Status401Unauthorized, UnauthorizedBody, null, null);

    private static Task WriteAsync(HttpContext context, int status, byte[] body, TimeSpan? retryAfter, string? requestId)
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
            // The official OpenAI and Anthropic SDKs wait retry-after-ms before Retry-After, so a per-second limit is not
            // made a whole second. (No x-should-retry: the SDKs' current versions wait out a long Retry-After as told.)
            response.Headers[RetryAfterMs] = Math.Max(1, (long)Math.Ceiling(ra.TotalMilliseconds)).ToString(System.Globalization.CultureInfo.InvariantCulture);
        }
        if (requestId is not null)
        {
            response.Headers[ForwardingHeaders.RequestId] = requestId;
        }
        if (status == StatusCodes.Status401Unauthorized)
        {
            // RFC 9110 §11.6.1: a 401 names the scheme it wants.
            response.Headers.WWWAuthenticate = "Bearer";
        }
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
