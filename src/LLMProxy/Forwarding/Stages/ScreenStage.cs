namespace LLMProxy.Forwarding.Stages;

/// <summary>Refuses what the proxy will not or cannot forward (<see cref="RequestScreen"/>) and a declared body over
/// the forward's limit, before anything is read or any upstream is involved.</summary>
internal sealed class ScreenStage(long maxRequestBodySize) : IRequestStage
{
    public ValueTask<bool> RunAsync(RequestContext request)
    {
        var refused = RequestScreen.Check(request.Http);
        if (refused is { } outcome)
        {
            return ValueTask.FromResult(request.Stop(outcome));
        }
        if (request.Http.Request.ContentLength > maxRequestBodySize)
        {
            return ValueTask.FromResult(request.Stop(RequestOutcome.RequestTooLarge));
        }
        return ValueTask.FromResult(true);
    }
}
