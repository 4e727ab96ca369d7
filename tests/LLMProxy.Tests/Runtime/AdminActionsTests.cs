using LLMProxy.Configuration;
using LLMProxy.Observability;
using LLMProxy.Resilience;
using LLMProxy.Runtime;
using Microsoft.Extensions.Time.Testing;

namespace LLMProxy.Tests.Runtime;

/// <summary>The operator's disable / enable / reset on one upstream (SPEC §16) against key health's own state changes.</summary>
public class AdminActionsTests
{
    private readonly FakeTimeProvider _time = new();
    private readonly MemberMetrics _metrics = new(new ProxyMetrics(includeProcessMetrics: false), "g", "u", "roundrobin");

    private UpstreamRuntime Create(int recheck = 1000) => new(new UpstreamConfig
    {
        Name = "u",
        Url = "http://127.0.0.1:1",
        Auth = new AuthConfig { Type = AuthType.Bearer, Token = "sk" },
        Recheck = recheck,
        Breaker = new BreakerConfig { Threshold = 0.5, MinRequests = 1, Cooldown = 60_000 },
    }, _time);

    [Fact]
    public void AdminDisable_DuringAKeyHealthTrial_TrialAnswerNeitherEnablesNorReplacesIt_NoLaterTrial()
    {
        var u = Create();
        u.Disable("status_401");
        _time.Advance(TimeSpan.FromSeconds(1));
        using (var trial = u.TryLease(0, _metrics))
        {
            Assert.NotNull(trial);
            Assert.True(trial.IsTrial);
            u.AdminDisable();
            trial.KeyAnswer(200, null, ownCredentials: true); // the trial succeeded, but the operator's word came later
        }
        Assert.Equal(UpstreamRuntime.AdminReason, u.Disabled?.Reason);

        u.Disable("status_403", trial: true); // key health cannot replace the operator's reason either
        Assert.Equal(UpstreamRuntime.AdminReason, u.Disabled?.Reason);
        _time.Advance(TimeSpan.FromHours(1));
        Assert.Equal(Unavailability.Disabled, u.Check());
        Assert.Null(u.TryLease(0, _metrics));
        Assert.Null(u.AvailableAt(_time));
    }

    [Fact]
    public void AdminEnable_EndsKeyHealthDisable_AndALateFailedTrialDoesNotBringItBack()
    {
        var u = Create();
        u.Disable("insufficient_quota");
        _time.Advance(TimeSpan.FromSeconds(1));
        var trial = u.TryLease(0, _metrics);
        Assert.NotNull(trial);
        u.AdminEnable();
        Assert.Null(u.Disabled);
        trial.Dispose(); // a trial ended without an answer counts as failed: it must not disable the enabled key again
        Assert.Null(u.Disabled);
        Assert.Equal(Unavailability.None, u.Check());
    }

    [Fact]
    public void AdminReset_ClosesBreaker_EndsCoolDown_ForgetsHeadroom_KeepsDisabled()
    {
        var u = Create();
        var transitions = new List<(CircuitState, CircuitState)>();
        u.Breaker!.StateChanged += (from, to) => transitions.Add((from, to));
        using (var lease = u.TryLease(0, _metrics))
        {
            lease!.Record(AttemptVerdict.Failure);
        }
        Assert.Equal(CircuitState.Open, u.Breaker.State);
        u.CoolDown.Park(TimeSpan.FromMinutes(1));
        var headers = new HttpResponseMessage().Headers;
        headers.TryAddWithoutValidation("x-ratelimit-remaining-tokens", "0");
        headers.TryAddWithoutValidation("x-ratelimit-reset-tokens", "5m0s");
        u.Learn(headers);
        Assert.NotNull(u.Learned);
        u.AdminDisable();

        u.AdminReset();

        Assert.Equal(CircuitState.Closed, u.Breaker.State);
        Assert.Equal((CircuitState.Open, CircuitState.Closed), transitions[^1]);
        Assert.Null(u.CoolDown.Until);
        Assert.Null(u.Learned);
        Assert.Equal(UpstreamRuntime.AdminReason, u.Disabled?.Reason);
        u.AdminEnable();
        Assert.Equal(Unavailability.None, u.Check(tokens: 1000));
    }
}
