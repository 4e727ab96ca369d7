using System.Collections.Concurrent;
using System.Net;
using LLMProxy.Configuration;

namespace LLMProxy.RateLimiting;

/// <summary>
/// Forward-level rate limit (SPEC §3.3): one <see cref="TokenBucketLimiter"/> per client IP (<c>perSecond</c> refill,
/// <c>burst</c> size), with memory bounded under a flood of distinct IPs.
/// <para>
/// Why not <c>PartitionedRateLimiter.Create</c>: it does evict partitions whose <c>IdleDuration</c> exceeds 10 s (checked:
/// it honours our fake-time IdleDuration), but only from an internal 100 ms real-time timer, so eviction cannot be tested
/// with fake time; it has no hard cap, so a flood of distinct IPs within 10 s grows it without bound; and every acquire
/// takes one global lock around its dictionary. Instead:
/// </para>
/// <list type="bullet">
/// <item>a <see cref="ConcurrentDictionary{TKey,TValue}"/> of buckets; the hot path is a lock-free lookup plus one CAS;</item>
/// <item>a <see cref="TimeProvider"/> timer sweeps every <see cref="SweepInterval"/> and removes buckets that have been
/// full for at least <see cref="IdleLimit"/> (a full bucket is the same as no bucket, so removal loses nothing);</item>
/// <item>a hard cap on tracked clients: at the cap a new client first triggers an emergency sweep of every full bucket
/// (at most once per <see cref="EmergencySweepInterval"/>), and if that frees nothing it is charged to one shared
/// overflow bucket — the flood shares one client's allowance instead of growing memory or bypassing the limit.</item>
/// </list>
/// A bucket removed by a sweep at the very moment a request takes from it loses that one token (the client's next
/// request gets a fresh, full bucket); the window is a few instructions wide and only ever favours the client by one token.
/// </summary>
internal sealed class ClientRateLimiter : IDisposable
{
    /// <summary>Buckets full for this long are evicted by the periodic sweep (as System.Threading.RateLimiting does).</summary>
    public static readonly TimeSpan IdleLimit = TimeSpan.FromSeconds(10);

    /// <summary>Period of the idle sweep.</summary>
    public static readonly TimeSpan SweepInterval = TimeSpan.FromSeconds(1);

    /// <summary>Minimum time between two emergency sweeps triggered by the cap.</summary>
    public static readonly TimeSpan EmergencySweepInterval = TimeSpan.FromMilliseconds(100);

    /// <summary>Default hard cap on tracked clients (≈ 100 bytes each, so ~10 MB at the cap).</summary>
    public const int DefaultMaxTrackedClients = 100_000;

    private readonly ConcurrentDictionary<IPAddress, TokenBucketLimiter> _buckets = new();
    private readonly TimeProvider _time;
    private readonly double _perSecond;
    private readonly int _burst;
    private readonly int _maxTrackedClients;
    private readonly long _emergencyIntervalTicks;
    private readonly TokenBucketLimiter _overflow;
    private readonly ITimer _sweepTimer;
    private int _count;
    private long _lastEmergencySweep;

    /// <param name="options">Forward <c>ratelimit</c>: perSecond (default 100), burst (default 200).</param>
    /// <param name="time">Clock for the buckets and the sweep timer.</param>
    /// <param name="maxTrackedClients">Hard cap on distinct clients tracked at once (default 100 000).</param>
    public ClientRateLimiter(RateLimitConfig options, TimeProvider time, int maxTrackedClients = DefaultMaxTrackedClients)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(time);
        ArgumentOutOfRangeException.ThrowIfLessThan(options.PerSecond, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(maxTrackedClients, 1);
        _time = time;
        _perSecond = options.PerSecond;
        _burst = Math.Max(1, options.Burst);
        _maxTrackedClients = maxTrackedClients;
        _emergencyIntervalTicks = (long)(EmergencySweepInterval.TotalSeconds * time.TimestampFrequency);
        _lastEmergencySweep = time.GetTimestamp() - _emergencyIntervalTicks;
        _overflow = new TokenBucketLimiter(_perSecond, _burst, time);
        _sweepTimer = time.CreateTimer(static state => ((ClientRateLimiter)state!).Sweep(IdleLimit), this, SweepInterval, SweepInterval);
    }

    /// <summary>Clients with a bucket right now.</summary>
    public int TrackedClients => Volatile.Read(ref _count);

    /// <summary>Hard cap on <see cref="TrackedClients"/>.</summary>
    public int MaxTrackedClients => _maxTrackedClients;

    /// <summary>
    /// Takes one token from <paramref name="client"/>'s bucket. False means answer 429 with
    /// <paramref name="retryAfter"/> (time until the next token). Pass the resolved, normalized client address
    /// (<see cref="ClientIpResolver.Resolve"/>). Allocation-free for a known client.
    /// </summary>
    public bool TryAcquire(IPAddress client, out TimeSpan retryAfter)
    {
        ArgumentNullException.ThrowIfNull(client);
        if (_buckets.TryGetValue(client, out TokenBucketLimiter? bucket))
        {
            return bucket.TryTake(out retryAfter);
        }

        return AcquireNew(client, out retryAfter);
    }

    /// <summary>Removes buckets that have been full for at least <paramref name="idleFor"/>; returns how many.</summary>
    internal int Sweep(TimeSpan idleFor)
    {
        int removed = 0;
        foreach (KeyValuePair<IPAddress, TokenBucketLimiter> entry in _buckets)
        {
            if (entry.Value.IdleDuration is { } idle && idle >= idleFor && _buckets.TryRemove(entry))
            {
                Interlocked.Decrement(ref _count);
                removed++;
            }
        }

        return removed;
    }

    public void Dispose()
    {
        _sweepTimer.Dispose();
        _buckets.Clear();
        Volatile.Write(ref _count, 0);
    }

    private bool AcquireNew(IPAddress client, out TimeSpan retryAfter)
    {
        if (!TryReserveSlot() && !(TryEmergencySweep() && TryReserveSlot()))
        {
            return _overflow.TryTake(out retryAfter);
        }

        var fresh = new TokenBucketLimiter(_perSecond, _burst, _time);
        TokenBucketLimiter bucket = _buckets.GetOrAdd(client, fresh);
        if (!ReferenceEquals(bucket, fresh))
        {
            Interlocked.Decrement(ref _count); // another request added this client first
        }

        return bucket.TryTake(out retryAfter);
    }

    private bool TryReserveSlot()
    {
        if (Interlocked.Increment(ref _count) <= _maxTrackedClients)
        {
            return true;
        }

        Interlocked.Decrement(ref _count);
        return false;
    }

    /// <summary>At the cap: drop every full bucket (lossless), at most once per <see cref="EmergencySweepInterval"/>.</summary>
    private bool TryEmergencySweep()
    {
        long now = _time.GetTimestamp();
        long last = Volatile.Read(ref _lastEmergencySweep);
        if (now - last < _emergencyIntervalTicks || Interlocked.CompareExchange(ref _lastEmergencySweep, now, last) != last)
        {
            return false;
        }

        return Sweep(TimeSpan.Zero) > 0;
    }
}
