using LLMProxy.Observability;
using Microsoft.AspNetCore.Http;
using Yarp.ReverseProxy.Forwarder;

namespace LLMProxy.Forwarding;

/// <summary>
/// What a failed forwarding attempt means. A client-side failure is no verdict for the upstream and carries the
/// outcome the client gets (<see cref="RequestOutcome.ClientAborted"/> = the client left, nothing to write); an
/// upstream failure carries its metric kind, from which the answer follows: a timeout is 504
/// <c>upstream_timeout</c>, anything else 502 <c>upstream_unavailable</c>.
/// </summary>
internal readonly record struct AttemptFailure(bool ClientSide, AttemptError Kind, RequestOutcome Outcome)
{
    public static AttemptFailure Client(RequestOutcome outcome) => new(true, default, outcome);

    public static AttemptFailure Upstream(AttemptError kind) =>
        new(false, kind, kind == AttemptError.Timeout ? RequestOutcome.UpstreamTimeout : RequestOutcome.UpstreamUnavailable);
}

/// <summary>Maps YARP's <see cref="ForwarderError"/> and Kestrel's body errors to <see cref="AttemptFailure"/>.</summary>
internal static class FailureClassifier
{
    private static readonly AttemptFailure ClientGone = AttemptFailure.Client(RequestOutcome.ClientAborted);
    private static readonly AttemptFailure ClientTooSlow = AttemptFailure.Client(RequestOutcome.RequestTimeout);

    /// <summary>The proxy's own shortage: no descriptor or socket buffer for a new upstream connection. The upstream was
    /// never reached, so no verdict on it, and no other member would fare better: 503 at once.</summary>
    public static readonly AttemptFailure ShortOfDescriptors = AttemptFailure.Client(RequestOutcome.ProxyOverloaded);

    /// <summary>A request the proxy could not build or send as received: the client's fault, no upstream verdict.</summary>
    public static readonly AttemptFailure Unsendable = AttemptFailure.Client(RequestOutcome.BadRequest);

    /// <summary>
    /// Total: an attempt is an upstream failure only on evidence that the upstream (or the path to it) failed — a
    /// transport error, a timeout, a response that cannot be proxied. Anything else, in particular an exception
    /// while the request was built or before it was written, is <see cref="Unsendable"/>: a client must never be
    /// able to open a breaker with a request the proxy cannot send.
    /// </summary>
    public static AttemptFailure Classify(HttpContext context, ForwarderError error)
    {
        var exception = context.GetForwarderErrorFeature()?.Exception;
        return error switch
        {
            // A streamed upload cancelled while the client is still there and the copy was waiting for its bytes: YARP's
            // activity timeout (timeout.request, when below timeout.read) ran out on the client's slowness. Answered as
            // timeout.read would: one JSON 408, no verdict on the upstream.
            ForwarderError.RequestBodyClient or ForwarderError.RequestBodyCanceled when SlowUpload(context, exception) => ClientTooSlow,
            ForwarderError.RequestCanceled or ForwarderError.RequestBodyCanceled
                or ForwarderError.ResponseBodyCanceled or ForwarderError.ResponseBodyClient => ClientGone,
            ForwarderError.RequestBodyClient => Find<BadHttpRequestException>(exception) is { } bad ? ForBadBody(context, bad) : ClientGone,
            ForwarderError.RequestCreation => Unsendable,
            ForwarderError.RequestTimedOut => AttemptFailure.Upstream(AttemptError.Timeout),
            // YARP reports an upstream that went idle mid-body (activity timeout) as a destination error whose
            // exception is a cancellation; the client's own cancellation is ResponseBodyCanceled instead.
            ForwarderError.ResponseBodyDestination => AttemptFailure.Upstream(exception is OperationCanceledException ? AttemptError.Timeout : AttemptError.Stream),
            // The transformer reads a 429's or 403's body (bounded) before anything is sent (KeyHealthScreen): cancelled
            // there, either the client left or the activity timeout ran out on the upstream's body — neither is a bad answer.
            ForwarderError.ResponseHeaders when Find<OperationCanceledException>(exception) is not null =>
                context.RequestAborted.IsCancellationRequested ? ClientGone : AttemptFailure.Upstream(AttemptError.Timeout),
            // Response headers that cannot be passed on (e.g. values Kestrel refuses): the upstream's answer is bad.
            ForwarderError.ResponseHeaders => AttemptFailure.Upstream(AttemptError.Protocol),
            _ when Find<TimeoutException>(exception) is not null => AttemptFailure.Upstream(AttemptError.Timeout),
            // Before any transport evidence: EMFILE/ENFILE/ENOBUFS while opening a socket is this process's shortage,
            // and counting it against the upstream would let a connection flood open every breaker.
            _ when Find<System.Net.Sockets.SocketException>(exception) is
                { SocketErrorCode: System.Net.Sockets.SocketError.TooManyOpenSockets or System.Net.Sockets.SocketError.NoBufferSpaceAvailable }
                => ShortOfDescriptors,
            _ when Find<System.Net.Sockets.SocketException>(exception) is { SocketErrorCode: System.Net.Sockets.SocketError.ConnectionRefused }
                => AttemptFailure.Upstream(AttemptError.Connect),
            // A response .NET's client cannot read: not HTTP, or a head beyond its limits (64 KB of headers).
            _ when Find<HttpRequestException>(exception) is { HttpRequestError: HttpRequestError.InvalidResponse or HttpRequestError.ConfigurationLimitExceeded }
                => AttemptFailure.Upstream(AttemptError.Protocol),
            _ when IsTransport(exception) => AttemptFailure.Upstream(AttemptError.Reset),
            _ => Unsendable,
        };
    }

    private static bool SlowUpload(HttpContext context, Exception? exception)
    {
        var body = context.Request.Body;
        while (body is PrefixedStream prefixed)
        {
            body = prefixed.Rest; // a body read up to the replay limit streams on behind what was read
        }
        return !context.RequestAborted.IsCancellationRequested
            && body is RequestBodyGuard { AwaitingClient: true }
            && Find<OperationCanceledException>(exception) is not null;
    }

    /// <summary>Evidence of a failed connection or exchange with the upstream (or the outbound proxy on its way).</summary>
    private static bool IsTransport(Exception? exception)
    {
        for (var e = exception; e is not null; e = e.InnerException)
        {
            if (e is HttpRequestException { HttpRequestError: not HttpRequestError.Unknown }
                or System.Net.Sockets.SocketException or IOException or System.Security.Authentication.AuthenticationException)
            {
                return true;
            }
        }
        return false;
    }

    /// <summary>
    /// A request body Kestrel refused: too large (413), too slow (408), malformed (400) — or cut short because
    /// the client closed the connection, which is a client that left (499), not a bad request: Kestrel reports
    /// that as a 400 "unexpected end of request content" before RequestAborted fires.
    /// </summary>
    public static AttemptFailure ForBadBody(HttpContext context, BadHttpRequestException bad)
    {
        if (context.RequestAborted.IsCancellationRequested
            || bad.StatusCode == StatusCodes.Status400BadRequest && bad.Message.Contains("Unexpected end of request content", StringComparison.Ordinal))
        {
            return ClientGone;
        }
        return bad.StatusCode switch
        {
            StatusCodes.Status413PayloadTooLarge => AttemptFailure.Client(RequestOutcome.RequestTooLarge),
            StatusCodes.Status408RequestTimeout => AttemptFailure.Client(RequestOutcome.RequestTimeout),
            _ => AttemptFailure.Client(RequestOutcome.BadRequest),
        };
    }

    private static T? Find<T>(Exception? exception) where T : Exception
    {
        for (var e = exception; e is not null; e = e.InnerException)
        {
            if (e is T match)
            {
                return match;
            }
        }
        return null;
    }
}
