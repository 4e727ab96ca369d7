using System.Threading.RateLimiting;
using LLMProxy.Configuration;

namespace LLMProxy.RateLimiting;

/// <summary>
/// Token bucket with lazy refill driven by <see cref="TimeProvider"/> timestamps: no timer, no replenish loop, so it is
/// cheap per instance (one per client IP) and testable with fake time. It starts full.
/// Implemented as GCRA: the whole state is one long, the "theoretical arrival time" (TAT) at which the bucket would be
/// full again; taking n tokens moves TAT n emission intervals forward, and a take is allowed while TAT stays within
/// burst × interval of now. That makes <see cref="TryTake"/> lock-free (one compare-and-swap) and allocation-free.
/// Written by hand because System.Threading.RateLimiting's TokenBucketRateLimiter refills on a real-time timer (or
/// manual TryReplenish calls) and allocates a lease per acquire.
/// </summary>
internal sealed class TokenBucketLimiter : RateLimiter
{
    private static readonly RateLimitLease s_acquired = new Lease(true, null);

    private readonly TimeProvider _time;
    private readonly long _interval; // timestamp ticks per token (≥ 1)
    private readonly long _depth;    // burst × interval
    private readonly int _burst;
    private long _tat;               // bucket is full at and after this timestamp
    private long _successful;
    private long _failed;

    /// <param name="tokensPerSecond">Refill rate, &gt; 0.</param>
    /// <param name="burst">Bucket size, ≥ 1; the bucket starts full.</param>
    /// <param name="time">Clock; <see cref="TimeProvider.System"/> in production.</param>
    public TokenBucketLimiter(double tokensPerSecond, int burst, TimeProvider time)
    {
        ArgumentNullException.ThrowIfNull(time);
        if (!double.IsFinite(tokensPerSecond) || tokensPerSecond <= 0)
        {
            throw new ArgumentOutOfRangeException(nameof(tokensPerSecond), tokensPerSecond, "Must be a positive finite rate.");
        }

        ArgumentOutOfRangeException.ThrowIfLessThan(burst, 1);
        _time = time;
        _burst = burst;
        _interval = (long)Math.Clamp(Math.Round(time.TimestampFrequency / tokensPerSecond), 1, long.MaxValue / 4 / burst);
        _depth = _interval * burst;
        _tat = time.GetTimestamp();
    }

    /// <summary>Upstream limiter for <c>upstreams[].ratelimit</c>: <c>perSecond</c> refill, <c>burst</c> (default perSecond) size.</summary>
    public static TokenBucketLimiter For(UpstreamRateLimitConfig options, TimeProvider time)
    {
        ArgumentNullException.ThrowIfNull(options);
        return new TokenBucketLimiter(options.PerSecond, Math.Max(1, options.EffectiveBurst), time);
    }

    /// <summary>Bucket size.</summary>
    public int Burst => _burst;

    /// <summary>Whether one token is available now (does not take it).</summary>
    public bool HasToken
    {
        get
        {
            long now = _time.GetTimestamp();
            return Math.Max(Volatile.Read(ref _tat), now) + _interval - now <= _depth;
        }
    }

    /// <summary>How long until one token is available (zero when one is available now); takes nothing.</summary>
    public TimeSpan TimeUntilToken
    {
        get
        {
            long now = _time.GetTimestamp();
            long ahead = Math.Max(Volatile.Read(ref _tat), now) + _interval - now;
            return ahead > _depth ? ToTimeSpan(ahead - _depth) : TimeSpan.Zero;
        }
    }

    /// <summary>Whole tokens available now.</summary>
    public int AvailableTokens
    {
        get
        {
            long now = _time.GetTimestamp();
            long used = Math.Max(Volatile.Read(ref _tat), now) - now;
            return (int)((_depth - used) / _interval);
        }
    }

    /// <summary>
    /// Time since the bucket became full, or null while it is not full. Partitioned limiters (and
    /// <see cref="ClientRateLimiter"/>) evict buckets idle beyond a limit: a full bucket is indistinguishable from a new one.
    /// </summary>
    public override TimeSpan? IdleDuration
    {
        get
        {
            long now = _time.GetTimestamp();
            long tat = Volatile.Read(ref _tat);
            return tat <= now ? ToTimeSpan(now - tat) : null;
        }
    }

    /// <summary>
    /// Takes one token if available. On refusal <paramref name="retryAfter"/> is how long until a token will be
    /// available (rounded up to the next TimeSpan tick); on success it is zero. Lock-free and allocation-free.
    /// </summary>
    public bool TryTake(out TimeSpan retryAfter) => TryTake(1, out retryAfter);

    /// <summary>Takes <paramref name="permits"/> tokens (0..burst) atomically, or none.</summary>
    public bool TryTake(int permits, out TimeSpan retryAfter)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(permits);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(permits, _burst);
        long now = _time.GetTimestamp();
        long cost = Math.Max(1, permits) * _interval; // 0 permits: "is one available", taking nothing
        long tat = Volatile.Read(ref _tat);
        while (true)
        {
            long next = Math.Max(tat, now) + cost;
            long ahead = next - now;
            if (ahead > _depth)
            {
                retryAfter = ToTimeSpan(ahead - _depth);
                Interlocked.Increment(ref _failed);
                return false;
            }

            if (permits == 0)
            {
                retryAfter = TimeSpan.Zero;
                return true;
            }

            long seen = Interlocked.CompareExchange(ref _tat, next, tat);
            if (seen == tat)
            {
                retryAfter = TimeSpan.Zero;
                Interlocked.Increment(ref _successful);
                return true;
            }

            tat = seen;
        }
    }

    /// <inheritdoc/>
    public override RateLimiterStatistics GetStatistics() => new()
    {
        CurrentAvailablePermits = AvailableTokens,
        CurrentQueuedCount = 0,
        TotalSuccessfulLeases = Interlocked.Read(ref _successful),
        TotalFailedLeases = Interlocked.Read(ref _failed),
    };

    /// <summary>Success returns a cached lease (no allocation); failure a lease carrying <see cref="MetadataName.RetryAfter"/>.</summary>
    protected override RateLimitLease AttemptAcquireCore(int permitCount) =>
        TryTake(permitCount, out TimeSpan retryAfter) ? s_acquired : new Lease(false, retryAfter);

    /// <summary>No queueing: an immediate attempt, as a proxy must answer 429 rather than hold the request.</summary>
    protected override ValueTask<RateLimitLease> AcquireAsyncCore(int permitCount, CancellationToken cancellationToken)
    {
        if (cancellationToken.IsCancellationRequested)
        {
            return ValueTask.FromCanceled<RateLimitLease>(cancellationToken);
        }

        return ValueTask.FromResult(AttemptAcquireCore(permitCount));
    }

    private TimeSpan ToTimeSpan(long timestampTicks) =>
        TimeSpan.FromTicks((long)Math.Ceiling(timestampTicks * ((double)TimeSpan.TicksPerSecond / _time.TimestampFrequency)));

    private sealed class Lease(bool acquired, TimeSpan? retryAfter) : RateLimitLease
    {
        private static readonly string[] s_retryAfterNames = [MetadataName.RetryAfter.Name];

        public override bool IsAcquired => acquired;

        public override IEnumerable<string> MetadataNames => retryAfter is null ? [] : s_retryAfterNames;

        public override bool TryGetMetadata(string metadataName, out object? metadata)
        {
            if (retryAfter is { } r && metadataName == MetadataName.RetryAfter.Name)
            {
                metadata = r;
                return true;
            }

            metadata = null;
            return false;
        }
    }
}
