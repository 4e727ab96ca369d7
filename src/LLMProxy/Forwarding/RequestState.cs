using System.Diagnostics;
using LLMProxy.Configuration;
using LLMProxy.Resilience;
using LLMProxy.Runtime;
using Microsoft.AspNetCore.Http;
using Yarp.ReverseProxy.Forwarder;

namespace LLMProxy.Forwarding;

/// <summary>
/// Per-request state, and the YARP transformer for each attempt of that request: builds the upstream
/// request (URL rule, forwarding headers, auth, header ops, User-Agent) and decides, when the response
/// headers arrive, whether the response goes to the client or the attempt is retried elsewhere.
/// One instance per request keeps the transformer free of shared mutable state.
/// </summary>
internal sealed class RequestState : HttpTransformer
{
    public required GroupRuntime Group { get; init; }
    public required string RequestId { get; init; }
    public required string PeerIp { get; init; }
    public required TimeProvider Time { get; init; }
    /// <summary>The client's response body, wrapped for byte counting and usage reading.</summary>
    public required CountingStream Body { get; init; }

    /// <summary>Upstream of the current attempt.</summary>
    public UpstreamRuntime? Upstream { get; private set; }
    /// <summary>Member index of the current attempt (bit in <see cref="Tried"/>).</summary>
    public int UpstreamIndex { get; private set; }
    /// <summary>Members already tried (bit i = member i).</summary>
    public ulong Tried { get; private set; }
    public int Attempts { get; private set; }
    /// <summary>Whether another attempt may follow this one (attempt budget left and body replayable).</summary>
    public bool MayRetry { get; set; }

    // Outcome of the current attempt, filled by TransformResponseAsync.
    public int UpstreamStatus { get; private set; }
    public bool Suppressed { get; private set; }
    public TimeSpan? RetryAfterHint { get; private set; }
    public long AttemptStarted { get; private set; }
    public double TimeToFirstByteSeconds { get; private set; }

    public void BeginAttempt(UpstreamRuntime upstream, int index)
    {
        Upstream = upstream;
        UpstreamIndex = index;
        if (index is >= 0 and < 64)
        {
            Tried |= 1UL << index;
        }
        Attempts++;
        UpstreamStatus = 0;
        Suppressed = false;
        RetryAfterHint = null;
        TimeToFirstByteSeconds = 0;
        AttemptStarted = Stopwatch.GetTimestamp();
    }

    public override async ValueTask TransformRequestAsync(HttpContext httpContext, HttpRequestMessage proxyRequest,
        string destinationPrefix, CancellationToken cancellationToken)
    {
        // Copies end-to-end headers; hop-by-hop ones are left out by YARP.
        await base.TransformRequestAsync(httpContext, proxyRequest, destinationPrefix, cancellationToken).ConfigureAwait(false);
        var upstream = Upstream!;
        var request = httpContext.Request;
        var headers = proxyRequest.Headers;

        proxyRequest.RequestUri = BuildUri(upstream, request);
        // Headers the client named in Connection are hop-by-hop too (RFC 9110 §7.6.1).
        RemoveConnectionNamed(request.Headers.Connection, headers, proxyRequest.Content?.Headers);
        // The upstream's own Host, taken from the request URI.
        headers.Host = null;

        var xff = request.Headers[ForwardingHeaders.ForwardedFor];
        headers.Remove(ForwardingHeaders.ForwardedFor);
        headers.TryAddWithoutValidation(ForwardingHeaders.ForwardedFor,
            xff.Count == 0 ? PeerIp : string.Concat(xff.ToString(), ", ", PeerIp));
        headers.Remove(ForwardingHeaders.ForwardedProto);
        headers.TryAddWithoutValidation(ForwardingHeaders.ForwardedProto, request.Scheme);
        headers.Remove(ForwardingHeaders.ForwardedHost);
        if (request.Host.HasValue)
        {
            headers.TryAddWithoutValidation(ForwardingHeaders.ForwardedHost, request.Host.Value);
        }
        headers.Remove(ForwardingHeaders.RequestId);
        headers.TryAddWithoutValidation(ForwardingHeaders.RequestId, RequestId);

        if (upstream.Authorization is { } auth)
        {
            headers.Remove("Authorization");
            headers.TryAddWithoutValidation("Authorization", auth);
        }
        if (Group.ProxyAuthorization is { } proxyAuthorization && proxyRequest.RequestUri.Scheme == Uri.UriSchemeHttp)
        {
            // Only a plain-http request goes to the proxy as it is; an https one travels inside a CONNECT tunnel,
            // where this header would reach the upstream.
            headers.TryAddWithoutValidation("Proxy-Authorization", proxyAuthorization);
        }
        if (request.Headers.UserAgent.Count == 0)
        {
            headers.Remove("User-Agent");
            headers.TryAddWithoutValidation("User-Agent", Group.Agent);
        }
        var ops = upstream.HeaderOps;
        for (var i = 0; i < ops.Length; i++)
        {
            ApplyHeaderOp(proxyRequest, ops[i]);
        }
    }

    private static bool IsLlmPayload(string? mediaType) =>
        string.Equals(mediaType, "application/json", StringComparison.OrdinalIgnoreCase)
        || string.Equals(mediaType, "text/event-stream", StringComparison.OrdinalIgnoreCase);

    private static void RemoveConnectionNamed(Microsoft.Extensions.Primitives.StringValues connection,
        System.Net.Http.Headers.HttpRequestHeaders headers, System.Net.Http.Headers.HttpContentHeaders? content)
    {
        for (var i = 0; i < connection.Count; i++)
        {
            foreach (var range in connection[i].AsSpan().Split(','))
            {
                var name = connection[i].AsSpan()[range].Trim();
                if (name.Length > 0 && !name.Equals("close", StringComparison.OrdinalIgnoreCase) && !name.Equals("keep-alive", StringComparison.OrdinalIgnoreCase))
                {
                    var key = name.ToString();
                    headers.Remove(key);
                    content?.Remove(key);
                }
            }
        }
    }

    private static Uri BuildUri(UpstreamRuntime upstream, HttpRequest request)
    {
        if (upstream.IsFullEndpoint)
        {
            // Full endpoint: the client's path is replaced; the client's query kept unless the url has one.
            var query = upstream.UrlHasQuery ? upstream.Query : request.QueryString.Value;
            return new Uri(string.IsNullOrEmpty(query) ? upstream.Url : string.Concat(upstream.Url, query), UriKind.Absolute);
        }
        return RequestUtilities.MakeDestinationAddress(upstream.Url, request.Path, request.QueryString);
    }

    private static void ApplyHeaderOp(HttpRequestMessage message, HeaderOpConfig op)
    {
        var headers = message.Headers;
        var content = message.Content?.Headers;
        switch (op.Op)
        {
            case HeaderOp.Insert:
                if (!headers.Contains(op.Key) && content?.Contains(op.Key) != true)
                {
                    Add(message, op.Key, op.Value!);
                }
                break;
            case HeaderOp.Replace:
                headers.Remove(op.Key);
                content?.Remove(op.Key);
                Add(message, op.Key, op.Value!);
                break;
            case HeaderOp.Remove:
                headers.Remove(op.Key);
                content?.Remove(op.Key);
                break;
        }
    }

    private static void Add(HttpRequestMessage message, string key, string value)
    {
        // Content headers (Content-Type, ...) live on the content; the request collection refuses them.
        if (!message.Headers.TryAddWithoutValidation(key, value))
        {
            message.Content?.Headers.TryAddWithoutValidation(key, value);
        }
    }

    public override async ValueTask<bool> TransformResponseAsync(HttpContext httpContext, HttpResponseMessage? proxyResponse,
        CancellationToken cancellationToken)
    {
        if (proxyResponse is null)
        {
            return await base.TransformResponseAsync(httpContext, proxyResponse, cancellationToken).ConfigureAwait(false);
        }
        TimeToFirstByteSeconds = Stopwatch.GetElapsedTime(AttemptStarted).TotalSeconds;
        var status = (int)proxyResponse.StatusCode;
        UpstreamStatus = status;
        if (status == StatusCodes.Status429TooManyRequests)
        {
            RetryAfterHint = RetryAfter.Parse(proxyResponse.Headers, Time.GetUtcNow());
        }
        if (MayRetry && Group.IsRetryStatus(status) && Group.HasAlternative(Tried))
        {
            // Not sent to the client: the caller retries on another member.
            Suppressed = true;
            return false;
        }
        var copy = await base.TransformResponseAsync(httpContext, proxyResponse, cancellationToken).ConfigureAwait(false);
        foreach (var named in proxyResponse.Headers.Connection)
        {
            httpContext.Response.Headers.Remove(named);
        }
        httpContext.Response.Headers[ForwardingHeaders.RequestId] = RequestId;
        if (copy && IsLlmPayload(proxyResponse.Content.Headers.ContentType?.MediaType))
        {
            Body.Usage = new UsageScanner();
        }
        return copy;
    }
}
