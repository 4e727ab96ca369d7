using System.Diagnostics;
using LLMProxy.Runtime;

namespace LLMProxy.Forwarding;

/// <summary>
/// The attempts of one request: which members were tried, and what the current attempt's upstream answered. Written
/// by <see cref="UpstreamTransformer"/> as the answer arrives, read by <see cref="Stages.AttemptStage"/>, which alone
/// decides what happens next.
/// </summary>
internal sealed class Attempt
{
    /// <summary>The lease of the current attempt.</summary>
    public UpstreamLease? Lease { get; private set; }
    private MemberSet _tried;

    /// <summary>Members already tried, or excluded from the start.</summary>
    public ref readonly MemberSet Tried => ref _tried;
    public int Count { get; private set; }
    /// <summary>Whether another attempt may follow this one (attempt budget left and body replayable).</summary>
    public bool MayRetry { get; private set; }

    public int Status { get; set; }
    /// <summary>The answer was held back from the client so the request can be retried elsewhere.</summary>
    public bool Diverted { get; set; }
    /// <summary>The upstream answered something the proxy must not pass on (<see cref="ResponseScreen.IsPassable"/>).</summary>
    public bool ProtocolViolation { get; set; }
    public TimeSpan? RetryAfterHint { get; set; }
    /// <summary>Why the answer says the upstream's key is bad (SPEC §13.4), e.g. <c>status_401</c>; null otherwise.</summary>
    public string? BadKey { get; set; }
    /// <summary>This attempt's request carried the upstream's configured credentials and no client's (SPEC §13.4):
    /// only then is what the answer says about a key — bad, out of quota, its headroom — the proxy's key's.</summary>
    public bool OwnCredentials { get; set; }
    /// <summary>The credential headers the proxy set on this attempt's request (UpstreamTransformer.Credentials bits).</summary>
    public int CredentialsSet { get; set; }
    /// <summary>A 429 answered to a client's own credentials: that client's account is out, not the upstream's — no
    /// cool-down for everyone.</summary>
    public bool ClientsAccount { get; set; }
    /// <summary>A 429 that is about this request, not the key: it needs more than the key's whole limit (the body says
    /// so, or the request's estimate is above a limit the answer's headers announce). No cool-down.</summary>
    public bool RequestTooLarge { get; set; }
    public long Started { get; private set; }
    public double TimeToFirstByteSeconds { get; set; }

    /// <summary>Members never to try for this request (they do not serve its model), as if already tried.</summary>
    public void Exclude(in MemberSet members) => _tried.UnionWith(members);

    public void Begin(UpstreamLease lease, int maxAttempts)
    {
        Lease = lease;
        if (lease.Index >= 0)
        {
            _tried.Add(lease.Index);
        }
        Count++;
        MayRetry = Count < maxAttempts;
        Status = 0;
        Diverted = false;
        ProtocolViolation = false;
        RetryAfterHint = null;
        BadKey = null;
        OwnCredentials = false;
        CredentialsSet = 0;
        ClientsAccount = false;
        RequestTooLarge = false;
        TimeToFirstByteSeconds = 0;
        Started = Stopwatch.GetTimestamp();
    }
}
