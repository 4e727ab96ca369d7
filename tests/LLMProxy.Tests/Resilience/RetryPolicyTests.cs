using System.Net;
using LLMProxy.Tests.Infrastructure;
using Microsoft.Extensions.Time.Testing;

namespace LLMProxy.Tests.Resilience;

public class RetryPolicyTests
{
    private static Task<Upstreams> FailingThenGood(int status) =>
        Upstreams.StartAsync(("a", ScriptedUpstream.Json("a", status)), ("b", ScriptedUpstream.Json("b")));

    [Fact]
    public async Task RetryAttemptsOne_FailureGoesStraightToClient()
    {
        await using var ups = await FailingThenGood(500);
        await using var proxy = await TestProxy.StartAsync(TestProxy.Config(ups.Yaml(), ups.Members(), groupExtra: "retry:\n  attempts: 1"));

        using var r = await proxy.Client.GetAsync("/"); // roundrobin starts at "a"

        Assert.Equal(HttpStatusCode.InternalServerError, r.StatusCode);
        Assert.Equal("a", r.UpstreamName());
        Assert.Equal(0, ups["b"].Count);
    }

    [Fact]
    public async Task RetryStatusCodes_OnlyListedStatusesFailOver()
    {
        await using var teapot = await FailingThenGood(418);
        await using var proxy = await TestProxy.StartAsync(TestProxy.Config(teapot.Yaml(), teapot.Members(), groupExtra: "retry:\n  statusCodes: [418]"));
        using (var r = await proxy.Client.GetAsync("/"))
        {
            Assert.Equal("b", r.UpstreamName());
        }

        await using var broken = await FailingThenGood(500);
        await using var proxy2 = await TestProxy.StartAsync(TestProxy.Config(broken.Yaml(), broken.Members(), groupExtra: "retry:\n  statusCodes: [418]"));
        using (var r = await proxy2.Client.GetAsync("/"))
        {
            Assert.Equal(HttpStatusCode.InternalServerError, r.StatusCode);
            Assert.Equal(0, broken["b"].Count);
        }
    }

    [Fact]
    public async Task RetryBackoff_NextAttemptWaitsForTheBackoff()
    {
        var time = new FakeTimeProvider(DateTimeOffset.UtcNow);
        await using var ups = await FailingThenGood(503);
        await using var proxy = await TestProxy.StartAsync(TestProxy.Config(ups.Yaml(), ups.Members(), groupExtra: "retry:\n  backoff: 10000"), time);

        var call = proxy.Client.GetAsync("/");
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(10);
        while (ups["a"].Count == 0)
        {
            Assert.True(DateTime.UtcNow < deadline, "first attempt never reached the upstream");
            await Task.Delay(20);
        }
        await Task.Delay(300); // ample real time: without the backoff "b" would have answered already
        Assert.False(call.IsCompleted);
        Assert.Equal(0, ups["b"].Count);

        time.Advance(TimeSpan.FromSeconds(10));
        using var r = await call.WaitAsync(TimeSpan.FromSeconds(10));
        Assert.Equal("b", r.UpstreamName());
    }
}
