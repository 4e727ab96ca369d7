using System.Threading.RateLimiting;
using LLMProxy.Observability;

namespace LLMProxy.Runtime;

/// <summary>
/// What one attempt reserved on one upstream — a breaker trial slot, a rate-limit token, an in-flight count, a TPM
/// token reservation — as
/// one object: acquired by <see cref="UpstreamRuntime.TryLease"/>, released by <see cref="Dispose"/>, which also hands
/// the breaker the attempt's <see cref="Verdict"/>. A lease disposed without a verdict is neutral, so no code path
/// between acquire and release (an exception included) can leak a half-open trial slot or an in-flight count.
/// </summary>
internal sealed class UpstreamLease : IDisposable
{
    private int _disposed;

    private readonly RateLimitLease? _tokens;
    private long _reserved;
    private long _sharedReserved; // TPM tokens reserved on the cluster (SPEC §17), settled or refunded like _reserved

    internal UpstreamLease(UpstreamRuntime upstream, int index, MemberMetrics metrics, RateLimitLease? tokens, long reservedTokens = 0)
    {
        _tokens = tokens;
        _reserved = reservedTokens;
        Upstream = upstream;
        Index = index;
        Metrics = metrics;
    }

    public UpstreamRuntime Upstream { get; }
    /// <summary>The member's position in its group.</summary>
    public int Index { get; }
    /// <summary>The member's metrics in its group.</summary>
    public MemberMetrics Metrics { get; }
    public AttemptVerdict Verdict { get; private set; }
    /// <summary>This attempt is the single trial of a disabled key (SPEC §13.4).</summary>
    public bool IsTrial { get; init; }
    /// <summary>The breaker's half-open period this attempt is a trial of (0: admitted while closed).</summary>
    public int BreakerTrial { get; init; }
    private int _trialEnded;

    /// <summary>Settles the key-health side of the attempt once an answer arrived: <paramref name="badKey"/> (a reason)
    /// disables the key, or restarts its wait when this was its trial; a trial answered 2xx enables it, any other
    /// answer keeps it out. A lease disposed without this (a transport failure, an abort) counts as a failed trial.
    /// A trial whose request did not carry the key's credentials alone (<paramref name="ownCredentials"/> false: a
    /// client's own key went along) says nothing of the key: it is handed back unjudged, for the next request.</summary>
    public void KeyAnswer(int status, string? badKey, bool ownCredentials)
    {
        var trial = IsTrial && Interlocked.Exchange(ref _trialEnded, 1) == 0;
        if (badKey is not null)
        {
            Upstream.Disable(badKey, trial);
        }
        else if (trial && ownCredentials)
        {
            Upstream.EndTrial(status is >= 200 and < 300);
        }
        else if (trial)
        {
            Upstream.ReturnTrial();
        }
    }

    /// <summary>Records what the attempt says about the upstream; the last verdict recorded counts.</summary>
    public void Record(AttemptVerdict verdict) => Verdict = verdict;

    /// <summary>LLM tokens reserved on the upstream's TPM budget and not settled yet (0 without one).</summary>
    public long ReservedTokens => Interlocked.Read(ref _reserved);

    /// <summary>LLM tokens reserved on the cluster's shared TPM budget and not settled yet.</summary>
    public long SharedReservedTokens => Interlocked.Read(ref _sharedReserved);

    /// <summary>Records the cluster's TPM reservation for this attempt, settled and refunded with the local one.</summary>
    internal void ReserveShared(long reserved) => Interlocked.Exchange(ref _sharedReserved, reserved);

    /// <summary>Settles the TPM reservation to the real usage (the bucket returns the surplus or takes the
    /// shortfall), or — <paramref name="used"/> null — keeps the estimate as spent (an answer that reported no usage).
    /// A lease disposed without settling refunds the whole reservation: the attempt failed or was aborted.</summary>
    public void SettleTokens(long? used)
    {
        var reserved = Interlocked.Exchange(ref _reserved, 0);
        if (Upstream.Tpm is { } tpm && used is { } u)
        {
            tpm.Settle(reserved, Math.Max(0, u));
        }
        var shared = Interlocked.Exchange(ref _sharedReserved, 0);
        if (shared > 0 && used is { } real)
        {
            Upstream.Shared?.Settle(shared, Math.Max(0, real));
        }
    }

    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) == 0)
        {
            Metrics.InFlight.Dec();
            _tokens?.Dispose();
            if (Interlocked.Exchange(ref _reserved, 0) is > 0 and var reserved)
            {
                Upstream.Tpm?.Refund(reserved);
            }
            if (Interlocked.Exchange(ref _sharedReserved, 0) is > 0 and var shared)
            {
                Upstream.Shared?.Settle(shared, 0);
            }
            Upstream.Release(Verdict, BreakerTrial);
            if (IsTrial && Interlocked.Exchange(ref _trialEnded, 1) == 0)
            {
                Upstream.EndTrial(success: false);
            }
        }
    }
}

/// <summary>What one attempt says about its upstream: the breaker's input.</summary>
internal enum AttemptVerdict
{
    /// <summary>No verdict: the attempt ended for reasons that are not the upstream's (client left, 429, a request
    /// the proxy could not send). Also what a lease disposed without a verdict records.</summary>
    Neutral,
    Success,
    Failure,
}
