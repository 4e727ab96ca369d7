using LLMProxy.Configuration;
using LLMProxy.Resilience;
using Microsoft.Extensions.Time.Testing;

namespace LLMProxy.Tests.Resilience;

public class CircuitBreakerTests
{
    private static readonly BreakerConfig Options = new()
    {
        Threshold = 0.5,
        Cooldown = 30_000,
        MaxRequests = 3,
        Interval = 10_000,
        MinRequests = 10,
    };

    private readonly FakeTimeProvider _time = new();
    private readonly List<(CircuitState From, CircuitState To)> _events = [];

    private CircuitBreaker Create(BreakerConfig? options = null)
    {
        var breaker = new CircuitBreaker(options ?? Options, _time);
        breaker.StateChanged += (from, to) => _events.Add((from, to));
        return breaker;
    }

    private static void Record(CircuitBreaker breaker, int successes, int failures)
    {
        for (int i = 0; i < successes; i++)
        {
            Assert.True(breaker.TryAcquire());
            breaker.RecordSuccess();
        }

        for (int i = 0; i < failures; i++)
        {
            Assert.True(breaker.TryAcquire());
            breaker.RecordFailure();
        }
    }

    private CircuitBreaker CreateOpen()
    {
        CircuitBreaker breaker = Create();
        Record(breaker, 0, 10);
        Assert.Equal(CircuitState.Open, breaker.State);
        return breaker;
    }

    private CircuitBreaker CreateHalfOpen()
    {
        CircuitBreaker breaker = CreateOpen();
        _time.Advance(TimeSpan.FromMilliseconds(Options.Cooldown));
        Assert.Equal(CircuitState.HalfOpen, breaker.State);
        return breaker;
    }

    [Fact]
    public void New_Closed_AvailableNoRetryAt()
    {
        CircuitBreaker breaker = Create();
        Assert.Equal(CircuitState.Closed, breaker.State);
        Assert.True(breaker.IsAvailable);
        Assert.Null(breaker.RetryAt);
        Assert.Empty(_events);
    }

    [Fact]
    public void RecordFailure_AllFailuresBelowMinRequests_StaysClosed()
    {
        CircuitBreaker breaker = Create();
        Record(breaker, 0, 9);
        Assert.Equal(CircuitState.Closed, breaker.State);
        Assert.True(breaker.IsAvailable);
        Assert.Empty(_events);
    }

    [Fact]
    public void RecordFailure_RatioReachesThresholdAtMinRequests_Opens()
    {
        CircuitBreaker breaker = Create();
        Record(breaker, 5, 4);
        Assert.Equal(CircuitState.Closed, breaker.State);
        Record(breaker, 0, 1); // 5 failures / 10 requests = 0.5
        Assert.Equal(CircuitState.Open, breaker.State);
        Assert.Equal([(CircuitState.Closed, CircuitState.Open)], _events);
    }

    [Fact]
    public void RecordFailure_RatioBelowThreshold_StaysClosed()
    {
        CircuitBreaker breaker = Create();
        Record(breaker, 6, 4); // 0.4 < 0.5
        Record(breaker, 2, 0);
        Assert.Equal(CircuitState.Closed, breaker.State);
    }

    [Fact]
    public void RecordSuccess_LastOutcomeSuccessDoesNotOpen_NextFailureAtThresholdDoes()
    {
        CircuitBreaker breaker = Create(Options with { Threshold = 0.3 });
        Record(breaker, 7, 2); // 2/9
        Record(breaker, 1, 0); // 2/10
        Assert.Equal(CircuitState.Closed, breaker.State);
        Record(breaker, 0, 1); // 3/11 < 0.3
        Assert.Equal(CircuitState.Closed, breaker.State);
        Record(breaker, 0, 1); // 4/12 ≥ 0.3
        Assert.Equal(CircuitState.Open, breaker.State);
    }

    [Fact]
    public void Open_BeforeCooldown_RejectsAndReportsRetryAt()
    {
        DateTimeOffset openedAt = _time.GetUtcNow();
        CircuitBreaker breaker = CreateOpen();
        Assert.False(breaker.IsAvailable);
        Assert.False(breaker.TryAcquire());
        Assert.Equal(openedAt + TimeSpan.FromSeconds(30), breaker.RetryAt);

        _time.Advance(TimeSpan.FromMilliseconds(29_999));
        Assert.False(breaker.IsAvailable);
        Assert.False(breaker.TryAcquire());
        Assert.Equal(CircuitState.Open, breaker.State);
        Assert.Equal(openedAt + TimeSpan.FromSeconds(30), breaker.RetryAt);
    }

    [Fact]
    public void Open_CooldownElapsed_AvailableAndLazilyHalfOpen()
    {
        CircuitBreaker breaker = CreateOpen();
        _time.Advance(TimeSpan.FromSeconds(30));
        Assert.True(breaker.IsAvailable);
        Assert.Equal(CircuitState.HalfOpen, breaker.State);
        Assert.Null(breaker.RetryAt);
        Assert.Equal([(CircuitState.Closed, CircuitState.Open), (CircuitState.Open, CircuitState.HalfOpen)], _events);
    }

    [Fact]
    public void TryAcquire_OpenCooldownElapsed_TransitionsAndTakesTrialSlot()
    {
        CircuitBreaker breaker = CreateOpen();
        _time.Advance(TimeSpan.FromSeconds(31));
        Assert.True(breaker.TryAcquire());
        Assert.Equal(CircuitState.HalfOpen, breaker.State);
        Assert.Equal((CircuitState.Open, CircuitState.HalfOpen), _events[^1]);
    }

    [Fact]
    public void HalfOpen_AdmitsExactlyMaxRequests()
    {
        CircuitBreaker breaker = CreateHalfOpen();
        Assert.True(breaker.TryAcquire());
        Assert.True(breaker.TryAcquire());
        Assert.True(breaker.IsAvailable);
        Assert.True(breaker.TryAcquire());
        Assert.False(breaker.IsAvailable);
        Assert.False(breaker.TryAcquire());
        Assert.Equal(CircuitState.HalfOpen, breaker.State);
    }

    [Fact]
    public void HalfOpen_SlotNotReturnedBySuccess_TotalTrialsBoundedByMaxRequests()
    {
        CircuitBreaker breaker = CreateHalfOpen();
        Assert.True(breaker.TryAcquire());
        breaker.RecordSuccess();
        Assert.True(breaker.TryAcquire());
        breaker.RecordSuccess();
        Assert.True(breaker.TryAcquire());
        Assert.False(breaker.TryAcquire());
        Assert.Equal(CircuitState.HalfOpen, breaker.State);
    }

    [Fact]
    public void HalfOpen_MaxRequestsConsecutiveSuccesses_Closes()
    {
        CircuitBreaker breaker = CreateHalfOpen();
        for (int i = 0; i < 3; i++)
        {
            Assert.True(breaker.TryAcquire());
        }

        breaker.RecordSuccess();
        breaker.RecordSuccess();
        Assert.Equal(CircuitState.HalfOpen, breaker.State);
        breaker.RecordSuccess();
        Assert.Equal(CircuitState.Closed, breaker.State);
        Assert.True(breaker.IsAvailable);
        Assert.Null(breaker.RetryAt);
        Assert.Equal((CircuitState.HalfOpen, CircuitState.Closed), _events[^1]);
    }

    [Fact]
    public void HalfOpen_Closed_StartsWithAFreshWindow()
    {
        CircuitBreaker breaker = CreateHalfOpen();
        Record(breaker, 3, 0);
        Assert.Equal(CircuitState.Closed, breaker.State);
        Record(breaker, 0, 9); // the 10 failures that opened it are forgotten
        Assert.Equal(CircuitState.Closed, breaker.State);
        Record(breaker, 0, 1);
        Assert.Equal(CircuitState.Open, breaker.State);
    }

    [Fact]
    public void HalfOpen_OneFailure_ReopensWithNewRetryAt()
    {
        CircuitBreaker breaker = CreateHalfOpen();
        DateTimeOffset reopenedAt = _time.GetUtcNow();
        Assert.True(breaker.TryAcquire());
        Assert.True(breaker.TryAcquire());
        breaker.RecordSuccess();
        breaker.RecordFailure();
        Assert.Equal(CircuitState.Open, breaker.State);
        Assert.False(breaker.TryAcquire());
        Assert.Equal(reopenedAt + TimeSpan.FromSeconds(30), breaker.RetryAt);
        Assert.Equal((CircuitState.HalfOpen, CircuitState.Open), _events[^1]);
    }

    [Fact]
    public void HalfOpen_ReopenedThenCooledAgain_AdmitsFreshTrials()
    {
        CircuitBreaker breaker = CreateHalfOpen();
        Assert.True(breaker.TryAcquire());
        breaker.RecordFailure();
        _time.Advance(TimeSpan.FromSeconds(30));
        for (int i = 0; i < 3; i++)
        {
            Assert.True(breaker.TryAcquire());
        }

        Assert.False(breaker.TryAcquire());
    }

    [Fact]
    public void Release_HalfOpen_FreesSlotWithoutCounting()
    {
        CircuitBreaker breaker = CreateHalfOpen();
        for (int i = 0; i < 3; i++)
        {
            Assert.True(breaker.TryAcquire());
        }

        Assert.False(breaker.IsAvailable);
        breaker.Release();
        Assert.True(breaker.IsAvailable);
        Assert.True(breaker.TryAcquire());
        Assert.False(breaker.TryAcquire());
        breaker.RecordSuccess();
        breaker.RecordSuccess();
        Assert.Equal(CircuitState.HalfOpen, breaker.State); // the released one did not count as a success
        breaker.RecordSuccess();
        Assert.Equal(CircuitState.Closed, breaker.State);
    }

    [Fact]
    public void Release_Closed_CountsNothing()
    {
        CircuitBreaker breaker = Create();
        for (int i = 0; i < 20; i++)
        {
            Assert.True(breaker.TryAcquire());
            breaker.Release();
        }

        Record(breaker, 0, 9); // had the releases counted as requests, 9/29 would not matter; 9 < minRequests
        Assert.Equal(CircuitState.Closed, breaker.State);
        Record(breaker, 0, 1);
        Assert.Equal(CircuitState.Open, breaker.State);
    }

    [Fact]
    public void Window_IntervalElapsed_CountsReset()
    {
        CircuitBreaker breaker = Create();
        Record(breaker, 0, 9);
        _time.Advance(TimeSpan.FromMilliseconds(10_000));
        Record(breaker, 0, 1); // new window: 1 request
        Assert.Equal(CircuitState.Closed, breaker.State);
        Record(breaker, 0, 8);
        Assert.Equal(CircuitState.Closed, breaker.State);
        Record(breaker, 0, 1);
        Assert.Equal(CircuitState.Open, breaker.State);
    }

    [Fact]
    public void Window_JustBeforeInterval_CountsKept()
    {
        CircuitBreaker breaker = Create();
        Record(breaker, 0, 9);
        _time.Advance(TimeSpan.FromMilliseconds(9_999));
        Record(breaker, 0, 1);
        Assert.Equal(CircuitState.Open, breaker.State);
    }

    [Fact]
    public void Window_StartsAtFirstOutcomeAfterExpiry()
    {
        CircuitBreaker breaker = Create();
        Record(breaker, 1, 0);                      // window 1 starts at t=0
        _time.Advance(TimeSpan.FromSeconds(25));    // idle
        Record(breaker, 0, 5);                      // window 2 starts at t=25 s
        _time.Advance(TimeSpan.FromSeconds(9));     // t=34 s, still window 2
        Record(breaker, 0, 5);
        Assert.Equal(CircuitState.Open, breaker.State);
    }

    [Fact]
    public void Window_SuccessesDiluteFailures_RatioIsPerWindow()
    {
        CircuitBreaker breaker = Create();
        Record(breaker, 100, 0);
        _time.Advance(TimeSpan.FromSeconds(10));
        Record(breaker, 5, 5); // the 100 old successes no longer dilute
        Assert.Equal(CircuitState.Open, breaker.State);
    }

    [Fact]
    public void RecordOutcome_WhileOpen_Ignored()
    {
        CircuitBreaker breaker = CreateOpen();
        breaker.RecordFailure();
        breaker.RecordSuccess();
        breaker.Release();
        Assert.Equal(CircuitState.Open, breaker.State);
        Assert.Single(_events);
    }

    [Fact]
    public void RecordSuccess_StaleInHalfOpenWithNoTrialOutstanding_Ignored()
    {
        CircuitBreaker breaker = CreateHalfOpen();
        for (int i = 0; i < 5; i++)
        {
            breaker.RecordSuccess(); // late completions of requests acquired while closed
        }

        Assert.Equal(CircuitState.HalfOpen, breaker.State);
        breaker.RecordFailure();
        Assert.Equal(CircuitState.HalfOpen, breaker.State);
    }

    [Fact]
    public void StateChanged_FullCycle_RaisesEachTransitionOnce()
    {
        CircuitBreaker breaker = CreateHalfOpen();
        Record(breaker, 3, 0);
        Assert.Equal(
            [
                (CircuitState.Closed, CircuitState.Open),
                (CircuitState.Open, CircuitState.HalfOpen),
                (CircuitState.HalfOpen, CircuitState.Closed),
            ],
            _events);
    }

    [Fact]
    public void StateChanged_HandlerCallsBack_NoDeadlock()
    {
        var breaker = new CircuitBreaker(Options, _time);
        var seen = new List<CircuitState>();
        breaker.StateChanged += (_, _) => seen.Add(breaker.State);
        Record(breaker, 0, 10);
        Assert.Equal([CircuitState.Open], seen);
    }

    [Fact]
    public void MaxRequestsOne_SingleProbeDecides()
    {
        CircuitBreaker breaker = Create(Options with { MaxRequests = 1 });
        Record(breaker, 0, 10);
        _time.Advance(TimeSpan.FromSeconds(30));
        Assert.True(breaker.TryAcquire());
        Assert.False(breaker.TryAcquire());
        breaker.RecordSuccess();
        Assert.Equal(CircuitState.Closed, breaker.State);
    }

    [Fact]
    public void Concurrent_HalfOpenAcquires_ExactlyMaxRequestsWin()
    {
        var breaker = new CircuitBreaker(Options with { MaxRequests = 7 }, _time);
        Record(breaker, 0, 10);
        _time.Advance(TimeSpan.FromSeconds(30));
        int acquired = 0;
        Parallel.For(0, 1000, new ParallelOptions { MaxDegreeOfParallelism = 4 }, _ =>
        {
            if (breaker.TryAcquire())
            {
                Interlocked.Increment(ref acquired);
            }
        });
        Assert.Equal(7, acquired);
    }

    [Fact]
    public void Concurrent_ClosedFailures_OpensExactlyOnce()
    {
        var breaker = new CircuitBreaker(Options, _time);
        int opened = 0;
        breaker.StateChanged += (_, to) =>
        {
            if (to == CircuitState.Open)
            {
                Interlocked.Increment(ref opened);
            }
        };
        Parallel.For(0, 1000, new ParallelOptions { MaxDegreeOfParallelism = 4 }, _ =>
        {
            if (breaker.TryAcquire())
            {
                breaker.RecordFailure();
            }
        });
        Assert.Equal(1, opened);
        Assert.Equal(CircuitState.Open, breaker.State);
    }

    [Fact]
    public void HalfOpen_SuccessesOfRequestsAcquiredWhileClosed_DoNotCloseIt_TheTrialsDo()
    {
        CircuitBreaker breaker = Create();
        var streams = new int[3];
        for (var i = 0; i < streams.Length; i++)
        {
            Assert.True(breaker.TryAcquire(out streams[i])); // long streams, still running when the breaker opens
            Assert.Equal(0, streams[i]);
        }
        Record(breaker, 0, 10);
        _time.Advance(TimeSpan.FromMilliseconds(Options.Cooldown));
        var trials = new int[3];
        for (var i = 0; i < trials.Length; i++)
        {
            Assert.True(breaker.TryAcquire(out trials[i]));
        }

        foreach (var stream in streams)
        {
            breaker.RecordSuccess(stream);
        }
        Assert.Equal(CircuitState.HalfOpen, breaker.State); // three old successes, no trial answered yet
        Assert.False(breaker.IsAvailable);
        breaker.RecordFailure(streams[0]);
        Assert.Equal(CircuitState.HalfOpen, breaker.State); // nor does an old failure reopen it

        foreach (var trial in trials)
        {
            breaker.RecordSuccess(trial);
        }
        Assert.Equal(CircuitState.Closed, breaker.State);
    }

    [Fact]
    public void HalfOpen_ReleaseOfARequestAcquiredWhileClosed_FreesNoTrialSlot()
    {
        CircuitBreaker breaker = Create(Options with { MaxRequests = 1 });
        Assert.True(breaker.TryAcquire(out var old));
        Record(breaker, 0, 10);
        _time.Advance(TimeSpan.FromMilliseconds(Options.Cooldown));
        Assert.True(breaker.TryAcquire(out var trial));

        breaker.Release(old);

        Assert.False(breaker.TryAcquire()); // the one trial is still out
        breaker.Release(trial);
        Assert.True(breaker.TryAcquire());
    }

    [Fact]
    public void HalfOpen_OutcomeOfATrialOfAnEarlierPeriod_CountsNothing()
    {
        CircuitBreaker breaker = Create(Options with { MaxRequests = 2 });
        Record(breaker, 0, 10);
        _time.Advance(TimeSpan.FromMilliseconds(Options.Cooldown));
        Assert.True(breaker.TryAcquire(out var slow));   // a trial that takes long
        Assert.True(breaker.TryAcquire(out var failing));
        breaker.RecordFailure(failing);                   // reopens
        _time.Advance(TimeSpan.FromMilliseconds(Options.Cooldown));
        Assert.True(breaker.TryAcquire(out var fresh));
        Assert.NotEqual(slow, fresh);

        breaker.RecordSuccess(slow);                      // from the first half-open period
        Assert.True(breaker.TryAcquire(out var fresh2));
        breaker.RecordSuccess(fresh);
        Assert.Equal(CircuitState.HalfOpen, breaker.State); // one success of this period out of two
        breaker.RecordSuccess(fresh2);
        Assert.Equal(CircuitState.Closed, breaker.State);
    }
}
