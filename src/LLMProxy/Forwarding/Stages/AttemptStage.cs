using System.Runtime.CompilerServices;
using LLMProxy.Cluster;
using LLMProxy.LoadBalancing;
using LLMProxy.Observability;
using LLMProxy.RateLimiting;
using LLMProxy.Resilience;
using LLMProxy.Runtime;
using Microsoft.AspNetCore.Http;
using Yarp.ReverseProxy.Forwarder;

namespace LLMProxy.Forwarding.Stages;

/// <summary>
/// The last stage: select a member → lease it → send through YARP → record the verdict on the lease, and retry on
/// another member while nothing reached the client (SPEC §5). The only place that decides retries: the transformer
/// asks <see cref="Diverts"/> when an answer's headers arrive.
/// </summary>
internal sealed class AttemptStage : IRequestStage
{
    public static readonly AttemptStage Instance = new();

    /// <summary>A descriptor shortage passes as connections close: a second is a fair wait.</summary>
    private static readonly TimeSpan ShortOfDescriptorsRetryAfter = TimeSpan.FromSeconds(1);

    private enum Next { Done, Retry }

    // Both async methods of an attempt wait for the upstream on every request: their state machines come from a pool
    // rather than one new box each per request (each is awaited once, by its one caller).
    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder<>))]
    public async ValueTask<bool> RunAsync(RequestContext request)
    {
        var group = request.Group;
        var maxAttempts = request.Replayable ? group.MaxAttempts : 1;
        var attempt = new Attempt();
        if (group.HasModelRules)
        {
            var notServing = group.NotServing(request.Facts.Model);
            if (notServing.ContainsAll(group.Members.Length))
            {
                return request.Stop(RequestOutcome.ModelNotFound);
            }
            attempt.Exclude(notServing);
        }
        var transformer = new UpstreamTransformer(request, attempt, this);
        // The body length: buffered bytes, else what Content-Length announces, else only the output estimate. A request
        // without a body (GET /v1/models) or off the known API shapes (an upload to /v1/files) is no LLM call and
        // reserves nothing.
        request.TokenEstimate = EstimateTokens(request);
        var balancing = new BalancingContext(request.Client) { Tokens = request.TokenEstimate };
        AttemptFailure? lastTransport = null;
        var affinityKey = AffinityKeyOf(request, group.AffinityKeys);
        var sharedRefusals = 0;
        while (true)
        {
            var lease = group.Select(balancing, attempt.Tried, out var reason, affinityKey);
            if (lease is null)
            {
                // Every member tried or unavailable after a transport failure: that failure is the answer.
                return lastTransport is { } last ? request.Stop(last.Outcome) : NoUpstream(request, group, reason);
            }
            if (lease.Upstream.Shared is { } shared)
            {
                // SPEC §17: the cluster's word on this attempt, in one round trip; a refusal is now local state too, so
                // choosing again skips that member (bounded all the same: a refusal always blocks it for a while).
                SharedAdmission admission;
                try
                {
                    admission = await shared.AcquireAsync(lease.Upstream, lease.IsTrial, request.TokenEstimate.Total, request.SharedTakes,
                        request.ClientTokens?.SharedPending).ConfigureAwait(false);
                }
                catch
                {
                    lease.Dispose(); // never leaked, whatever happens between acquire and release
                    throw;
                }
                var (verdict, wait, reserved, byClientKey, clientReserved) = admission;
                if (verdict != SharedVerdict.Admitted)
                {
                    lease.Dispose();
                    if (verdict == SharedVerdict.ClientLimited && byClientKey)
                    {
                        request.Forward.Metrics.ClientKeyRejections.Inc();
                        return request.Stop(RequestOutcome.ClientKeyRateLimited, wait);
                    }
                    if (verdict == SharedVerdict.ClientLimited)
                    {
                        request.Forward.Metrics.ClientRejections.Inc();
                        return request.Stop(RequestOutcome.RateLimited, wait);
                    }
                    if (++sharedRefusals > 2 * group.Members.Length)
                    {
                        return NoUpstream(request, group, Unavailability.RateLimited);
                    }
                    continue;
                }
                lease.ReserveShared(reserved);
                // Client buckets and the client key's budget are charged once per request, by its first admitted attempt.
                request.SharedTakes = null;
                request.ClientTokens?.ReservedShared(clientReserved);
            }
            Next next;
            AttemptFailure? failure;
            using (lease)
            {
                (next, failure) = await SendAsync(request, attempt, transformer, lease, maxAttempts).ConfigureAwait(false);
            }
            if (next == Next.Done)
            {
                return true;
            }
            lastTransport = failure ?? lastTransport;
            request.Http.Response.Clear();
            if (group.Backoff > TimeSpan.Zero)
            {
                await Task.Delay(group.Backoff, request.Services.Time, request.Http.RequestAborted).ConfigureAwait(false);
            }
        }
    }

    /// <summary>The first present affinity key of the request (SPEC §13.5): a header's first non-empty value or a body
    /// fact; null when none is present (or the group has no <c>affinity</c>), so the group's strategy decides.</summary>
    internal static string? AffinityKeyOf(RequestContext request, AffinityKey[] keys)
    {
        foreach (var key in keys)
        {
            var value = key.Source switch
            {
                AffinitySource.Header => request.Http.Request.Headers.TryGetValue(key.HeaderName!, out var values) && values.Count > 0
                    ? values[0] : null,
                AffinitySource.PromptCacheKey => request.Facts.PromptCacheKey,
                AffinitySource.User => request.Facts.User,
                AffinitySource.MetadataUserId => request.Facts.MetadataUserId,
                _ => null,
            };
            if (!string.IsNullOrEmpty(value))
            {
                return value;
            }
        }
        return null;
    }

    /// <summary>Whether an answer with <paramref name="status"/> is held back from the client to retry elsewhere: a
    /// retry status, or an answer saying the upstream's key is bad (SPEC §13.4), whatever <c>retry.statusCodes</c> says.</summary>
    public bool Diverts(RequestContext request, Attempt attempt, int status) =>
        attempt.MayRetry && (request.Group.IsRetryStatus(status) || attempt.BadKey is not null)
        && request.Group.HasAlternative(attempt.Tried, request.TokenEstimate);

    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder<>))]
    private static async ValueTask<(Next, AttemptFailure?)> SendAsync(RequestContext request, Attempt attempt, UpstreamTransformer transformer,
        UpstreamLease lease, int maxAttempts)
    {
        var http = request.Http;
        var group = request.Group;
        var upstream = lease.Upstream;
        var services = request.Services;
        attempt.Begin(lease, maxAttempts);
        request.UpstreamName = upstream.Name;
        request.Attempts = attempt.Count;
        if (request.Body is { } body)
        {
            // Every attempt sends the buffered body again — with this upstream's model when its modelMap rewrites it, and
            // with include_usage when the proxy asks for usage (spliced only then, so Content-Length follows the bytes sent).
            var token = upstream.MappedModel(request.Facts.Model);
            var mapped = token is null && !request.InjectsUsage ? null
                : IncludeUsage.Compose(body.AsSpan(0, request.BodyLength), request.Facts, request.InjectsUsage, token);
            request.AttemptBody = mapped is null ? new ArraySegment<byte>(body, 0, request.BodyLength) : new ArraySegment<byte>(mapped);
            http.Request.Body = new MemoryStream(request.AttemptBody.Array!, request.AttemptBody.Offset, request.AttemptBody.Count, writable: false);
            http.Request.ContentLength = request.AttemptBody.Count;
        }

        var error = await services.Forwarder.SendAsync(http, upstream.Url, group.Invoker, group.RequestConfig, transformer, http.RequestAborted)
            .ConfigureAwait(false);

        var member = lease.Metrics;
        var status = attempt.Status;
        SettleTokens(request, lease, error, status);
        CountTokens(request, member, upstream);
        if (status != 0)
        {
            member.TimeToFirstByte.Observe(attempt.TimeToFirstByteSeconds);
        }
        member.Requests(status).Inc();
        if (status != 0)
        {
            KeyAnswer(services, lease, status, attempt);
        }
        if (status == StatusCodes.Status429TooManyRequests && attempt.RequestTooLarge && attempt.BadKey is null)
        {
            Log.RequestTooLargeForKey(services.Logger, upstream.Name);
        }
        else if (status == StatusCodes.Status429TooManyRequests && attempt.BadKey is null && !attempt.ClientsAccount)
        {
            var park = RetryAfter.CoolDownFor(attempt.RetryAfterHint);
            upstream.CoolDown.Park(park);
            upstream.Shared?.Park(park);
            member.CoolDowns.Inc();
            Log.CoolingDown(services.Logger, upstream.Name, (long)park.TotalMilliseconds);
        }

        if (error == ForwarderError.None && !attempt.ProtocolViolation)
        {
            // An answer arrived: 5xx counts against the breaker, 429 and a bad key (SPEC §13.4) are account signals only.
            var kind = attempt.BadKey is not null ? AttemptError.BadKey
                : status >= 500 ? AttemptError.Status5xx : status == StatusCodes.Status429TooManyRequests ? AttemptError.Status429 : AttemptError.StatusOther;
            lease.Record(kind switch
            {
                AttemptError.Status5xx => AttemptVerdict.Failure,
                AttemptError.Status429 or AttemptError.BadKey => AttemptVerdict.Neutral,
                _ => AttemptVerdict.Success,
            });
            if (kind != AttemptError.StatusOther)
            {
                member.Errors(kind).Inc();
                upstream.RecordError(MemberMetrics.Label(kind), status);
                Log.AttemptFailed(services.Logger, group.Name, upstream.Name, MemberMetrics.Label(kind), status, request.RequestId);
            }
            if (attempt.Diverted)
            {
                group.Metrics.Retries(kind).Inc();
                return (Next.Retry, null);
            }
            request.Outcome = kind switch
            {
                AttemptError.Status5xx => RequestOutcome.UpstreamError,
                AttemptError.Status429 => RequestOutcome.Upstream429,
                AttemptError.BadKey when status == StatusCodes.Status429TooManyRequests => RequestOutcome.Upstream429,
                _ => RequestOutcome.Ok,
            };
            if (request.ResponseBody.UsageFilter is not null)
            {
                await FlushFilterAsync(request).ConfigureAwait(false);
            }
            return (Next.Done, null);
        }

        var failure = attempt.ProtocolViolation ? AttemptFailure.Upstream(AttemptError.Protocol) : FailureClassifier.Classify(http, error);
        if (failure.ClientSide)
        {
            // Not the upstream's doing: no verdict (the lease's default).
            if (failure == FailureClassifier.Unsendable)
            {
                var cause = http.GetForwarderErrorFeature()?.Exception;
                Log.Unsendable(services.Logger, upstream.Name, cause?.GetType().Name ?? error.ToString(), request.RequestId);
                if (cause is not null)
                {
                    Log.UnsendableDetail(services.Logger, cause, request.RequestId); // the stack trace, at Debug only
                }
            }
            else if (failure == FailureClassifier.ShortOfDescriptors)
            {
                Log.ShortOfDescriptors(services.Logger, upstream.Name, request.RequestId);
                request.RetryAfter = ShortOfDescriptorsRetryAfter;
            }
            request.Outcome = failure.Outcome;
            return (Next.Done, null);
        }

        lease.Record(AttemptVerdict.Failure);
        member.Errors(failure.Kind).Inc();
        upstream.RecordError(MemberMetrics.Label(failure.Kind), status);
        Log.AttemptFailed(services.Logger, group.Name, upstream.Name, MemberMetrics.Label(failure.Kind), status, request.RequestId);
        if (http.Response.HasStarted)
        {
            // Broke mid-stream: YARP aborted the client connection, so the client sees no clean end.
            request.Outcome = RequestOutcome.UpstreamBrokenStream;
            return (Next.Done, null);
        }
        if (attempt.MayRetry && group.HasAlternative(attempt.Tried, request.TokenEstimate))
        {
            group.Metrics.Retries(failure.Kind).Inc();
            return (Next.Retry, failure);
        }
        request.Outcome = failure.Outcome;
        return (Next.Done, null);
    }

    /// <summary>Key health (SPEC §13.4): a bad-key answer disables the key (or keeps it out, after its trial); a trial
    /// answered 2xx enables it again.</summary>
    private static void KeyAnswer(PipelineServices services, UpstreamLease lease, int status, Attempt attempt)
    {
        var upstream = lease.Upstream;
        var badKey = attempt.BadKey;
        var wasDisabled = upstream.Disabled is not null;
        lease.KeyAnswer(status, badKey, attempt.OwnCredentials);
        if (badKey is not null && !wasDisabled)
        {
            Log.KeyDisabled(services.Logger, upstream.Name, badKey);
        }
        else if (wasDisabled && upstream.Disabled is null)
        {
            Log.KeyEnabled(services.Logger, upstream.Name);
        }
    }

    /// <summary>An event the upstream left without its blank line was held by the usage filter: it goes to the client
    /// as the upstream sent it. A client gone by then is no upstream failure and changes no outcome.</summary>
    private static async ValueTask FlushFilterAsync(RequestContext request)
    {
        try
        {
            await request.ResponseBody.FlushFilterAsync(request.Http.RequestAborted).ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is IOException or OperationCanceledException)
        {
            // The client went away after the last complete event; the access line already has the bytes it got.
        }
    }

    /// <summary>Settles the attempt's TPM reservation: to the usage the answer reported, else keeps the estimate for a
    /// 2xx answer to an LLM call (<see cref="IsLlmCall"/>) whose count is unknown; anything else — a failure, an abort —
    /// leaves it to the lease, which refunds it. A request that is no LLM call reserved nothing and settles nothing.</summary>
    private static void SettleTokens(RequestContext request, UpstreamLease lease, ForwarderError error, int status)
    {
        if (lease.ReservedTokens == 0 && lease.SharedReservedTokens == 0)
        {
            return;
        }
        if (request.ResponseBody.Usage?.Usage is { Found: true } usage)
        {
            // Cached and reasoning tokens are parts of prompt and completion, not additions.
            lease.SettleTokens(usage.Total);
        }
        else if (error == ForwarderError.None && status is >= 200 and < 300 && IsLlmCall(request))
        {
            lease.SettleTokens(null);
        }
    }

    /// <summary>Counts the usage the answer reported in the token metrics and the upstream's last minute — whatever
    /// became of the attempt afterwards: tokens a stream reported before it broke or the client left were spent, and
    /// the budgets settle with them (<see cref="SettleTokens"/>). An answer held back for a retry was never read.</summary>
    private static void CountTokens(RequestContext request, MemberMetrics member, UpstreamRuntime upstream)
    {
        if (request.ResponseBody.Usage?.Usage is not { Found: true } usage)
        {
            return;
        }
        if (request.ClientKey is { } key)
        {
            key.TokensOn(member).Count(usage);
        }
        else
        {
            member.CountTokens(usage);
        }
        upstream.Recent.AddTokens(usage.Total);
    }

    /// <summary>The request's estimated LLM tokens (SPEC §13.1): 0 unless it is an LLM call.</summary>
    internal static TokenNeed EstimateTokens(RequestContext request) => IsLlmCall(request)
        ? TokenEstimate.Need(request.Body is not null ? request.BodyLength : request.Http.Request.ContentLength ?? 0, request.Facts.MaxOutputTokens)
        : default;

    /// <summary>Whether token budgets apply to the request: it has a body and the client's path is one of SPEC §11's
    /// known API shapes (<see cref="ApiShapes"/>). Anything else — <c>GET /v1/models</c>, an upload to <c>/v1/files</c> —
    /// counts against request budgets (RPM, per second, concurrency) only.</summary>
    internal static bool IsLlmCall(RequestContext request) =>
        HasBody(request) && (request.Forward.ReachesLlmEndpoint || ApiShapes.IsLlmCall(request.Http.Request.Path.Value));

    internal static bool HasBody(RequestContext request) =>
        request.Body is not null || request.Http.Request.ContentLength > 0 || request.Http.Request.Headers.TransferEncoding.Count > 0;

    private static bool NoUpstream(RequestContext request, GroupRuntime group, Unavailability reason)
    {
        var time = request.Services.Time;
        var now = time.GetUtcNow();
        var retryAfter = group.EarliestRecovery(time, request.TokenEstimate, group.NotServing(request.Facts.Model)) is { } at
            ? at - now
            : (TimeSpan?)null; // no member comes back by itself: no moment to promise
        if (reason == Unavailability.RateLimited)
        {
            request.Forward.Metrics.UpstreamRejections.Inc();
            return request.Stop(RequestOutcome.UpstreamRateLimited, retryAfter);
        }
        return request.Stop(RequestOutcome.NoAvailableUpstream, retryAfter);
    }
}
