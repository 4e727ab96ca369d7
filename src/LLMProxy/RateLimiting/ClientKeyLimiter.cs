using LLMProxy.Configuration;

namespace LLMProxy.RateLimiting;

/// <summary>
/// The limits of one client key (SPEC §15): a request bucket (<c>ratelimit</c>) and a per-minute token budget
/// (<c>tokensPerMinute</c>, reserve-then-settle like an upstream's). The seam a shared (cluster) store can implement
/// later, as the per-client-IP limiter's; <see cref="ClientKeyLimiter"/> is the local one.
/// </summary>
internal interface IClientKeyLimiter
{
    /// <summary>Whether the key has a <c>tokensPerMinute</c> budget (else <see cref="TryReserve"/> always returns 0).</summary>
    bool HasTokenBudget { get; }

    /// <summary>Takes one request from the key's bucket; false means 429 with <paramref name="retryAfter"/>.</summary>
    bool TryAcquire(out TimeSpan retryAfter);

    /// <summary>Reserves <paramref name="tokens"/> of the key's budget: the amount taken (what <see cref="Settle"/> must be
    /// given), 0 without a budget, or -1 when refused (429 with <paramref name="retryAfter"/>).</summary>
    long TryReserve(long tokens, out TimeSpan retryAfter);

    /// <summary>Replaces a reservation by the real usage (returns the surplus, takes the shortfall).</summary>
    void Settle(long reserved, long used);
}

/// <summary>The in-process <see cref="IClientKeyLimiter"/>: a <see cref="TokenBucketLimiter"/> and a
/// <see cref="TokenBudget"/> on a <see cref="TimeProvider"/>, each only when configured. Holds no timer, so a reload
/// that keeps the key just keeps the object.</summary>
internal sealed class ClientKeyLimiter : IClientKeyLimiter
{
    private readonly TokenBucketLimiter? _requests;

    public ClientKeyLimiter(ClientKeyConfig config, TimeProvider time)
    {
        ArgumentNullException.ThrowIfNull(config);
        ArgumentNullException.ThrowIfNull(time);
        _requests = config.Ratelimit is { } r ? new TokenBucketLimiter(r.PerSecond, Math.Max(1, r.EffectiveBurst), time) : null;
        Tokens = config.TokensPerMinute is { } tpm ? new TokenBudget(tpm, time) : null;
    }

    /// <summary>The token budget, null without <c>tokensPerMinute</c>.</summary>
    public TokenBudget? Tokens { get; }

    public bool HasTokenBudget => Tokens is not null;

    public bool TryAcquire(out TimeSpan retryAfter)
    {
        if (_requests is null)
        {
            retryAfter = TimeSpan.Zero;
            return true;
        }
        return _requests.TryTake(out retryAfter);
    }

    public long TryReserve(long tokens, out TimeSpan retryAfter)
    {
        retryAfter = TimeSpan.Zero;
        if (Tokens is not { } budget || tokens <= 0)
        {
            return 0;
        }
        var taken = budget.TryReserve(tokens);
        if (taken < 0)
        {
            retryAfter = budget.TimeUntil(tokens);
        }
        return taken;
    }

    public void Settle(long reserved, long used) => Tokens?.Settle(reserved, used);
}

/// <summary>
/// One request's reservation on a client key's token budget (STYLE 16: acquire and release are one object): taken by
/// <see cref="TryTake"/>, settled once to the real usage by <see cref="Settle"/>, and refunded whole when disposed
/// unsettled — so no path between the reservation and the end of the request can leak it.
/// </summary>
internal sealed class ClientTokenLease : IDisposable
{
    private readonly IClientKeyLimiter _limiter;
    private long _reserved;

    private ClientTokenLease(IClientKeyLimiter limiter, long reserved)
    {
        _limiter = limiter;
        _reserved = reserved;
    }

    /// <summary>Reserves <paramref name="tokens"/>: a lease (null when nothing needed reserving: no budget, no tokens), or
    /// <paramref name="refused"/> true with <paramref name="retryAfter"/> when the budget cannot cover them.</summary>
    public static ClientTokenLease? TryTake(IClientKeyLimiter limiter, long tokens, out bool refused, out TimeSpan retryAfter)
    {
        var reserved = limiter.TryReserve(tokens, out retryAfter);
        refused = reserved < 0;
        return reserved > 0 ? new ClientTokenLease(limiter, reserved) : null;
    }

    /// <summary>Tokens reserved and not settled yet.</summary>
    public long Reserved => Interlocked.Read(ref _reserved);

    /// <summary>Replaces the reservation by <paramref name="used"/> (null = keep the estimate as spent). Once.</summary>
    public void Settle(long? used)
    {
        var reserved = Interlocked.Exchange(ref _reserved, 0);
        if (reserved > 0)
        {
            _limiter.Settle(reserved, used is { } u ? Math.Max(0, u) : reserved);
        }
    }

    /// <summary>Refunds the reservation if it was not settled.</summary>
    public void Dispose() => Settle(0);
}
