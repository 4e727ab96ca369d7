using System.Buffers;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features;

namespace LLMProxy.Forwarding.Stages;

/// <summary>
/// Buffers a request body up to <see cref="ReplayLimit"/> once, so every attempt can send it again and later stages can
/// read it; a larger body streams to a single attempt. A body of unknown length (HTTP/1.1 chunked, HTTP/2 without
/// content-length) is read up to the limit: whole, it is buffered like any other; longer, what was read goes first and
/// the rest streams behind it. In every pipeline, but a forward
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
        if (declared is > ReplayLimit)
        {
            return ValueTask.FromResult(true);
        }
        return ReadAsync(request, (int?)declared);
    }

    /// <summary>The first buffer; it doubles as the body arrives, so memory follows the bytes received, not the length
    /// a client declares (an HTTP/2 connection's 100 streams each declaring 4 MiB and sending nothing pinned 400 MiB).</summary>
    private const int FirstBuffer = 16 * 1024;

    /// <param name="declared">The Content-Length, or null for a body of unknown length (read up to the limit, then one
    /// byte more tells whether it ended there).</param>
    private static async ValueTask<bool> ReadAsync(RequestContext request, int? declared)
    {
        var http = request.Http;
        var body = http.Request.Body;
        var cap = declared ?? ReplayLimit;
        var buffer = ArrayPool<byte>.Shared.Rent(Math.Max(1, Math.Min(cap, FirstBuffer)));
        var filled = 0;
        try
        {
            while (filled < cap)
            {
                if (filled == buffer.Length)
                {
                    var larger = ArrayPool<byte>.Shared.Rent(Math.Min(buffer.Length * 2, cap));
                    buffer.AsSpan(0, filled).CopyTo(larger);
                    ArrayPool<byte>.Shared.Return(buffer);
                    buffer = larger;
                }
                var read = await body.ReadAsync(buffer.AsMemory(filled, Math.Min(buffer.Length, cap) - filled), http.RequestAborted)
                    .ConfigureAwait(false);
                if (read == 0)
                {
                    if (declared is not null)
                    {
                        // The body ended before its Content-Length: the client went away mid-upload.
                        ArrayPool<byte>.Shared.Return(buffer);
                        return request.Stop(RequestOutcome.ClientAborted);
                    }
                    break;
                }
                filled += read;
            }
            if (declared is null && filled == ReplayLimit)
            {
                var probe = new byte[1]; // only for bodies of unknown length that reach the limit
                if (await body.ReadAsync(probe, http.RequestAborted).ConfigureAwait(false) == 1)
                {
                    // Over the limit: one attempt, sending what was read and then the rest as it comes.
                    request.AdoptBodyPrefix(buffer);
                    http.Request.Body = new PrefixedStream(buffer, filled, new PrefixedStream(probe, 1, body));
                    return true;
                }
            }
            request.AdoptBody(buffer, filled);
            request.Replayable = true;
            return true;
        }
        catch (Exception ex) when (ex is BadHttpRequestException or OperationCanceledException or IOException)
        {
            ArrayPool<byte>.Shared.Return(buffer);
            return request.Stop(ex is BadHttpRequestException bad ? FailureClassifier.ForBadBody(http, bad).Outcome : RequestOutcome.ClientAborted);
        }
    }
}
