using LLMProxy.Configuration;

namespace LLMProxy.Resilience;

/// <summary>
/// Circuit breaker for one upstream (SPEC §5), shared by every group and forward that uses the upstream.
/// <list type="bullet">
/// <item>Closed: every request passes. Outcomes are counted in a fixed window that starts at the first outcome
/// recorded after the previous window expired and lasts <c>interval</c> ms (interval ≤ 0: never reset, as gobreaker).
/// When, within the window, requests ≥ <c>minRequests</c> and failures/requests ≥ <c>threshold</c>, it opens.</item>
/// <item>Open: rejects for <c>cooldown</c> ms, then turns half-open lazily (on the next read or acquire; no timer).</item>
/// <item>Half-open: admits at most <c>maxRequests</c> trial requests in total (a slot is returned only by
/// <see cref="Release"/>); <c>maxRequests</c> consecutive successes close it, any failure reopens it.</item>
/// </list>
/// Only outcomes count as requests: <see cref="TryAcquire"/> followed by <see cref="Release"/> leaves no trace.
/// In half-open only the trials of that half-open period count: <see cref="TryAcquire(out int)"/> hands each trial the
/// period's number, and an outcome or release carrying another (a long stream acquired while closed, or a trial of an
/// earlier half-open period) changes nothing there — three old successes cannot close a breaker whose three trials are
/// still out, and an old release cannot free a trial slot. An outcome arriving while open is ignored.
/// Written by hand because Polly's breaker admits a single half-open probe and is shaped around its outcome pipeline.
/// Thread-safe: the closed fast path of <see cref="TryAcquire"/>/<see cref="IsAvailable"/> is a volatile read; everything
/// else takes a small lock. <see cref="StateChanged"/> is raised outside the lock, so handlers may call back in, but two
/// concurrent transitions may reach handlers out of order.
/// </summary>
internal sealed class CircuitBreaker
{
    private readonly TimeProvider _time;
    private readonly double _threshold;
    private readonly int _minRequests;
    private readonly int _maxRequests;
    private readonly long _intervalTicks; // in TimeProvider timestamp units; 0 = never reset
    private readonly long _cooldownTicks;
    private readonly TimeSpan _cooldown;
    private readonly Lock _lock = new();

    private volatile CircuitState _state = CircuitState.Closed;

    // Closed-state window.
    private long _windowStart;
    private bool _windowActive;
    private int _requests;
    private int _failures;

    // Open state.
    private long _openedAt;
    private DateTimeOffset _retryAt;

    // Half-open state.
    private int _period;            // number of the current (or last) half-open period, from 1
    private int _trialsIssued;      // acquired minus released; admission stops at _maxRequests
    private int _trialsOutstanding; // acquired, no outcome or release yet
    private int _successes;         // consecutive

    public CircuitBreaker(BreakerConfig options, TimeProvider time)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(time);
        _time = time;
        _threshold = options.Threshold;
        _minRequests = Math.Max(1, options.MinRequests);
        _maxRequests = Math.Max(1, options.MaxRequests);
        _intervalTicks = ToTimestampTicks(time, Math.Max(0, options.Interval));
        _cooldown = TimeSpan.FromMilliseconds(Math.Max(0, options.Cooldown));
        _cooldownTicks = ToTimestampTicks(time, Math.Max(0, options.Cooldown));
    }

    /// <summary>(from, to) on every transition, raised after the breaker's lock is released.</summary>
    public event Action<CircuitState, CircuitState>? StateChanged;

    /// <summary>Current state; an open breaker whose cooldown has elapsed turns half-open on this read.</summary>
    public CircuitState State
    {
        get
        {
            if (_state != CircuitState.Open)
            {
                return _state;
            }

            Transitions t = default;
            CircuitState state;
            lock (_lock)
            {
                PromoteIfCooledDown(_time.GetTimestamp(), ref t);
                state = _state;
            }

            Raise(t);
            return state;
        }
    }

    /// <summary>Whether <see cref="TryAcquire"/> would succeed now. Does not change state.</summary>
    public bool IsAvailable
    {
        get
        {
            if (_state == CircuitState.Closed)
            {
                return true;
            }

            lock (_lock)
            {
                return _state switch
                {
                    CircuitState.Closed => true,
                    CircuitState.HalfOpen => _trialsIssued < _maxRequests,
                    _ => _time.GetTimestamp() - _openedAt >= _cooldownTicks,
                };
            }
        }
    }

    /// <summary>When the breaker is open: the moment it turns half-open (opened + cooldown); otherwise null.</summary>
    public DateTimeOffset? RetryAt
    {
        get
        {
            if (_state != CircuitState.Open)
            {
                return null;
            }

            lock (_lock)
            {
                return _state == CircuitState.Open ? _retryAt : null;
            }
        }
    }

    /// <summary>
    /// Reserves the right to send one request. Always true when closed; when half-open takes one of the
    /// <c>maxRequests</c> trial slots; when open, false until the cooldown has elapsed.
    /// Every successful acquire must be followed by exactly one of RecordSuccess, RecordFailure or Release.
    /// </summary>
    public bool TryAcquire() => TryAcquire(out _);

    /// <summary>As <see cref="TryAcquire()"/>; <paramref name="trial"/> is the half-open period this request is a trial
    /// of (0 when admitted while closed), to be handed back to <see cref="RecordSuccess(int)"/>,
    /// <see cref="RecordFailure(int)"/> or <see cref="Release(int)"/>.</summary>
    public bool TryAcquire(out int trial)
    {
        trial = 0;
        if (_state == CircuitState.Closed)
        {
            return true;
        }

        Transitions t = default;
        bool acquired;
        lock (_lock)
        {
            PromoteIfCooledDown(_time.GetTimestamp(), ref t);
            switch (_state)
            {
                case CircuitState.Closed:
                    acquired = true;
                    break;
                case CircuitState.HalfOpen when _trialsIssued < _maxRequests:
                    _trialsIssued++;
                    _trialsOutstanding++;
                    trial = _period;
                    acquired = true;
                    break;
                default:
                    acquired = false;
                    break;
            }
        }

        Raise(t);
        return acquired;
    }

    /// <summary>Any trial of the current half-open period (for callers that do not keep their acquisition's number).</summary>
    public const int CurrentPeriod = -1;

    /// <summary>The acquired request succeeded (any status other than a breaker failure, 429 included).</summary>
    public void RecordSuccess(int trial = CurrentPeriod)
    {
        Transitions t = default;
        lock (_lock)
        {
            long now = _time.GetTimestamp();
            PromoteIfCooledDown(now, ref t);
            switch (_state)
            {
                case CircuitState.Closed:
                    RollWindow(now);
                    _requests++;
                    break;
                case CircuitState.HalfOpen when IsTrialOfThisPeriod(trial):
                    _trialsOutstanding--;
                    if (++_successes >= _maxRequests)
                    {
                        Close(ref t);
                    }

                    break;
            }
        }

        Raise(t);
    }

    /// <summary>The acquired request failed (connect/TLS error, timeout, reset, 5xx).</summary>
    public void RecordFailure(int trial = CurrentPeriod)
    {
        Transitions t = default;
        lock (_lock)
        {
            long now = _time.GetTimestamp();
            PromoteIfCooledDown(now, ref t);
            switch (_state)
            {
                case CircuitState.Closed:
                    RollWindow(now);
                    _requests++;
                    _failures++;
                    if (_requests >= _minRequests && (double)_failures / _requests >= _threshold)
                    {
                        Open(now, ref t);
                    }

                    break;
                case CircuitState.HalfOpen when IsTrialOfThisPeriod(trial):
                    Open(now, ref t);
                    break;
            }
        }

        Raise(t);
    }

    /// <summary>The acquired request ended without an outcome (e.g. the client cancelled): frees a half-open slot, counts nothing.</summary>
    public void Release(int trial = CurrentPeriod)
    {
        if (_state == CircuitState.Closed)
        {
            return;
        }

        lock (_lock)
        {
            if (_state == CircuitState.HalfOpen && IsTrialOfThisPeriod(trial))
            {
                _trialsOutstanding--;
                _trialsIssued--;
            }
        }
    }

    /// <summary>Closes the breaker at once (the operator's reset): counts cleared, trial slots forgotten. A request
    /// still holding a half-open slot ends as an outcome in the closed state, which is harmless.</summary>
    public void Reset()
    {
        Transitions t = default;
        lock (_lock)
        {
            _trialsIssued = 0;
            _trialsOutstanding = 0;
            _successes = 0;
            if (_state == CircuitState.Closed)
            {
                _windowActive = false;
                _requests = 0;
                _failures = 0;
            }
            else
            {
                Close(ref t);
            }
        }

        Raise(t);
    }

    /// <summary>Requests and failures counted in the current closed-state window (for the admin API; takes the lock).</summary>
    public (int Requests, int Failures) Window
    {
        get
        {
            lock (_lock)
            {
                return _state == CircuitState.Closed && _windowActive
                    && (_intervalTicks <= 0 || _time.GetTimestamp() - _windowStart < _intervalTicks)
                    ? (_requests, _failures)
                    : (0, 0);
            }
        }
    }

    /// <summary>The configured failure ratio that opens the breaker.</summary>
    public double Threshold => _threshold;

    private void RollWindow(long now)
    {
        if (!_windowActive || (_intervalTicks > 0 && now - _windowStart >= _intervalTicks))
        {
            _windowActive = true;
            _windowStart = now;
            _requests = 0;
            _failures = 0;
        }
    }

    private bool IsTrialOfThisPeriod(int trial) => _trialsOutstanding > 0 && (trial == _period || trial == CurrentPeriod);

    private void PromoteIfCooledDown(long now, ref Transitions t)
    {
        if (_state == CircuitState.Open && now - _openedAt >= _cooldownTicks)
        {
            _state = CircuitState.HalfOpen;
            _period++;
            _trialsIssued = 0;
            _trialsOutstanding = 0;
            _successes = 0;
            t.Add(CircuitState.Open, CircuitState.HalfOpen);
        }
    }

    private void Open(long now, ref Transitions t)
    {
        CircuitState from = _state;
        _state = CircuitState.Open;
        _openedAt = now;
        _retryAt = _time.GetUtcNow() + _cooldown;
        _windowActive = false;
        _trialsIssued = 0;
        _trialsOutstanding = 0;
        _successes = 0;
        t.Add(from, CircuitState.Open);
    }

    private void Close(ref Transitions t)
    {
        CircuitState from = _state;
        _state = CircuitState.Closed;
        _windowActive = false; // the next window starts at the first outcome recorded while closed
        _requests = 0;
        _failures = 0;
        t.Add(from, CircuitState.Closed);
    }

    private void Raise(in Transitions t)
    {
        if (t.Count == 0)
        {
            return;
        }

        Action<CircuitState, CircuitState>? handler = StateChanged;
        if (handler is null)
        {
            return;
        }

        handler(t.From1, t.To1);
        if (t.Count > 1)
        {
            handler(t.From2, t.To2);
        }
    }

    private static long ToTimestampTicks(TimeProvider time, int milliseconds) =>
        (long)Math.Ceiling(milliseconds * (time.TimestampFrequency / 1000.0));

    /// <summary>At most two transitions per operation (lazy Open→HalfOpen, then the outcome's), collected without allocation.</summary>
    private struct Transitions
    {
        public int Count;
        public CircuitState From1, To1, From2, To2;

        public void Add(CircuitState from, CircuitState to)
        {
            if (Count == 0)
            {
                (From1, To1) = (from, to);
            }
            else
            {
                (From2, To2) = (from, to);
            }

            Count++;
        }
    }
}
