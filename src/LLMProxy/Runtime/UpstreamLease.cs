using System.Threading.RateLimiting;
using LLMProxy.Observability;

namespace LLMProxy.Runtime;

/// <summary>
/// What one attempt reserved on one upstream — a breaker trial slot, a rate-limit token, an in-flight count — as
/// one object: acquired by <see cref="UpstreamRuntime.TryLease"/>, released by <see cref="Dispose"/>, which also hands
/// the breaker the attempt's <see cref="Verdict"/>. A lease disposed without a verdict is neutral, so no code path
/// between acquire and release (an exception included) can leak a half-open trial slot or an in-flight count.
/// </summary>
internal sealed class UpstreamLease : IDisposable
{
    private int _disposed;

    private readonly RateLimitLease? _tokens;

    internal UpstreamLease(UpstreamRuntime upstream, int index, MemberMetrics metrics, RateLimitLease? tokens)
    {
        _tokens = tokens;
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

    /// <summary>Records what the attempt says about the upstream; the last verdict recorded counts.</summary>
    public void Record(AttemptVerdict verdict) => Verdict = verdict;

    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) == 0)
        {
            Metrics.InFlight.Dec();
            _tokens?.Dispose();
            Upstream.Release(Verdict);
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
