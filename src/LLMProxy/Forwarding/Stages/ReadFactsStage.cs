namespace LLMProxy.Forwarding.Stages;

/// <summary>
/// Reads the request facts (SPEC §11: model, stream, max output tokens, ...) from the buffered body, once, for every
/// later stage. A body that was not buffered or is not JSON has no facts and is forwarded unchanged. In every
/// pipeline: besides routes and members that decide by model, include_usage (SPEC §13.2) needs the facts of every
/// streamed completions request. A body with a top-level key that is <c>model</c> in another letter case gets 400
/// <c>bad_request</c> here, before any stage decides on its model (<see cref="RequestFacts.HasModelVariant"/>).
/// </summary>
internal sealed class ReadFactsStage : IRequestStage
{
    public static readonly ReadFactsStage Instance = new();

    public ValueTask<bool> RunAsync(RequestContext request)
    {
        if (request.Body is { } body)
        {
            request.Facts = RequestFacts.Read(body.AsSpan(0, request.BodyLength));
            if (request.Facts.HasModelVariant)
            {
                // {"model":"allowed","MODEL":"other"}: an upstream that matches names ignoring case would run the other.
                return ValueTask.FromResult(request.Stop(RequestOutcome.AmbiguousModel));
            }
            request.InjectsUsage = IncludeUsage.Applies(request.Http.Request.Path.Value, request.Facts);
        }
        return ValueTask.FromResult(true);
    }
}
