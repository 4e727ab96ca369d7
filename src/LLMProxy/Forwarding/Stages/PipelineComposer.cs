using LLMProxy.Runtime;

namespace LLMProxy.Forwarding.Stages;

/// <summary>Composes a forward's stages once, when its config is compiled: a stage a forward does not need (no trusted
/// proxies, no client limit, no client keys, no routes) is not in its pipeline at all.</summary>
internal static class PipelineComposer
{
    public static IRequestStage[] Compose(ForwardRuntime forward)
    {
        var stages = new List<IRequestStage>();
        if (forward.IpResolver is { } resolver)
        {
            stages.Add(new IdentifyClientStage(resolver));
        }
        if (forward.Limiter is { } limiter)
        {
            stages.Add(new AdmitClientStage(limiter, forward.Metrics, forward.SharedClients));
        }
        // After the per-IP limit, so guessing keys spends the guesser's own bucket.
        if (forward.ClientKeys is { } keys)
        {
            stages.Add(new AuthenticateClientStage(keys, forward.Metrics));
        }
        stages.Add(new ScreenStage(forward.Config.MaxRequestBodySize));
        // Always: include_usage (SPEC §13.2) reads the facts of completions requests even where nothing else needs a body.
        stages.Add(ReadBodyStage.Instance);
        stages.Add(ReadFactsStage.Instance);
        if (forward.ClientKeys is not null)
        {
            stages.Add(AuthorizeClientStage.Instance);
        }
        if (forward.Routes.Count > 0)
        {
            stages.Add(new RouteStage(forward));
        }
        stages.Add(AttemptStage.Instance);
        return [.. stages];
    }
}
