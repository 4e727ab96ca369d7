using LLMProxy.Configuration;
using LLMProxy.Observability;
using LLMProxy.Runtime;
using Microsoft.Extensions.Time.Testing;

namespace LLMProxy.Tests.Runtime;

/// <summary>SPEC §13.4 key state on one upstream: which upstreams inject a key, one trial at a time, recheck 0.</summary>
public class KeyHealthTests
{
    private readonly FakeTimeProvider _time = new();
    private readonly MemberMetrics _metrics = new(new ProxyMetrics(includeProcessMetrics: false), "g", "u", "roundrobin");

    private UpstreamRuntime Create(int recheck = 1000, AuthConfig? auth = null, params HeaderOpConfig[] headers) =>
        new(new UpstreamConfig
        {
            Name = "u",
            Url = "http://127.0.0.1:1",
            Auth = auth ?? new AuthConfig { Type = AuthType.Bearer, Token = "sk" },
            Headers = headers,
            Recheck = recheck,
        }, _time);

    [Fact]
    public void InjectsCredentials_AuthOrKeyHeaderInsertReplace_NotRemoveOrOtherHeaders()
    {
        var none = new AuthConfig();
        Assert.True(Create().InjectsCredentials);
        Assert.True(Create(auth: new AuthConfig { Type = AuthType.Basic, Username = "a", Password = "b" }).InjectsCredentials);
        Assert.False(Create(auth: none).InjectsCredentials);
        Assert.True(Create(auth: none, headers: new HeaderOpConfig { Op = HeaderOp.Insert, Key = "X-Api-Key", Value = "k" }).InjectsCredentials);
        Assert.True(Create(auth: none, headers: new HeaderOpConfig { Op = HeaderOp.Replace, Key = "api-key", Value = "k" }).InjectsCredentials);
        Assert.True(Create(auth: none, headers: new HeaderOpConfig { Op = HeaderOp.Replace, Key = "authorization", Value = "Bearer k" }).InjectsCredentials);
        Assert.False(Create(auth: none, headers: new HeaderOpConfig { Op = HeaderOp.Remove, Key = "Authorization" }).InjectsCredentials);
        Assert.False(Create(auth: none, headers: new HeaderOpConfig { Op = HeaderOp.Insert, Key = "OpenAI-Organization", Value = "o" }).InjectsCredentials);
    }

    [Fact]
    public void Disabled_OneTrialAtATime_FailedTrialRestartsTheWait_SuccessEnables()
    {
        var u = Create();
        u.Disable("status_401");
        Assert.Equal(Unavailability.Disabled, u.Check());
        Assert.Null(u.TryLease(0, _metrics));
        Assert.Equal(_time.GetUtcNow() + TimeSpan.FromSeconds(1), u.AvailableAt(_time));

        _time.Advance(TimeSpan.FromMilliseconds(1000));
        Assert.Equal(Unavailability.None, u.Check());
        var trial = u.TryLease(0, _metrics);
        Assert.NotNull(trial);
        Assert.True(trial.IsTrial);
        // The trial is taken: nobody else gets through while it runs.
        Assert.Equal(Unavailability.Disabled, u.Check());
        Assert.Null(u.TryLease(0, _metrics));
        trial.Dispose(); // no answer (a transport failure): a failed trial
        Assert.Equal("status_401", u.Disabled!.Reason);
        Assert.Equal(Unavailability.Disabled, u.Check());

        _time.Advance(TimeSpan.FromMilliseconds(1000));
        using (var second = u.TryLease(0, _metrics)!)
        {
            second.KeyAnswer(200, null, ownCredentials: true);
        }
        Assert.Null(u.Disabled);
        Assert.Equal(Unavailability.None, u.Check());
        using var normal = u.TryLease(0, _metrics)!;
        Assert.False(normal.IsTrial);
    }

    [Fact]
    public void Recheck0_NeverTrials_AndAnswersOfOlderRequestsDoNotEnable()
    {
        var u = Create(recheck: 0);
        var before = u.TryLease(0, _metrics)!;
        u.Disable("insufficient_quota");
        before.KeyAnswer(200, null, ownCredentials: true);
        before.Dispose();
        Assert.NotNull(u.Disabled);
        _time.Advance(TimeSpan.FromDays(1));
        Assert.Equal(Unavailability.Disabled, u.Check());
        Assert.Null(u.TryLease(0, _metrics));
    }
}
