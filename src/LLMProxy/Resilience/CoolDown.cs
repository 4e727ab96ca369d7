namespace LLMProxy.Resilience;

/// <summary>
/// A deadline before which an upstream receives no traffic: the 429 account cool-down (SPEC §5), and the cluster's
/// "shared budget empty" block. Lock-free: the deadline is one long (UTC ticks) updated with compare-and-swap; reads are
/// a single volatile load, and the clock is not read for one never parked.
/// </summary>
internal sealed class CoolDown
{
    private readonly TimeProvider _time;
    private long _untilUtcTicks; // 0 = never parked

    public CoolDown(TimeProvider time)
    {
        ArgumentNullException.ThrowIfNull(time);
        _time = time;
    }

    public bool IsCooling => Volatile.Read(ref _untilUtcTicks) is var until && until != 0 && _time.GetUtcNow().UtcTicks < until;

    /// <summary>End of the active cool-down, or null when not cooling.</summary>
    public DateTimeOffset? Until
    {
        get
        {
            long until = Volatile.Read(ref _untilUtcTicks);
            return _time.GetUtcNow().UtcTicks < until ? new DateTimeOffset(until, TimeSpan.Zero) : null;
        }
    }

    /// <summary>Ends any cool-down at once (the operator's reset).</summary>
    public void Clear() => Volatile.Write(ref _untilUtcTicks, 0);

    /// <summary>Cools down for <paramref name="duration"/> from now; extends, never shortens, an active cool-down.</summary>
    public void Park(TimeSpan duration)
    {
        if (duration <= TimeSpan.Zero)
        {
            return;
        }

        long target = _time.GetUtcNow().UtcTicks + duration.Ticks;
        long current = Volatile.Read(ref _untilUtcTicks);
        while (current < target)
        {
            long seen = Interlocked.CompareExchange(ref _untilUtcTicks, target, current);
            if (seen == current)
            {
                return;
            }

            current = seen;
        }
    }
}
