using LLMProxy.Runtime;

namespace LLMProxy.Forwarding.Stages;

/// <summary>
/// Chooses the group (SPEC §12): the first route whose path prefix and/or model glob matches, else the forward's
/// default group; counted in <c>llmproxy_route_requests_total</c>. In the pipeline only when the forward has routes.
/// </summary>
internal sealed class RouteStage(ForwardRuntime forward) : IRequestStage
{
    public ValueTask<bool> RunAsync(RequestContext request)
    {
        var index = forward.Routes.Select(request.Http.Request.Path.Value ?? "/", request.Facts.Model);
        if (index >= 0)
        {
            request.Group = forward.RouteGroups[index];
            request.Route = index;
        }
        forward.RouteCounters[index >= 0 ? index : forward.RouteGroups.Length].Inc();
        return ValueTask.FromResult(true);
    }
}
