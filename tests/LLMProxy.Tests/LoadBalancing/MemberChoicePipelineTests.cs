using System.Collections.Concurrent;
using System.Net;
using System.Text;
using LLMProxy.Tests.Infrastructure;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Time.Testing;

namespace LLMProxy.Tests.LoadBalancing;

/// <summary>Priorities, least_loaded and prompt-cache affinity (SPEC §13.3, §13.5) through the real pipeline.</summary>
public class MemberChoicePipelineTests
{
    private const string Breaker = "breaker:\n  threshold: 0.5\n  minRequests: 2\n  cooldown: 1000\n  interval: 60000\n  maxRequests: 1";

    /// <summary>Upstreams answering 200 naming themselves, or 500 while their name is in <paramref name="failing"/>.</summary>
    private static Task<Upstreams> Switchable(ConcurrentDictionary<string, bool> failing, params string[] names) =>
        Upstreams.StartAsync([.. names.Select(n => (n, (Func<HttpContext, Task>)(ctx =>
            ScriptedUpstream.Json(n, failing.ContainsKey(n) ? 500 : 200)(ctx))))]);

    private static async Task<string> SendAsync(TestProxy proxy, string? session = null, string? body = null)
    {
        using var request = new HttpRequestMessage(HttpMethod.Post, "/v1/chat/completions")
        {
            Content = new StringContent(body ?? "{\"model\":\"m\"}", Encoding.UTF8, "application/json"),
        };
        if (session is not null)
        {
            request.Headers.Add("x-session-id", session);
        }
        using var response = await proxy.Client.SendAsync(request);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        return response.UpstreamName();
    }

    [Fact]
    public async Task Priorities_PrimaryTierServesAll_BackupOnlyWhileItIsDown_TrafficReturns()
    {
        var failing = new ConcurrentDictionary<string, bool>();
        await using var ups = await Switchable(failing, "backup", "p1", "p2");
        var time = new FakeTimeProvider(DateTimeOffset.UtcNow);
        var members = "- name: backup\n- name: p1\n  priority: 1\n- name: p2\n  priority: 1";
        await using var proxy = await TestProxy.StartAsync(TestProxy.Config(ups.Yaml(_ => Breaker), members), time);

        var normal = new List<string>();
        for (var i = 0; i < 10; i++)
        {
            normal.Add(await SendAsync(proxy));
        }
        Assert.Equal(["p1", "p2"], normal.Distinct().Order());
        Assert.Equal(0, ups["backup"].Count);

        // The primary tier answers 5xx: each request is retried down to the backup, then the breakers open.
        failing["p1"] = failing["p2"] = true;
        for (var i = 0; i < 10; i++)
        {
            Assert.Equal("backup", await SendAsync(proxy));
        }
        var primaryAttempts = ups["p1"].Count + ups["p2"].Count;
        Assert.Equal(10, ups["backup"].Count);
        for (var i = 0; i < 5; i++)
        {
            Assert.Equal("backup", await SendAsync(proxy));
        }
        Assert.Equal(primaryAttempts, ups["p1"].Count + ups["p2"].Count); // breakers open: not even tried

        // Recovered and the cool-down over: the primary tier takes the traffic back.
        failing.Clear();
        time.Advance(TimeSpan.FromMilliseconds(1001));
        var backupBefore = ups["backup"].Count;
        var after = new List<string>();
        for (var i = 0; i < 10; i++)
        {
            after.Add(await SendAsync(proxy));
        }
        Assert.All(after, n => Assert.NotEqual("backup", n));
        Assert.Equal(backupBefore, ups["backup"].Count);
    }

    [Fact]
    public async Task LeastLoaded_SlowUpstreamHoldsRequests_NewOnesGoToTheIdleOne()
    {
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        await using var ups = await Upstreams.StartAsync(
            ("slow", async ctx =>
            {
                await release.Task.WaitAsync(TimeSpan.FromSeconds(20));
                await ScriptedUpstream.Json("slow")(ctx);
            }),
            ("idle", ScriptedUpstream.Json("idle")));
        await using var proxy = await TestProxy.StartAsync(TestProxy.Config(ups.Yaml(), ups.Members(), "balance:\n  strategy: least_loaded"));

        // Both idle: the tie goes to the first member, which then holds the request.
        var held = SendAsync(proxy);
        await Eventually.WaitUntilAsync(() => Task.FromResult(ups["slow"].Count == 1), TimeSpan.FromSeconds(10));

        for (var i = 0; i < 8; i++)
        {
            Assert.Equal("idle", await SendAsync(proxy));
        }
        Assert.Equal(1, ups["slow"].Count);

        release.SetResult();
        Assert.Equal("slow", await held);
        // Nothing in flight any more: ties again, the first member.
        Assert.Equal("slow", await SendAsync(proxy));
    }

    /// <summary>SPEC §13.3: least_loaded breaks ties by the larger learned/declared headroom. With no TPM declared, what
    /// the provider says remains is the headroom: an idle key the provider says is nearly spent must not take every
    /// request only because it is listed first.</summary>
    [Fact]
    public async Task LeastLoaded_EqualLoad_TieGoesToTheKeyTheProviderSaysHasMoreLeft()
    {
        static Func<HttpContext, Task> Answer(string name, int remaining) => ctx =>
        {
            ctx.Response.Headers["x-ratelimit-remaining-tokens"] = remaining.ToString(System.Globalization.CultureInfo.InvariantCulture);
            ctx.Response.Headers["x-ratelimit-reset-tokens"] = "1m";
            return ScriptedUpstream.Json(name)(ctx);
        };
        await using var ups = await Upstreams.StartAsync(("low", Answer("low", 50_000)), ("high", Answer("high", 900_000)));
        await using var proxy = await TestProxy.StartAsync(TestProxy.Config(ups.Yaml(), ups.Members(), "balance:\n  strategy: least_loaded"));

        // Both idle and unknown: the first member; it then says 50,000 tokens remain, the other has said nothing yet.
        Assert.Equal("low", await SendAsync(proxy));
        var next = new List<string>();
        for (var i = 0; i < 6; i++)
        {
            next.Add(await SendAsync(proxy)); // one at a time: every choice is a tie on load
        }
        Assert.All(next, n => Assert.Equal("high", n));
        Assert.Equal(1, ups["low"].Count);
    }

    [Fact]
    public async Task Affinity_SameSessionOneMember_MovesWhenItsBreakerOpens_ReturnsAfterRecovery()
    {
        var failing = new ConcurrentDictionary<string, bool>();
        await using var ups = await Switchable(failing, "a", "b", "c");
        var time = new FakeTimeProvider(DateTimeOffset.UtcNow);
        await using var proxy = await TestProxy.StartAsync(
            TestProxy.Config(ups.Yaml(_ => Breaker), ups.Members(), "affinity:\n  keys: [\"header:x-session-id\", \"body:user\"]"), time);

        var home = await SendAsync(proxy, "conv-1");
        for (var i = 0; i < 9; i++)
        {
            Assert.Equal(home, await SendAsync(proxy, "conv-1"));
        }
        // Without a key the strategy (round robin) decides: every member gets some.
        var keyless = new List<string>();
        for (var i = 0; i < 6; i++)
        {
            keyless.Add(await SendAsync(proxy));
        }
        Assert.Equal(3, keyless.Distinct().Count());

        failing[home] = true;
        var moved = await SendAsync(proxy, "conv-1"); // retried to the next in rendezvous order
        Assert.NotEqual(home, moved);
        // Each of these still tries the home member first (and retries) until its breaker opens.
        for (var i = 0; i < 20; i++)
        {
            Assert.Equal(moved, await SendAsync(proxy, "conv-1"));
        }
        var homeCount = ups[home].Count;
        Assert.Equal(moved, await SendAsync(proxy, "conv-1"));
        Assert.Equal(homeCount, ups[home].Count); // its breaker is open: not tried any more

        failing.Clear();
        time.Advance(TimeSpan.FromMilliseconds(1001));
        for (var i = 0; i < 5; i++)
        {
            Assert.Equal(home, await SendAsync(proxy, "conv-1"));
        }
    }

    [Fact]
    public async Task Affinity_BodyKey_ReadFromFacts_Sticky()
    {
        await using var ups = await Upstreams.StartAsync(
            ("a", ScriptedUpstream.Json("a")), ("b", ScriptedUpstream.Json("b")), ("c", ScriptedUpstream.Json("c")));
        await using var proxy = await TestProxy.StartAsync(
            TestProxy.Config(ups.Yaml(), ups.Members(), "affinity:\n  keys: [\"body:prompt_cache_key\", \"body:metadata.user_id\"]"));

        foreach (var body in new[] { "{\"model\":\"m\",\"prompt_cache_key\":\"pk-7\"}", "{\"metadata\":{\"user_id\":\"u-3\"},\"model\":\"m\"}" })
        {
            var first = await SendAsync(proxy, body: body);
            for (var i = 0; i < 6; i++)
            {
                Assert.Equal(first, await SendAsync(proxy, body: body));
            }
        }
        // Keys spread: 30 different conversations land on more than one member.
        var homes = new HashSet<string>();
        for (var i = 0; i < 30; i++)
        {
            homes.Add(await SendAsync(proxy, body: $"{{\"prompt_cache_key\":\"pk-{i}\"}}"));
        }
        Assert.True(homes.Count > 1);
    }
}
