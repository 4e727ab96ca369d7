using Microsoft.Extensions.Logging;

namespace LLMProxy.Observability;

/// <summary>Every log line the proxy writes, with stable event ids. Never bodies, never secrets.</summary>
internal static partial class Log
{
    private static readonly EventId AccessEvent = new(1, "Access");

    /// <summary>The access line, one per request (its state by hand: <see cref="AccessLine"/>).</summary>
    public static void Access(ILogger logger, string method, string path, int status, string forward,
        string upstream, int attempts, double durationMs, long bytes, string outcome, string requestId, string group, string model, string client)
    {
        if (logger.IsEnabled(LogLevel.Information))
        {
            logger.Log(LogLevel.Information, AccessEvent,
                new AccessLine(method, path, status, forward, upstream, attempts, durationMs, bytes, outcome, requestId, group, model, client),
                null, AccessLine.Format);
        }
    }

    [LoggerMessage(EventId = 2, EventName = "Listening", Level = LogLevel.Information,
        Message = "ready: {Kind} {Name} listening on http://{Endpoint}")]
    public static partial void Listening(ILogger logger, string kind, string name, string endpoint);

    [LoggerMessage(EventId = 3, EventName = "AttemptFailed", Level = LogLevel.Warning,
        Message = "upstream attempt failed: group={Group} upstream={Upstream} error={Error} status={Status} request_id={RequestId}")]
    public static partial void AttemptFailed(ILogger logger, string group, string upstream, string error, int status, string requestId);

    [LoggerMessage(EventId = 4, EventName = "BreakerStateChanged", Level = LogLevel.Warning,
        Message = "circuit breaker {Upstream}: {From} -> {To}")]
    public static partial void BreakerStateChanged(ILogger logger, string upstream, string from, string to);

    [LoggerMessage(EventId = 74, EventName = "RequestTooLargeForKey", Level = LogLevel.Information,
        Message = "upstream {Upstream} answered 429 for a request larger than its whole limit: not parked")]
    public static partial void RequestTooLargeForKey(ILogger logger, string upstream);

    [LoggerMessage(EventId = 5, EventName = "CoolingDown", Level = LogLevel.Warning,
        Message = "upstream {Upstream} answered 429: parked for {Milliseconds} ms")]
    public static partial void CoolingDown(ILogger logger, string upstream, long milliseconds);

    [LoggerMessage(EventId = 45, EventName = "KeyDisabled", Level = LogLevel.Warning,
        Message = "upstream {Upstream} key disabled: {Reason}")]
    public static partial void KeyDisabled(ILogger logger, string upstream, string reason);

    [LoggerMessage(EventId = 46, EventName = "KeyEnabled", Level = LogLevel.Warning,
        Message = "upstream {Upstream} key enabled again after a successful trial")]
    public static partial void KeyEnabled(ILogger logger, string upstream);

    [LoggerMessage(EventId = 60, EventName = "AdminAction", Level = LogLevel.Warning,
        Message = "admin {Action} {Target} by {Client}: {Result}")]
    public static partial void AdminAction(ILogger logger, string action, string target, string client, string result);

    [LoggerMessage(EventId = 61, EventName = "AdminUnauthorized", Level = LogLevel.Warning,
        Message = "admin request refused from {Client}: {Reason} ({Occurrences} refused since the last such line)")]
    public static partial void AdminUnauthorized(ILogger logger, string client, string reason, long occurrences);

    [LoggerMessage(EventId = 6, EventName = "ShuttingDown", Level = LogLevel.Information,
        Message = "shutting down: draining in-flight requests for up to {TimeoutMs} ms")]
    public static partial void ShuttingDown(ILogger logger, long timeoutMs);

    [LoggerMessage(EventId = 7, EventName = "Stopped", Level = LogLevel.Information, Message = "stopped")]
    public static partial void Stopped(ILogger logger);

    [LoggerMessage(EventId = 8, EventName = "UnhandledRequestError", Level = LogLevel.Error,
        Message = "unexpected error while proxying request_id={RequestId}")]
    public static partial void UnhandledRequestError(ILogger logger, Exception exception, string requestId);

    [LoggerMessage(EventId = 9, EventName = "Rejected", Level = LogLevel.Debug,
        Message = "request rejected: forward={Forward} reason={Reason} request_id={RequestId}")]
    public static partial void Rejected(ILogger logger, string forward, string reason, string requestId);

    [LoggerMessage(EventId = 10, EventName = "Starting", Level = LogLevel.Information,
        Message = "llmproxy {Version} starting: {Forwards} forward(s), {Groups} group(s), {Upstreams} upstream(s)")]
    public static partial void Starting(ILogger logger, string version, int forwards, int groups, int upstreams);

    [LoggerMessage(EventId = 12, EventName = "Reloaded", Level = LogLevel.Information,
        Message = "configuration reloaded: {Upstreams} upstream(s), {Groups} group(s)")]
    public static partial void Reloaded(ILogger logger, int upstreams, int groups);

    [LoggerMessage(EventId = 13, EventName = "ReloadRejected", Level = LogLevel.Error,
        Message = "configuration not reloaded, still running the previous one: {Reason}")]
    public static partial void ReloadRejected(ILogger logger, string reason);

    [LoggerMessage(EventId = 15, EventName = "ReloadSuperseded", Level = LogLevel.Information,
        Message = "configuration read by a reload not applied: a reload asked for later has already applied the file as it is now")]
    public static partial void ReloadSuperseded(ILogger logger);

    [LoggerMessage(EventId = 14, EventName = "Retired", Level = LogLevel.Debug,
        Message = "previous configuration retired: its requests have ended")]
    public static partial void Retired(ILogger logger);

    [LoggerMessage(EventId = 20, EventName = "Unsendable", Level = LogLevel.Warning,
        Message = "request could not be sent as received (client's fault, no upstream verdict): upstream={Upstream} cause={Cause} request_id={RequestId}")]
    public static partial void Unsendable(ILogger logger, string upstream, string cause, string requestId);

    [LoggerMessage(EventId = 21, EventName = "UnsendableDetail", Level = LogLevel.Debug,
        Message = "why the request could not be sent: request_id={RequestId}")]
    public static partial void UnsendableDetail(ILogger logger, Exception exception, string requestId);

    [LoggerMessage(EventId = 48, EventName = "ShortOfDescriptors", Level = LogLevel.Warning,
        Message = "no file descriptor or socket buffer for a new upstream connection (this process's shortage, no upstream verdict): 503 proxy_overloaded upstream={Upstream} request_id={RequestId}; raise the open-file limit")]
    public static partial void ShortOfDescriptors(ILogger logger, string upstream, string requestId);
    // 40-49: clients that stall and connections beyond the cap (ids kept apart from the rest to ease merges).
    [LoggerMessage(EventId = 40, EventName = "ClientStoppedReading", Level = LogLevel.Information,
        Message = "client stopped reading the response: no progress for {TimeoutMs} ms (timeout.write), connection cut forward={Forward} request_id={RequestId}")]
    public static partial void ClientStoppedReading(ILogger logger, string forward, long timeoutMs, string requestId);

    [LoggerMessage(EventId = 41, EventName = "ClientStoppedSending", Level = LogLevel.Information,
        Message = "client stopped sending the request body: no data for {TimeoutMs} ms (timeout.read), {Action} forward={Forward} request_id={RequestId}")]
    public static partial void ClientStoppedSending(ILogger logger, string forward, long timeoutMs, string action, string requestId);

    [LoggerMessage(EventId = 42, EventName = "ConnectionsRefused", Level = LogLevel.Warning,
        Message = "forward {Forward} has {Max} connections open (maxConnections): refused {Refused} new connection(s) since the last such line")]
    public static partial void ConnectionsRefused(ILogger logger, string forward, int max, long refused);

    [LoggerMessage(EventId = 43, EventName = "AcceptPaused", Level = LogLevel.Warning,
        Message = "cannot accept connections ({Error}: out of file descriptors or socket buffers): pausing accepts for {PauseMs} ms, {Pauses} pause(s) since the last such line; raise the open-file limit or lower maxConnections")]
    public static partial void AcceptPaused(ILogger logger, string error, long pauseMs, long pauses);

    [LoggerMessage(EventId = 44, EventName = "OpenFileLimitLow", Level = LogLevel.Warning,
        Message = "open-file limit {Limit} is below the {Needed} descriptors the connection caps allow (maxConnections of every forward, maxPerHost per upstream host, {Reserve} for the rest): forward connections will be closed unanswered from descriptor {Ceiling} on, to keep room for upstream connections, admin and the runtime; raise it (docker run --ulimit nofile=65536:65536, systemd LimitNOFILE=65536) or lower maxConnections")]
    public static partial void OpenFileLimitLow(ILogger logger, long limit, long needed, int reserve, long ceiling);

    [LoggerMessage(EventId = 47, EventName = "ConnectionsShed", Level = LogLevel.Warning,
        Message = "file descriptors short: a connection on the {Listener} listener was accepted as descriptor {Descriptor}, at or above the ceiling {Ceiling} that keeps room for upstream connections, admin and the runtime; closed {Shed} new connection(s) unanswered since the last such line; raise the open-file limit or lower maxConnections")]
    public static partial void ConnectionsShed(ILogger logger, string listener, long descriptor, long ceiling, long shed);

    [LoggerMessage(EventId = 49, EventName = "CleartextHttp2Unavailable", Level = LogLevel.Warning,
        Message = "this ASP.NET Core runtime gives no way to choose HTTP/2 on a cleartext connection: forwards serve HTTP/1.1 only, and a client that opens with the HTTP/2 preface (h2c prior knowledge) is refused")]
    public static partial void CleartextHttp2Unavailable(ILogger logger);

    [LoggerMessage(EventId = 70, EventName = "ClusterRedisDown", Level = LogLevel.Warning,
        Message = "cluster: redis {Redis} unavailable ({Reason}); limits, cool-downs and key health are decided on this instance's own state until it answers again")]
    public static partial void ClusterRedisDown(ILogger logger, string redis, string reason);

    [LoggerMessage(EventId = 71, EventName = "ClusterRedisUp", Level = LogLevel.Information,
        Message = "cluster: redis {Redis} {What}")]
    public static partial void ClusterRedisUp(ILogger logger, string redis, string what);

    [LoggerMessage(EventId = 72, EventName = "ClusterRedisError", Level = LogLevel.Warning,
        Message = "cluster: redis {Redis} answered {Count} command(s) with an error ({Reason}, the latest) since the last such line; each was decided on this instance's own state, and Redis stays in use")]
    public static partial void ClusterRedisError(ILogger logger, string redis, string reason, long count);

    [LoggerMessage(EventId = 73, EventName = "UpstreamResetElsewhere", Level = LogLevel.Information,
        Message = "upstream {Upstream} reset by an operator on another instance: its cool-down and learned headroom end here too")]
    public static partial void UpstreamResetElsewhere(ILogger logger, string upstream);
}
