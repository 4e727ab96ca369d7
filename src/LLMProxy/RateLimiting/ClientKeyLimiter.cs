using LLMProxy.Configuration;

namespace LLMProxy.RateLimiting;

/// <summary>
/// The limits of one client key (SPEC §15): a request bucket (<c>ratelimit</c>) and a per-minute token budget
/// (<c>tokensPerMinute</c>, reserve-then-settle like an upstream's). This instance's own state, which decides alone while
/// Redis is away; with <c>cluster.redis</c> the cluster's bucket and budget of the key are taken on top, with the first
/// attempt's admission (<see cref="ClientTokenLease"/>). <see cref="ClientKeyLimiter"/> is the implementation.
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
/// <para>With <c>cluster.redis</c> (SPEC §17) the key's budget is also one on the cluster: the same tokens are reserved
/// there with the first attempt's admission (<see cref="SharedPending"/>, then <see cref="ReservedShared"/>) and
/// settled or refunded there with the local reservation. While Redis is away nothing is reserved there, and the local
/// budget alone decides — as an upstream's <c>tokensPerMinute</c> does.</para>
/// </summary>
internal sealed class ClientTokenLease : IDisposable
{
    private readonly IClientKeyLimiter _limiter;
    private readonly Cluster.SharedBudget? _shared;
    private long _reserved;
    private long _sharedPending; // to reserve on the cluster with the first admission; 0 once asked
    private long _sharedReserved;

    private ClientTokenLease(IClientKeyLimiter limiter, long reserved, Cluster.SharedBudget? shared)
    {
        _limiter = limiter;
        _reserved = reserved;
        _shared = shared;
        _sharedPending = shared is null ? 0 : reserved;
    }

    /// <summary>Reserves <paramref name="tokens"/>: a lease (null when nothing needed reserving: no budget, no tokens), or
    /// <paramref name="refused"/> true with <paramref name="retryAfter"/> when the budget cannot cover them.</summary>
    /// <param name="shared">The key's budget on the cluster, reserved from later (with the admission), or null.</param>
    public static ClientTokenLease? TryTake(IClientKeyLimiter limiter, long tokens, out bool refused, out TimeSpan retryAfter,
        Cluster.SharedBudget? shared = null)
    {
        var reserved = limiter.TryReserve(tokens, out retryAfter);
        refused = reserved < 0;
        return reserved > 0 ? new ClientTokenLease(limiter, reserved, shared) : null;
    }

    /// <summary>Tokens reserved and not settled yet.</summary>
    public long Reserved => Interlocked.Read(ref _reserved);

    /// <summary>What the next admission must reserve on the cluster: the local reservation, on the key's shared budget;
    /// null without one, or once an admission has answered (<see cref="ReservedShared"/>).</summary>
    public Cluster.SharedBudgetTake? SharedPending =>
        _shared is not null && Interlocked.Read(ref _sharedPending) is > 0 and var tokens ? new Cluster.SharedBudgetTake(_shared, tokens) : null;

    /// <summary>Tokens reserved on the cluster and not settled yet.</summary>
    public long SharedReserved => Interlocked.Read(ref _sharedReserved);

    /// <summary>Records what the first admission reserved on the cluster (0 when Redis was away: the local budget alone
    /// then stands for this request); later attempts reserve nothing more. A lease already settled refunds it at once.</summary>
    public void ReservedShared(long tokens)
    {
        Interlocked.Exchange(ref _sharedPending, 0);
        if (tokens > 0)
        {
            Interlocked.Exchange(ref _sharedReserved, tokens);
            if (Interlocked.Read(ref _reserved) == 0)
            {
                SettleShared(0); // ended meanwhile: never leaked
            }
        }
    }

    /// <summary>Replaces the reservation by <paramref name="used"/> (null = keep the estimate as spent), here and on the
    /// cluster. Once.</summary>
    public void Settle(long? used)
    {
        Interlocked.Exchange(ref _sharedPending, 0);
        var reserved = Interlocked.Exchange(ref _reserved, 0);
        if (reserved > 0)
        {
            _limiter.Settle(reserved, used is { } u ? Math.Max(0, u) : reserved);
        }
        SettleShared(used);
    }

    private void SettleShared(long? used)
    {
        var shared = Interlocked.Exchange(ref _sharedReserved, 0);
        if (shared > 0)
        {
            _shared!.Settle(shared, used is { } u ? Math.Max(0, u) : shared);
        }
    }

    /// <summary>Refunds the reservation if it was not settled.</summary>
    public void Dispose() => Settle(0);
}
