using LLMProxy.RateLimiting;
using LLMProxy.Forwarding;

namespace LLMProxy.Forwarding.Stages;

/// <summary>The client is the TCP peer, unless the peer is a trusted proxy whose X-Forwarded-For names it (SPEC §3.2).
/// Only in the pipeline when the forward trusts some proxy.</summary>
internal sealed class IdentifyClientStage(ClientIpResolver resolver) : IRequestStage
{
    public ValueTask<bool> RunAsync(RequestContext request)
    {
        request.Client = resolver.Resolve(request.Peer, request.Http.Request.Headers[ForwardingHeaders.ForwardedFor].ToString());
        return ValueTask.FromResult(true);
    }
}
