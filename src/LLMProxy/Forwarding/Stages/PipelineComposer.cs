using LLMProxy.Runtime;

namespace LLMProxy.Forwarding.Stages;

/// <summary>Composes a forward's stages once, when its config is compiled: a stage a forward does not need (no trusted
/// proxies, no client limit, nothing that reads or replays a body) is not in its pipeline at all.</summary>
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
            stages.Add(new AdmitClientStage(limiter, forward.Metrics));
        }
        stages.Add(new ScreenStage(forward.Config.MaxRequestBodySize));
        if (forward.DefaultGroup.MaxAttempts > 1)
        {
            stages.Add(ReadBodyStage.Instance);
        }
        stages.Add(AttemptStage.Instance);
        return [.. stages];
    }
}
