namespace LLMProxy.RateLimiting;

/// <summary>
/// A per-minute budget of LLM tokens (SPEC §13.1 <c>tokensPerMinute</c>): a bucket of <see cref="Capacity"/> tokens
/// that refills continuously at capacity per minute, driven by <see cref="TimeProvider"/> timestamps (lazy, no timer).
/// Reserve-then-settle: <see cref="TryReserve"/> takes an estimate only when the bucket holds it (never into debt, so
/// concurrent reservations cannot overdraw it); <see cref="Settle"/> later returns or takes the difference to the real
/// usage — only real usage may push the bucket below zero, which then delays the next reservations.
/// Written by hand because System.Threading.RateLimiting's limiters cannot give permits back or take them in arrears.
/// A short lock rather than a CAS loop: the level is a double (a 1-token interval at high rates is below one
/// timestamp tick), and the critical sections are a few arithmetic operations.
/// </summary>
internal sealed class TokenBudget
{
    private readonly TimeProvider _time;
    private readonly double _perTick; // tokens refilled per timestamp tick
    private readonly Lock _lock = new();
    private double _level;            // may be negative (debt from real usage), never above capacity
    private long _stamp;              // timestamp _level was computed at

    /// <param name="perMinute">Capacity and refill per minute, ≥ 1; the bucket starts full.</param>
    public TokenBudget(long perMinute, TimeProvider time)
    {
        ArgumentNullException.ThrowIfNull(time);
        ArgumentOutOfRangeException.ThrowIfLessThan(perMinute, 1);
        _time = time;
        Capacity = perMinute;
        _perTick = perMinute / (60.0 * time.TimestampFrequency);
        _level = perMinute;
        _stamp = time.GetTimestamp();
    }

    /// <summary>Bucket size (= tokens per minute).</summary>
    public long Capacity { get; }

    /// <summary>Whole tokens available now (negative while in debt).</summary>
    public long Available
    {
        get
        {
            lock (_lock)
            {
                Refill();
                return (long)Math.Floor(_level);
            }
        }
    }

    /// <summary>What a request asking for <paramref name="tokens"/> must find in the bucket: the request itself, but
    /// never more than the whole bucket — a request larger than a minute's budget waits for a full bucket instead of
    /// being refused forever.</summary>
    public long Need(long tokens) => Math.Clamp(tokens, 0, Capacity);

    /// <summary>Whether <paramref name="tokens"/> (see <see cref="Need"/>) could be reserved now; takes nothing.</summary>
    public bool Covers(long tokens)
    {
        var need = Need(tokens);
        lock (_lock)
        {
            Refill();
            return _level >= need;
        }
    }

    /// <summary>How long until <paramref name="tokens"/> (see <see cref="Need"/>) could be reserved (zero when now).</summary>
    public TimeSpan TimeUntil(long tokens)
    {
        var need = Need(tokens);
        lock (_lock)
        {
            Refill();
            return _level >= need ? TimeSpan.Zero : Ticks((need - _level) / _perTick);
        }
    }

    /// <summary>Takes <paramref name="tokens"/> (see <see cref="Need"/>) if the bucket holds them, or nothing. Returns
    /// the amount taken — what <see cref="Settle"/> or <see cref="Refund"/> must be given back — or -1 when refused.</summary>
    public long TryReserve(long tokens)
    {
        var need = Need(tokens);
        lock (_lock)
        {
            Refill();
            if (_level < need)
            {
                return -1;
            }
            _level -= need;
            return need;
        }
    }

    /// <summary>Replaces a reservation of <paramref name="reserved"/> by the real <paramref name="used"/>: returns the
    /// surplus or takes the shortfall (possibly into debt).</summary>
    public void Settle(long reserved, long used)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(reserved);
        ArgumentOutOfRangeException.ThrowIfNegative(used);
        lock (_lock)
        {
            Refill();
            // Debt is bounded to one minute's budget: a hostile usage block cannot lock a key out for hours.
            _level = Math.Clamp(_level + reserved - used, -Capacity, Capacity);
        }
    }

    /// <summary>Gives a reservation back whole (the attempt failed without usage).</summary>
    public void Refund(long reserved) => Settle(reserved, 0);

    private void Refill()
    {
        var now = _time.GetTimestamp();
        if (now > _stamp)
        {
            _level = Math.Min(Capacity, _level + (now - _stamp) * _perTick);
            _stamp = now;
        }
    }

    private TimeSpan Ticks(double timestampTicks) =>
        TimeSpan.FromTicks((long)Math.Min(Math.Ceiling(timestampTicks * TimeSpan.TicksPerSecond / _time.TimestampFrequency), TimeSpan.MaxValue.Ticks));
}
