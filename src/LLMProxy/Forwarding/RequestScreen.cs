using System.Buffers;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features;

namespace LLMProxy.Forwarding;

/// <summary>
/// The first look at a request, before any upstream is involved: what the proxy will not or cannot send as
/// received is refused here as the client's fault, so it can never count against an upstream's breaker, trigger a
/// failover or show up as an upstream error (any client could otherwise open every breaker with a few requests).
/// </summary>
internal static class RequestScreen
{
    /// <summary>tchar (RFC 9110 §5.6.2): what a header name is made of.</summary>
    private static readonly SearchValues<char> TokenChars =
        SearchValues.Create("!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz");

    /// <returns>Why the request is refused, or null when it may be forwarded.</returns>
    public static RequestOutcome? Check(HttpContext context)
    {
        var request = context.Request;
        // CONNECT would make the proxy a tunnel to anywhere; TRACE echoes the request, injected key included, back
        // to the client (RELIABILITY.md). No LLM API uses either.
        if (HttpMethods.IsConnect(request.Method) || HttpMethods.IsTrace(request.Method))
        {
            return RequestOutcome.MethodNotAllowed;
        }
        // OPTIONS * asks about the server itself; .NET's client can only send a path, so it would reach the upstream
        // as OPTIONS / (or the full endpoint), another request than the client's.
        if (context.Features.Get<IHttpRequestFeature>()?.RawTarget == "*")
        {
            return RequestOutcome.BadRequest;
        }
        // .NET's client refuses to send non-ASCII or control characters in a header value (Kestrel accepts UTF-8);
        // found here, that is a 400, not an upstream that "failed" on every member. A name that is not a token
        // ({, @, ", DEL: Kestrel accepts them) it cannot send either: YARP would drop the header without a word and
        // forward another request than the client's.
        foreach (var header in request.Headers)
        {
            if (header.Key.AsSpan().ContainsAnyExcept(TokenChars))
            {
                return RequestOutcome.BadRequest;
            }
            if (string.Equals(header.Key, ForwardingHeaders.RequestId, StringComparison.OrdinalIgnoreCase))
            {
                // Never sent as received: an unfit request id is replaced by a fresh one (RequestIds).
                continue;
            }
            foreach (var value in header.Value)
            {
                if (!IsFieldValue(value))
                {
                    return RequestOutcome.BadRequest;
                }
            }
        }
        if (context.Features.Get<IHttpUpgradeFeature>() is { IsUpgradableRequest: true })
        {
            DisarmUpgrade(context);
        }
        return null;
    }

    /// <summary>Visible ASCII, space and tab (RFC 9110 §5.5 without obs-text).</summary>
    internal static bool IsFieldValue(ReadOnlySpan<char> value)
    {
        int i;
        while ((i = value.IndexOfAnyExcept(Observability.LogText.PrintableAscii)) >= 0)
        {
            if (value[i] != '\t')
            {
                return false;
            }
            value = value[(i + 1)..];
        }
        return true;
    }

    /// <summary>
    /// <c>Upgrade</c> is hop-by-hop (SPEC §3): the request goes upstream as a plain request without it. Left alone,
    /// YARP would forward the upgrade and then tunnel raw bytes both ways with the injected key, unaccounted. The
    /// connection carries no body before an upgrade, and closes after the answer, since whatever the client sends
    /// next (WebSocket frames) is not HTTP.
    /// </summary>
    private static void DisarmUpgrade(HttpContext context)
    {
        context.Features.Set<IHttpUpgradeFeature>(NotUpgradable.Instance);
        context.Features.Set<IHttpRequestBodyDetectionFeature>(NoBody.Instance);
        context.Request.Body = Stream.Null;
        context.Response.Headers.Connection = "close";
    }

    private sealed class NotUpgradable : IHttpUpgradeFeature
    {
        public static readonly NotUpgradable Instance = new();
        public bool IsUpgradableRequest => false;
        public Task<Stream> UpgradeAsync() => throw new InvalidOperationException("Upgrades are not forwarded.");
    }

    private sealed class NoBody : IHttpRequestBodyDetectionFeature
    {
        public static readonly NoBody Instance = new();
        public bool CanHaveBody => false;
    }
}
