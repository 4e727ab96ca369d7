using System.Buffers;
using System.Diagnostics;
using System.Net;
using LLMProxy.LoadBalancing;
using LLMProxy.Observability;
using LLMProxy.Resilience;
using LLMProxy.Runtime;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.Extensions.Logging;
using Yarp.ReverseProxy.Forwarder;

namespace LLMProxy.Forwarding;

/// <summary>
/// The request pipeline of one forward: client identity → forward rate limit → pick an upstream →
/// forward through YARP → retry/failover while nothing reached the client → account in metrics and
/// one access-log line. Expected failures are values; the one boundary catch maps surprises to 502.
/// </summary>
internal sealed class ForwardHandler
{
    /// <summary>Request bodies up to this size are kept so a failed attempt can be replayed elsewhere.</summary>
    public const int ReplayLimit = 4 * 1024 * 1024;

    private readonly RuntimeHolder _holder;
    private readonly int _forwardIndex;
    private readonly string _forwardName;
    private readonly IHttpForwarder _forwarder;
    private readonly TimeProvider _time;
    private readonly ILogger _logger;
    private readonly ForwardMetrics _forwardMetrics;
    private readonly ClientStreams _clientStreams;

    /// <param name="forwardIndex">This forward's position in every runtime's <see cref="ProxyRuntime.Forwards"/>
    /// (a reload never changes the set of listeners).</param>
    public ForwardHandler(RuntimeHolder holder, int forwardIndex, IHttpForwarder forwarder, TimeProvider time, ILogger logger)
    {
        _holder = holder;
        _forwardIndex = forwardIndex;
        var metrics = holder.Current.Metrics;
        var forward = holder.Current.Forwards[forwardIndex];
        _forwardName = forward.Name;
        _forwarder = forwarder;
        _time = time;
        _logger = logger;
        _forwardMetrics = new ForwardMetrics(metrics, forward.Name);
        _clientStreams = new ClientStreams(forward.Config, time, logger, metrics);
    }

    public async Task HandleAsync(HttpContext context)
    {
        var started = Stopwatch.GetTimestamp();
        var request = context.Request;
        var requestId = RequestIds.FromOrNew(request.Headers[ForwardingHeaders.RequestId]);
        var counting = _clientStreams.Wrap(context, requestId);
        var outcome = new Outcome();
        var runtime = _holder.Current;
        _forwardMetrics.Active.Inc();
        runtime.RequestStarted();
        try
        {
            await ProcessAsync(context, runtime.Forwards[_forwardIndex], requestId, counting, outcome).ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is OperationCanceledException && context.RequestAborted.IsCancellationRequested)
        {
            outcome.Kind = "client_aborted";
        }
        catch (Exception ex)
        {
            // The one boundary for surprises: answer 502 if we still can, otherwise abort the stream.
            Log.UnhandledRequestError(_logger, ex, requestId);
            outcome.Kind = "internal_error";
            if (!context.Response.HasStarted)
            {
                await ProxyErrors.WriteAsync(context, StatusCodes.Status502BadGateway, ProxyErrors.UpstreamUnavailable, requestId: requestId).ConfigureAwait(false);
            }
            else
            {
                context.Abort();
            }
        }
        finally
        {
            _forwardMetrics.Active.Dec();
            runtime.RequestEnded();
            Account(context, started, requestId, outcome, counting.Written);
        }
    }

    private async Task ProcessAsync(HttpContext context, ForwardRuntime forward, string requestId, CountingStream body, Outcome outcome)
    {
        var request = context.Request;
        var peer = context.Connection.RemoteIpAddress ?? IPAddress.Loopback;
        var client = forward.IpResolver is { } resolver
            ? resolver.Resolve(peer, request.Headers[ForwardingHeaders.ForwardedFor].ToString())
            : peer;

        if (forward.Limiter is { } limiter && !limiter.TryAcquire(client, out var limitedFor))
        {
            _forwardMetrics.ClientRejections.Inc();
            outcome.Kind = "rate_limited";
            await ProxyErrors.WriteAsync(context, StatusCodes.Status429TooManyRequests, ProxyErrors.RateLimited, limitedFor, requestId).ConfigureAwait(false);
            return;
        }

        var declaredLength = request.ContentLength;
        if (declaredLength > forward.Config.MaxRequestBodySize)
        {
            outcome.Kind = "request_too_large";
            await ProxyErrors.WriteAsync(context, StatusCodes.Status413PayloadTooLarge, ProxyErrors.RequestTooLarge, requestId: requestId).ConfigureAwait(false);
            return;
        }

        var group = forward.DefaultGroup;
        var state = new RequestState { Group = group, RequestId = requestId, PeerIp = peer.ToString(), Time = _time, Body = body };
        var clientHash = group.Strategy == Configuration.BalanceStrategy.IpHash ? ClientHash.Of(client) : 0UL;

        // A body is replayable when there is none, or when it is small enough to keep in memory.
        byte[]? replay = null;
        var replayLength = 0;
        var hasBody = context.Features.Get<IHttpRequestBodyDetectionFeature>()?.CanHaveBody ?? declaredLength > 0;
        var replayable = !hasBody;
        if (hasBody && group.MaxAttempts > 1 && declaredLength is > 0 and <= ReplayLimit)
        {
            replayLength = (int)declaredLength.Value;
            replay = ArrayPool<byte>.Shared.Rent(replayLength);
            var read = await ReadBodyAsync(context, replay, replayLength, outcome, requestId).ConfigureAwait(false);
            if (!read)
            {
                ArrayPool<byte>.Shared.Return(replay);
                return;
            }
            replayable = true;
        }
        outcome.RequestBytes = declaredLength ?? 0;

        try
        {
            await ForwardWithRetriesAsync(context, group, state, clientHash, replay, replayLength, replayable, outcome).ConfigureAwait(false);
        }
        finally
        {
            if (replay is not null)
            {
                ArrayPool<byte>.Shared.Return(replay);
            }
        }
    }

    private async Task ForwardWithRetriesAsync(HttpContext context, GroupRuntime group, RequestState state, ulong clientHash,
        byte[]? replay, int replayLength, bool replayable, Outcome outcome)
    {
        var requestId = state.RequestId;
        var maxAttempts = replayable ? group.MaxAttempts : 1;
        var lastTransportCode = (string?)null;
        var lastTransportStatus = 0;

        while (true)
        {
            var upstream = group.Select(clientHash, state.Tried, out var index, out var reason);
            if (upstream is null)
            {
                if (state.Attempts > 0 && lastTransportCode is not null)
                {
                    // Every member tried or unavailable after a transport failure.
                    outcome.Kind = lastTransportCode;
                    await ProxyErrors.WriteAsync(context, lastTransportStatus, lastTransportCode, requestId: requestId).ConfigureAwait(false);
                    return;
                }
                await RejectNoUpstreamAsync(context, group, reason, requestId, outcome).ConfigureAwait(false);
                return;
            }

            state.BeginAttempt(upstream, index);
            state.MayRetry = state.Attempts < maxAttempts;
            outcome.Upstream = upstream.Name;
            outcome.Attempts = state.Attempts;
            var member = group.MemberMetrics[index];
            member.Selections.Inc();
            if (replay is not null)
            {
                context.Request.Body = new MemoryStream(replay, 0, replayLength, writable: false);
            }

            var inflight = member.InFlight;
            inflight.Inc();
            ForwarderError error;
            try
            {
                error = await _forwarder.SendAsync(context, upstream.Url, group.Invoker, group.RequestConfig, state, context.RequestAborted).ConfigureAwait(false);
            }
            finally
            {
                inflight.Dec();
            }

            var status = state.UpstreamStatus;
            if (status != 0)
            {
                member.TimeToFirstByte.Observe(state.TimeToFirstByteSeconds);
            }
            member.Requests(status).Inc();

            if (status == StatusCodes.Status429TooManyRequests)
            {
                var park = RetryAfter.CoolDownFor(state.RetryAfterHint);
                upstream.CoolDown.Park(park);
                member.CoolDowns.Inc();
                Log.CoolingDown(_logger, upstream.Name, (long)park.TotalMilliseconds);
            }

            if (error == ForwarderError.None)
            {
                // A response was received; 5xx counts against the breaker, 429 is an account signal only.
                var failed = status >= 500;
                upstream.Complete(status == StatusCodes.Status429TooManyRequests ? null : failed);
                if (failed || status == StatusCodes.Status429TooManyRequests)
                {
                    var kind = failed ? AttemptError.Status5xx : AttemptError.Status429;
                    member.Errors(kind).Inc();
                    Log.AttemptFailed(_logger, group.Name, upstream.Name, MemberMetrics.Label(kind), status, requestId);
                }
                if (state.Suppressed)
                {
                    group.Metrics.Retries(failed ? AttemptError.Status5xx
                        : status == StatusCodes.Status429TooManyRequests ? AttemptError.Status429 : AttemptError.StatusOther).Inc();
                    context.Response.Clear();
                    await BackoffAsync(group, context.RequestAborted).ConfigureAwait(false);
                    continue;
                }
                outcome.Kind = status >= 500 ? "upstream_error" : status == 429 ? "upstream_429" : "ok";
                if (state.Body.Usage is { Found: true } usage)
                {
                    member.PromptTokens.Inc(usage.PromptTokens);
                    member.CompletionTokens.Inc(usage.CompletionTokens);
                }
                return;
            }

            var failure = FailureClassifier.Classify(context, error);
            if (failure.ClientSide)
            {
                upstream.Complete(null);
                await AnswerClientFailureAsync(context, failure, outcome, requestId).ConfigureAwait(false);
                return;
            }

            upstream.Complete(true);
            var errorKind = failure.Kind;
            member.Errors(errorKind).Inc();
            Log.AttemptFailed(_logger, group.Name, upstream.Name, MemberMetrics.Label(errorKind), status, requestId);

            if (context.Response.HasStarted)
            {
                // Broke mid-stream: YARP aborted the client connection, so the client sees no clean end.
                outcome.Kind = "upstream_broken_stream";
                return;
            }
            lastTransportCode = failure.Code;
            lastTransportStatus = failure.Status;
            if (state.MayRetry && group.HasAlternative(state.Tried))
            {
                group.Metrics.Retries(errorKind).Inc();
                context.Response.Clear();
                await BackoffAsync(group, context.RequestAborted).ConfigureAwait(false);
                continue;
            }
            outcome.Kind = failure.Code;
            await ProxyErrors.WriteAsync(context, failure.Status, failure.Code, requestId: requestId).ConfigureAwait(false);
            return;
        }
    }

    private Task BackoffAsync(GroupRuntime group, CancellationToken cancellationToken) =>
        group.Backoff > TimeSpan.Zero ? Task.Delay(group.Backoff, _time, cancellationToken) : Task.CompletedTask;

    private async Task RejectNoUpstreamAsync(HttpContext context, GroupRuntime group, Unavailability reason, string requestId, Outcome outcome)
    {
        var now = _time.GetUtcNow();
        var retryAfter = (group.EarliestRecovery(_time) ?? now) - now;
        if (reason == Unavailability.RateLimited)
        {
            _forwardMetrics.UpstreamRejections.Inc();
            outcome.Kind = ProxyErrors.UpstreamRateLimited;
            await ProxyErrors.WriteAsync(context, StatusCodes.Status429TooManyRequests, ProxyErrors.UpstreamRateLimited, retryAfter, requestId).ConfigureAwait(false);
            return;
        }
        outcome.Kind = ProxyErrors.NoAvailableUpstream;
        await ProxyErrors.WriteAsync(context, StatusCodes.Status503ServiceUnavailable, ProxyErrors.NoAvailableUpstream, retryAfter, requestId).ConfigureAwait(false);
    }

    /// <summary>A client-side failure: answer its status unless the client left (nothing to write to).</summary>
    private static async Task AnswerClientFailureAsync(HttpContext context, AttemptFailure failure, Outcome outcome, string requestId)
    {
        if (failure.Status == AttemptFailure.ClientClosedRequest)
        {
            outcome.Kind = "client_aborted";
            return;
        }
        outcome.Kind = failure.Code;
        if (!context.Response.HasStarted)
        {
            await ProxyErrors.WriteAsync(context, failure.Status, failure.Code, requestId: requestId).ConfigureAwait(false);
        }
    }

    /// <summary>Reads a replayable body into <paramref name="buffer"/>; false when the request already has its answer.</summary>
    private async Task<bool> ReadBodyAsync(HttpContext context, byte[] buffer, int length, Outcome outcome, string requestId)
    {
        try
        {
            var read = await context.Request.Body.ReadAtLeastAsync(buffer.AsMemory(0, length), length, throwOnEndOfStream: false, context.RequestAborted).ConfigureAwait(false);
            if (read == length)
            {
                return true;
            }
            // The body ended before its Content-Length: the client went away mid-upload.
            outcome.Kind = "client_aborted";
        }
        catch (BadHttpRequestException bad)
        {
            await AnswerClientFailureAsync(context, FailureClassifier.ForBadBody(context, bad), outcome, requestId).ConfigureAwait(false);
            return false;
        }
        catch (Exception ex) when (ex is OperationCanceledException or IOException)
        {
            outcome.Kind = "client_aborted";
            return false;
        }
        return false;
    }

    private void Account(HttpContext context, long started, string requestId, Outcome outcome, long bytesWritten)
    {
        var elapsed = Stopwatch.GetElapsedTime(started);
        var status = outcome.Kind == "client_aborted" ? 499 : context.Response.StatusCode;
        _forwardMetrics.RecordRequest(context.Request.Method, status, elapsed.TotalSeconds);
        _forwardMetrics.RequestSize.Observe(outcome.RequestBytes);
        _forwardMetrics.ResponseSize.Observe(bytesWritten);
        if (_logger.IsEnabled(LogLevel.Information))
        {
            // The path only: a query string may carry a key.
            Log.Access(_logger, context.Request.Method, context.Request.Path.Value ?? "/", status, _forwardName,
                outcome.Upstream ?? "-", outcome.Attempts, elapsed.TotalMilliseconds, bytesWritten, outcome.Kind, requestId);
        }
    }

    /// <summary>Terminal outcome of one request, for the access log.</summary>
    private sealed class Outcome
    {
        public string Kind { get; set; } = "ok";
        public string? Upstream { get; set; }
        public int Attempts { get; set; }
        public long RequestBytes { get; set; }
    }
}
