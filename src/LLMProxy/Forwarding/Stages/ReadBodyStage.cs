using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features;

namespace LLMProxy.Forwarding.Stages;

/// <summary>
/// Buffers a request body of known length up to <see cref="ReplayLimit"/> once, so every attempt can send it again
/// and later stages can read it; a larger or chunked body streams to a single attempt. In every pipeline, but a forward
/// that neither retries nor routes by body (<see cref="Runtime.ForwardRuntime.BuffersBodies"/> false) buffers only
/// JSON requests to a <c>/completions</c> path, whose facts say whether to add include_usage (SPEC §13.2): one pooled
/// copy of a body the size of a prompt, next to a generation that takes seconds.
/// </summary>
internal sealed class ReadBodyStage : IRequestStage
{
    /// <summary>Request bodies up to this size are kept so a failed attempt can be replayed elsewhere.</summary>
    public const int ReplayLimit = 4 * 1024 * 1024;

    public static readonly ReadBodyStage Instance = new();

    public ValueTask<bool> RunAsync(RequestContext request)
    {
        var http = request.Http;
        if (!request.Forward.BuffersBodies && !IncludeUsage.MayApply(http.Request.Path.Value, http.Request.ContentType))
        {
            return ValueTask.FromResult(true);
        }
        var declared = http.Request.ContentLength;
        var hasBody = http.Features.Get<IHttpRequestBodyDetectionFeature>()?.CanHaveBody ?? declared > 0;
        if (!hasBody)
        {
            request.Replayable = true;
            return ValueTask.FromResult(true);
        }
        if (declared is not (> 0 and <= ReplayLimit))
        {
            return ValueTask.FromResult(true);
        }
        return ReadAsync(request, (int)declared.Value);
    }

    private static async ValueTask<bool> ReadAsync(RequestContext request, int length)
    {
        var http = request.Http;
        var buffer = request.RentBody(length);
        try
        {
            var read = await http.Request.Body.ReadAtLeastAsync(buffer, length, throwOnEndOfStream: false, http.RequestAborted).ConfigureAwait(false);
            if (read == length)
            {
                request.Replayable = true;
                return true;
            }
            // The body ended before its Content-Length: the client went away mid-upload.
            return request.Stop(RequestOutcome.ClientAborted);
        }
        catch (BadHttpRequestException bad)
        {
            return request.Stop(FailureClassifier.ForBadBody(http, bad).Outcome);
        }
        catch (Exception ex) when (ex is OperationCanceledException or IOException)
        {
            return request.Stop(RequestOutcome.ClientAborted);
        }
    }
}
