using System.Diagnostics;
using LLMProxy.Observability;
using LLMProxy.Runtime;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Logging;
using Yarp.ReverseProxy.Forwarder;

namespace LLMProxy.Forwarding;

/// <summary>
/// Runs one forward's requests through its stages (<see cref="ForwardRuntime.Stages"/>) on the runtime snapshot the
/// request started with, answers the outcome when it is the proxy's own error, and accounts for every request in
/// metrics and one access line. The one boundary catch maps surprises to 502.
/// </summary>
internal sealed class ForwardHandler
{
    private readonly RuntimeHolder _holder;
    private readonly int _forwardIndex;
    private readonly PipelineServices _services;
    private readonly ILogger _logger;
    private readonly ClientStreams _clientStreams;

    /// <param name="forwardIndex">This forward's position in every runtime's <see cref="ProxyRuntime.Forwards"/>
    /// (a reload never changes the set of listeners).</param>
    public ForwardHandler(RuntimeHolder holder, int forwardIndex, IHttpForwarder forwarder, TimeProvider time, ILogger logger)
    {
        _holder = holder;
        _forwardIndex = forwardIndex;
        _logger = logger;
        _services = new PipelineServices(forwarder, time, logger);
        // Timeouts and the body limit are listener settings, which a reload never changes.
        _clientStreams = new ClientStreams(holder.Current.Forwards[forwardIndex].Config, time, logger, holder.Current.Metrics);
    }

    public async Task HandleAsync(HttpContext context)
    {
        var started = Stopwatch.GetTimestamp();
        var runtime = _holder.Current;
        var forward = runtime.Forwards[_forwardIndex];
        var requestId = RequestIds.FromOrNew(context.Request.Headers[ForwardingHeaders.RequestId]);
        var counting = _clientStreams.Wrap(context, requestId);
        using var request = new RequestContext(context, forward, _services, requestId, counting);
        forward.Metrics.Active.Inc();
        runtime.RequestStarted();
        // An HTTP/2 connection's requests keep it from being closed as idle (Hosting/CleartextHttp2).
        var http2 = HttpProtocol.IsHttp2(context.Request.Protocol) ? context.Features.Get<Hosting.Http2Activity>() : null;
        http2?.Begin();
        try
        {
            var stages = forward.Stages;
            for (var i = 0; i < stages.Length && await stages[i].RunAsync(request).ConfigureAwait(false); i++)
            {
            }
            if (request.Outcome.Info().IsProxyError && !context.Response.HasStarted)
            {
                await ProxyErrors.WriteAsync(context, request.Outcome, request.RetryAfter, requestId).ConfigureAwait(false);
            }
        }
        catch (Exception ex) when (ex is OperationCanceledException && context.RequestAborted.IsCancellationRequested)
        {
            request.Outcome = RequestOutcome.ClientAborted;
        }
        catch (Exception ex)
        {
            // The one boundary for surprises: answer 502 if we still can, otherwise abort the stream.
            Log.UnhandledRequestError(_logger, ex, requestId);
            request.Outcome = RequestOutcome.InternalError;
            if (!context.Response.HasStarted)
            {
                await ProxyErrors.WriteAsync(context, RequestOutcome.InternalError, requestId: requestId).ConfigureAwait(false);
            }
            else
            {
                context.Abort();
            }
        }
        finally
        {
            if (request.ClientTokens is not null)
            {
                Stages.AuthorizeClientStage.Settle(request);
            }
            forward.Metrics.Active.Dec();
            runtime.RequestEnded();
            http2?.End();
            Account(request, started, counting);
        }
    }

    /// <summary>The client's model, bounded and on one field: at most 64 characters, control characters and spaces escaped.</summary>
    private static string ModelForLog(string? model)
    {
        if (model is null)
        {
            return "-";
        }
        const int Max = 64;
        return LogText.Escape(model.Length > Max ? model[..Max] : model).Replace(" ", "\\x20", StringComparison.Ordinal);
    }

    private void Account(RequestContext request, long started, CountingStream counting)
    {
        var bytesWritten = counting.Written;
        var context = request.Http;
        var elapsed = Stopwatch.GetElapsedTime(started);
        var outcome = request.Outcome;
        var status = outcome == RequestOutcome.ClientAborted ? Outcomes.ClientClosedRequest : context.Response.StatusCode;
        var metrics = request.Forward.Metrics;
        if (request.ClientKey is { } key)
        {
            key.Requests.Record(context.Request.Method, status, elapsed.TotalSeconds);
        }
        else
        {
            metrics.RecordRequest(context.Request.Method, status, elapsed.TotalSeconds);
        }
        // A chunked body declares no length: what was read of it is its size.
        metrics.RequestSize.Observe(context.Request.ContentLength ?? counting.RequestBody?.BytesRead ?? 0);
        metrics.ResponseSize.Observe(bytesWritten);
        if (_logger.IsEnabled(LogLevel.Information))
        {
            // The path only (a query string may carry a key), percent-encoded as on the wire: Kestrel has decoded
            // it, and a decoded %0D%0A or %20status=200 must not start a line or forge a field. No copy when
            // nothing needs encoding.
            Log.Access(_logger, context.Request.Method, context.Request.Path.HasValue ? context.Request.Path.ToUriComponent() : "/", status,
                request.Forward.Name, request.UpstreamName ?? "-", request.Attempts, elapsed.TotalMilliseconds, bytesWritten, outcome.Label(),
                request.RequestId, request.Group.Name, ModelForLog(request.Facts.Model), request.ClientKey?.Name ?? "-");
        }
    }
}
