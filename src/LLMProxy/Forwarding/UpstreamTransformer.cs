using System.Diagnostics;
using LLMProxy.Configuration;
using LLMProxy.Resilience;
using LLMProxy.Runtime;
using Microsoft.AspNetCore.Http;
using Yarp.ReverseProxy.Forwarder;

namespace LLMProxy.Forwarding;

/// <summary>
/// The YARP transformer of one request: builds each attempt's upstream request (URL rule, forwarding headers, auth,
/// header ops, User-Agent) and, when the answer's headers arrive, records them on the <see cref="Attempt"/> and
/// copies them to the client — unless the attempt stage says the answer is to be retried elsewhere. It decides
/// nothing itself. One instance per request keeps it free of shared mutable state.
/// </summary>
internal sealed class UpstreamTransformer(RequestContext ctx, Attempt attempt, Stages.AttemptStage stage) : HttpTransformer
{
    /// <summary>SPEC §13.6 debug headers, off with <c>debugHeaders: false</c>.</summary>
    public const string DebugUpstreamHeader = "X-LLMProxy-Upstream";
    public const string DebugAttemptsHeader = "X-LLMProxy-Attempts";

    // X-LLMProxy-Attempts values, built once (no string per answer).
    private static readonly string[] AttemptCounts = [.. Enumerable.Range(0, 16).Select(i => i.ToString(System.Globalization.CultureInfo.InvariantCulture))];

    public override async ValueTask TransformRequestAsync(HttpContext httpContext, HttpRequestMessage proxyRequest,
        string destinationPrefix, CancellationToken cancellationToken)
    {
        // Copies end-to-end headers; hop-by-hop ones are left out by YARP.
        await base.TransformRequestAsync(httpContext, proxyRequest, destinationPrefix, cancellationToken).ConfigureAwait(false);
        var upstream = attempt.Lease!.Upstream;
        var request = httpContext.Request;
        var headers = proxyRequest.Headers;

        proxyRequest.RequestUri = BuildUri(upstream, request);
        // Hop-by-hop headers YARP copies (it leaves out Connection, Upgrade, TE and the like, not Trailer), and the
        // headers the client named in Connection (RFC 9110 §7.6.1).
        HeaderEdits.Remove(proxyRequest, "Trailer");
        // YARP keeps "TE: trailers" from an HTTP/2 client (for gRPC); TE is hop-by-hop whatever its value (SPEC §3.5).
        // From an HTTP/1.1 client YARP drops it already.
        if (HttpProtocol.IsHttp2(request.Protocol))
        {
            HeaderEdits.Remove(proxyRequest, "TE");
        }
        RemoveConnectionNamed(request.Headers.Connection, proxyRequest);
        // The upstream's own Host, taken from the request URI.
        headers.Host = null;

        // An empty X-Forwarded-For from the client is no hop: appending to it would start the list with an empty entry.
        var xff = request.Headers[ForwardingHeaders.ForwardedFor].ToString();
        headers.Remove(ForwardingHeaders.ForwardedFor);
        headers.TryAddWithoutValidation(ForwardingHeaders.ForwardedFor,
            string.IsNullOrWhiteSpace(xff) ? ctx.PeerIp : string.Concat(xff, ", ", ctx.PeerIp));
        headers.Remove(ForwardingHeaders.ForwardedProto);
        headers.TryAddWithoutValidation(ForwardingHeaders.ForwardedProto, request.Scheme);
        headers.Remove(ForwardingHeaders.ForwardedHost);
        if (request.Host.HasValue)
        {
            headers.TryAddWithoutValidation(ForwardingHeaders.ForwardedHost, request.Host.Value);
        }
        headers.Remove(ForwardingHeaders.RequestId);
        headers.TryAddWithoutValidation(ForwardingHeaders.RequestId, ctx.RequestId);

        if (ctx.KeyHeaders != ClientKeyHeaders.None)
        {
            // SPEC §15: the client's key for this proxy never goes upstream, whatever the upstream's own auth does.
            if ((ctx.KeyHeaders & ClientKeyHeaders.Authorization) != 0)
            {
                HeaderEdits.Remove(proxyRequest, "Authorization");
            }
            if ((ctx.KeyHeaders & ClientKeyHeaders.ApiKey) != 0)
            {
                HeaderEdits.Remove(proxyRequest, Stages.AuthenticateClientStage.ApiKeyHeader);
            }
        }
        // The proxy reads answers (usage, SPEC §13.2; a 429's quota error, §13.4), which it cannot in a compressed
        // body: upstreams are asked for plain ones. An operator's header op may still ask otherwise.
        if (headers.NonValidated.Contains("Accept-Encoding"))
        {
            headers.Remove("Accept-Encoding");
            headers.TryAddWithoutValidation("Accept-Encoding", "identity");
        }
        var ownCredentials = 0;
        if (upstream.Authorization is { } auth)
        {
            HeaderEdits.Set(proxyRequest, "Authorization", auth);
            ownCredentials = Credentials.Authorization;
        }
        if (ctx.Group.ProxyAuthorization is { } proxyAuthorization && proxyRequest.RequestUri.Scheme == Uri.UriSchemeHttp)
        {
            // Only a plain-http request goes to the proxy as it is; an https one travels inside a CONNECT tunnel,
            // where this header would reach the upstream.
            headers.TryAddWithoutValidation("Proxy-Authorization", proxyAuthorization);
        }
        if (!HeaderEdits.Has(proxyRequest, "User-Agent"))
        {
            headers.TryAddWithoutValidation("User-Agent", ctx.Group.Agent);
        }
        var ops = upstream.HeaderOps;
        var opCredentials = upstream.HeaderOpCredentials;
        for (var i = 0; i < ops.Length; i++)
        {
            ApplyHeaderOp(proxyRequest, ops[i], opCredentials[i], ref ownCredentials);
        }
        attempt.OwnCredentials = upstream.InjectsCredentials && Credentials.OnlyOwn(proxyRequest, ownCredentials);
        attempt.CredentialsSet = ownCredentials;
        // A small buffered body goes out in the same write as the head (Runtime/OneSendHandler).
        OneSendHandler.Offer(proxyRequest, ctx);
    }

    private enum Payload { Other, Json, EventStream }

    /// <summary>What an answer's one Content-Type says, read raw: its media type (before any parameter) ignoring case,
    /// as the parsed <c>ContentType</c> would give it, without the objects parsing costs per answer.</summary>
    private static Payload PayloadOf(System.Net.Http.Headers.HttpContentHeaders headers)
    {
        if (!headers.NonValidated.TryGetValues("Content-Type", out var values) || values.Count != 1)
        {
            return Payload.Other;
        }
        var value = values.ToString().AsSpan();
        var semicolon = value.IndexOf(';');
        var mediaType = (semicolon < 0 ? value : value[..semicolon]).Trim();
        return mediaType.Equals("application/json", StringComparison.OrdinalIgnoreCase) ? Payload.Json
            : mediaType.Equals("text/event-stream", StringComparison.OrdinalIgnoreCase) ? Payload.EventStream
            : Payload.Other;
    }

    /// <summary>Takes the headers the upstream named in its Connection header (RFC 9110 §7.6.1) out of the client's answer,
    /// read raw: the parsed <c>Connection</c> collection costs several objects per answer.</summary>
    private static void RemoveConnectionNamed(System.Net.Http.Headers.HttpResponseHeaders upstream, IHeaderDictionary client)
    {
        if (!upstream.NonValidated.TryGetValues("Connection", out var values))
        {
            return;
        }
        foreach (var value in values)
        {
            foreach (var range in value.AsSpan().Split(','))
            {
                var name = value.AsSpan()[range].Trim();
                if (name.Length > 0)
                {
                    client.Remove(name.Length == value.Length ? value : name.ToString());
                }
            }
        }
    }

    private static void RemoveConnectionNamed(Microsoft.Extensions.Primitives.StringValues connection, HttpRequestMessage message)
    {
        for (var i = 0; i < connection.Count; i++)
        {
            foreach (var range in connection[i].AsSpan().Split(','))
            {
                var name = connection[i].AsSpan()[range].Trim();
                if (name.Length > 0 && !name.Equals("close", StringComparison.OrdinalIgnoreCase) && !name.Equals("keep-alive", StringComparison.OrdinalIgnoreCase))
                {
                    HeaderEdits.Remove(message, name.ToString());
                }
            }
        }
    }

    private static Uri BuildUri(UpstreamRuntime upstream, HttpRequest request)
    {
        // Most traffic to an upstream goes to one path: the Uri built for the last request (immutable, already parsed)
        // serves the next one with the same path and query, instead of a new string, Uri and parse per attempt.
        var path = request.Path.Value;
        var clientQuery = request.QueryString.Value;
        // A path holding '%' is not cached either way: Kestrel gives /a%2Fb and /a%252Fb the same decoded path.
        if (!upstream.IsFullEndpoint && path is not null && path.Contains('%'))
        {
            return EncodedSlashes(request) is { } encodedPath
                ? new Uri(string.Concat(upstream.Url.AsSpan().TrimEnd('/'), encodedPath, request.QueryString.ToUriComponent()), UriKind.Absolute)
                : RequestUtilities.MakeDestinationAddress(upstream.Url, request.Path, request.QueryString);
        }
        if (upstream.LastDestination is { } last && last.Path == path && last.Query == clientQuery)
        {
            return last.Uri;
        }
        Uri uri;
        if (upstream.IsFullEndpoint)
        {
            // Full endpoint: the client's path is replaced; the client's query kept unless the url has one.
            var query = upstream.UrlHasQuery ? upstream.Query : clientQuery;
            uri = new Uri(string.IsNullOrEmpty(query) ? upstream.Url : string.Concat(upstream.Url, query), UriKind.Absolute);
        }
        else
        {
            uri = RequestUtilities.MakeDestinationAddress(upstream.Url, request.Path, request.QueryString);
        }
        upstream.LastDestination = new UpstreamDestination(path, clientQuery, uri);
        return uri;
    }

    /// <summary>Whether what an answer says of limits (a 429, headroom) is about the upstream's account, shared by every
    /// client: the request carried the proxy's credentials and no client's, or none at all (a keyless upstream). An
    /// answer to a client's own key is about that client's account only.</summary>
    private bool SpeaksForTheUpstream(UpstreamRuntime upstream, HttpResponseMessage answer) =>
        attempt.OwnCredentials
        || !upstream.InjectsCredentials && answer.RequestMessage is { } sent && (Credentials.Present(sent) & Credentials.Keys) == 0;

    /// <summary>
    /// Kestrel decodes the path except <c>%2F</c>, which it leaves as those three characters (so that <c>a%2Fb</c> stays
    /// one segment); YARP's re-encoding would then send its <c>%</c> as <c>%25</c>, and an upstream would see
    /// <c>a%252Fb</c> (dotnet/yarp#1419): a model id such as <c>meta-llama%2FLlama-3</c> in a path would name another
    /// model. When the client's raw path has no <c>%25</c>, every <c>%2F</c> in the decoded path is a slash the client
    /// encoded, and the pieces between are encoded as YARP would. Null (YARP's encoding) when the path holds no
    /// <c>%</c> — nearly always, and one scan — or when a <c>%</c> in it came from a <c>%25</c>.
    /// </summary>
    internal static string? EncodedSlashes(HttpRequest request)
    {
        var path = request.Path.Value;
        if (path is null || !path.Contains('%'))
        {
            return null;
        }
        var raw = request.HttpContext.Features.Get<Microsoft.AspNetCore.Http.Features.IHttpRequestFeature>()?.RawTarget;
        var query = raw?.IndexOf('?') ?? -1;
        if (raw is null || raw.AsSpan(0, query < 0 ? raw.Length : query).Contains("%25", StringComparison.Ordinal))
        {
            return null;
        }
        var encoded = new System.Text.StringBuilder(path.Length + 16);
        var start = 0;
        int slash;
        while ((slash = path.IndexOf("%2F", start, StringComparison.OrdinalIgnoreCase)) >= 0)
        {
            AppendEncoded(encoded, path[start..slash]);
            encoded.Append(path, slash, 3);
            start = slash + 3;
        }
        AppendEncoded(encoded, path[start..]);
        return encoded.ToString();

        static void AppendEncoded(System.Text.StringBuilder to, string piece)
        {
            if (piece.Length > 0)
            {
                to.Append(piece[0] == '/' ? new PathString(piece).ToUriComponent() : new PathString("/" + piece).ToUriComponent().AsSpan(1));
            }
        }
    }

    /// <param name="credential">The credential header <paramref name="op"/> edits (<see cref="Credentials"/> bit), 0 for any other.</param>
    /// <param name="ownCredentials">The credential headers the proxy has set on this request so far.</param>
    private static void ApplyHeaderOp(HttpRequestMessage message, HeaderOpConfig op, int credential, ref int ownCredentials)
    {
        switch (op.Op)
        {
            case HeaderOp.Insert when !HeaderEdits.Has(message, op.Key):
                HeaderEdits.Add(message, op.Key, op.Value!);
                ownCredentials |= credential;
                break;
            case HeaderOp.Replace:
                HeaderEdits.Set(message, op.Key, op.Value!);
                ownCredentials |= credential;
                break;
            case HeaderOp.Remove:
                HeaderEdits.Remove(message, op.Key);
                ownCredentials &= ~credential;
                break;
            // An insert the client's own header overruled: the value sent is the client's.
        }
    }

    /// <summary>
    /// The headers that carry an API key (SPEC §13.4), as bits. What an answer says about "the key" — a 401, a quota
    /// error, headroom — is about the proxy's key only when the request carried the proxy's credentials and no
    /// other: a client's own <c>Authorization</c> or <c>x-api-key</c>, passed through because an <c>insert</c> op yields
    /// to it (or because the proxy set another header), would otherwise let any client disable every key of a group
    /// with one bad header, or fill a key's learned headroom with its own account's.
    /// </summary>
    internal static class Credentials
    {
        public const int Authorization = 1, ApiKey = 2, AzureApiKey = 4;
        /// <summary>OpenAI's headers that pick which organization or project of a key a request is for: no key, but beside
        /// one they choose the account. The OpenAI SDKs send them from the client's environment; a key that is not in the
        /// client's organization gets 401 <c>mismatched_organization</c>, which says nothing of the key alone.</summary>
        public const int Organization = 8, Project = 16;
        /// <summary>The bits of the headers that carry a key.</summary>
        public const int Keys = Authorization | ApiKey | AzureApiKey;

        public static int Of(string header) =>
            header.Equals("Authorization", StringComparison.OrdinalIgnoreCase) ? Authorization
            : header.Equals("x-api-key", StringComparison.OrdinalIgnoreCase) ? ApiKey
            : header.Equals("api-key", StringComparison.OrdinalIgnoreCase) ? AzureApiKey
            : header.Equals("OpenAI-Organization", StringComparison.OrdinalIgnoreCase) ? Organization
            : header.Equals("OpenAI-Project", StringComparison.OrdinalIgnoreCase) ? Project
            : 0;

        /// <summary>The request carries some key the proxy set, and every credential header on it — organization and
        /// project included — is one the proxy set.</summary>
        public static bool OnlyOwn(HttpRequestMessage message, int own)
        {
            var present = Present(message);
            return (own & present & Keys) != 0 && (present & ~own) == 0;
        }

        /// <summary>The credential headers on <paramref name="message"/>, as bits.</summary>
        public static int Present(HttpRequestMessage message) =>
            (HeaderEdits.Has(message, "Authorization") ? Authorization : 0)
            | (HeaderEdits.Has(message, "x-api-key") ? ApiKey : 0)
            | (HeaderEdits.Has(message, "api-key") ? AzureApiKey : 0)
            | (HeaderEdits.Has(message, "OpenAI-Organization") ? Organization : 0)
            | (HeaderEdits.Has(message, "OpenAI-Project") ? Project : 0);
    }

    public override async ValueTask<bool> TransformResponseAsync(HttpContext httpContext, HttpResponseMessage? proxyResponse,
        CancellationToken cancellationToken)
    {
        if (proxyResponse is null)
        {
            return await base.TransformResponseAsync(httpContext, proxyResponse, cancellationToken).ConfigureAwait(false);
        }
        attempt.TimeToFirstByteSeconds = Stopwatch.GetElapsedTime(attempt.Started).TotalSeconds;
        ctx.ResponseBody.Usage = null;
        ctx.ResponseBody.UsageFilter = null;
        var status = (int)proxyResponse.StatusCode;
        attempt.Status = status;
        if (!ResponseScreen.IsPassable(proxyResponse))
        {
            // Not copied; the attempt stage counts a protocol error (and retries elsewhere while nothing was sent).
            attempt.ProtocolViolation = true;
            return false;
        }
        // Provider headroom (SPEC §13.1) from every answer to the proxy's key, 429 or not: a few header lookups, parsed
        // only when present. An answer to a client's own key says nothing about the upstream's.
        var upstream = attempt.Lease!.Upstream;
        Headroom? learned = null;
        if (Headroom.Announced(proxyResponse.Headers) && SpeaksForTheUpstream(upstream, proxyResponse))
        {
            learned = upstream.Learn(proxyResponse.Headers);
        }
        if (status == StatusCodes.Status429TooManyRequests)
        {
            attempt.RetryAfterHint = RetryAfter.Parse(proxyResponse.Headers, ctx.Services.Time.GetUtcNow());
            attempt.ClientsAccount = !SpeaksForTheUpstream(upstream, proxyResponse);
            // A request above a limit the provider announced cannot pass on this key at any time: about the request.
            attempt.RequestTooLarge = learned?.Exceeds(ctx.TokenEstimate) == true;
        }
        if (attempt.OwnCredentials && status is >= 401 and <= 403)
        {
            // SPEC §13.4: the proxy's own key may be bad. A 403's body is read (bounded) for a model the key's
            // project may not use, which is no bad key.
            attempt.BadKey = status == StatusCodes.Status403Forbidden
                ? await KeyHealthScreen.Inspect403Async(proxyResponse, cancellationToken).ConfigureAwait(false)
                : KeyHealthScreen.StatusReason(status);
        }
        else if (attempt.OwnCredentials && status == StatusCodes.Status429TooManyRequests)
        {
            // Only a 429's body is read (bounded), before anything is sent: out of quota (a bad key), or a request
            // too large for the key (no cool-down).
            var verdict = await KeyHealthScreen.Inspect429Async(proxyResponse, cancellationToken).ConfigureAwait(false);
            attempt.BadKey = verdict.BadKey;
            attempt.RequestTooLarge |= verdict.RequestTooLarge;
        }
        if (stage.Diverts(ctx, attempt, status))
        {
            // Not sent to the client: the attempt stage retries on another member.
            attempt.Diverted = true;
            return false;
        }
        var copy = await base.TransformResponseAsync(httpContext, proxyResponse, cancellationToken).ConfigureAwait(false);
        ResponseScreen.SanitizeReasonPhrase(httpContext);
        RemoveConnectionNamed(proxyResponse.Headers, httpContext.Response.Headers);
        httpContext.Response.Headers.Remove("Trailer");
        httpContext.Response.Headers[ForwardingHeaders.RequestId] = ctx.RequestId;
        if (ctx.Forward.Config.DebugHeaders)
        {
            // The name only: an upstream's key or URL never reaches a client.
            httpContext.Response.Headers[DebugUpstreamHeader] = attempt.Lease!.Upstream.Name;
            httpContext.Response.Headers[DebugAttemptsHeader] = (uint)attempt.Count < (uint)AttemptCounts.Length
                ? AttemptCounts[attempt.Count]
                : attempt.Count.ToString(System.Globalization.CultureInfo.InvariantCulture);
        }
        var payload = PayloadOf(proxyResponse.Content.Headers);
        if (copy && payload != Payload.Other)
        {
            // Only an LLM call's answer is usage (SPEC §13.2): count_tokens' input_tokens, or a stored response fetched
            // again, generated nothing and must not be counted as if it had.
            ctx.ResponseBody.Usage = Stages.AttemptStage.IsLlmCall(ctx) ? new UsageScanner(lastUsageWins: payload != Payload.EventStream) : null;
            if (ctx.InjectsUsage && payload == Payload.EventStream)
            {
                ctx.ResponseBody.UsageFilter = new UsageChunkFilter();
                // The client gets fewer bytes than the upstream sent: a length the upstream declared would be a promise
                // the proxy breaks (Kestrel aborts the response short of it). Without one the answer goes out chunked.
                httpContext.Response.ContentLength = null;
            }
        }
        if (copy && payload == Payload.EventStream
            && proxyResponse.Content.Headers.ContentLength is null)
        {
            // YARP reads the body from this content after this method: an upstream break becomes a final error event.
            // Not with a Content-Length: an event beyond the promised length would break the framing the client has.
            proxyResponse.Content = new HonestSseContent(proxyResponse.Content, named: ApiShapes.IsAnthropicMessages(httpContext.Request.Path.Value));
        }
        return copy;
    }
}

/// <summary>The upstream URI built for a client path and query (<see cref="Runtime.UpstreamRuntime.LastDestination"/>).</summary>
internal sealed record UpstreamDestination(string? Path, string? Query, Uri Uri)
{
    /// <summary>A record prints its members: the upstream URL may carry a key in its query or path, so only the form the
    /// admin config report shows is printed.</summary>
    private bool PrintMembers(System.Text.StringBuilder builder)
    {
        builder.Append("Uri = ").Append(Admin.ConfigReport.SafeUrl(Uri.OriginalString));
        return true;
    }
}
