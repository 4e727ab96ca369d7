namespace LLMProxy.Forwarding.Stages;

/// <summary>
/// One step of a forward's request pipeline, with one job. A forward's stages are composed once when its config is
/// compiled (<see cref="Runtime.ForwardRuntime.Stages"/>) and run in order for every request:
/// identify client → admit → screen → read body → route → attempts. A stage that decides the request sets its
/// outcome (<see cref="RequestContext.Stop"/>) and returns false; the pipeline answers and accounts for it.
/// Stages are shared by every request of the forward: they keep no per-request state.
/// </summary>
internal interface IRequestStage
{
    /// <returns>True to go on with the next stage.</returns>
    ValueTask<bool> RunAsync(RequestContext request);
}
