using System.Collections.Concurrent;
using System.Net;
using LLMProxy.Tests.Infrastructure;

namespace LLMProxy.Tests.LoadBalancing;

public class BalancingPipelineTests
{
    private static Task<Upstreams> Three() => Upstreams.StartAsync(
        ("a", ScriptedUpstream.Json("a")), ("b", ScriptedUpstream.Json("b")), ("c", ScriptedUpstream.Json("c")));

    private static string Strategy(string s) => $"balance:\n  strategy: {s}";

    [Fact]
    public async Task RoundRobin_StrictRotation_ExactShares()
    {
        await using var ups = await Three();
        await using var proxy = await TestProxy.StartAsync(TestProxy.Config(ups.Yaml(), ups.Members(), Strategy("roundrobin")));

        var order = new List<string>();
        for (var i = 0; i < 30; i++)
        {
            using var r = await proxy.Client.GetAsync("/v1/models");
            order.Add(r.UpstreamName());
        }

        for (var i = 3; i < order.Count; i++)
        {
            Assert.Equal(order[i - 3], order[i]);
        }
        Assert.Equal(3, order.Take(3).Distinct().Count());
        Assert.All(order.GroupBy(x => x), g => Assert.Equal(10, g.Count()));
    }

    [Fact]
    public async Task Weighted_SmoothShares_ExactPerWindow()
    {
        await using var ups = await Three();
        var weights = new Dictionary<string, int> { ["a"] = 5, ["b"] = 1, ["c"] = 1 };
        await using var proxy = await TestProxy.StartAsync(TestProxy.Config(ups.Yaml(), ups.Members(n => weights[n]), Strategy("weighted_roundrobin")));

        var order = new List<string>();
        for (var i = 0; i < 21; i++)
        {
            using var r = await proxy.Client.GetAsync("/");
            order.Add(r.UpstreamName());
        }

        for (var w = 0; w < 3; w++)
        {
            var window = order.Skip(w * 7).Take(7).ToList();
            Assert.Equal(5, window.Count(x => x == "a"));
            Assert.Equal(1, window.Count(x => x == "b"));
            Assert.Equal(1, window.Count(x => x == "c"));
        }
        // Smooth (nginx): the heavy member is interleaved with the others, not sent in one block.
        Assert.Equal("a,a,b,a,c,a,a", string.Join(',', order.Take(7)));
    }

    [Fact]
    public async Task Weighted_ConcurrentClients_ExactTotals()
    {
        await using var ups = await Three();
        var weights = new Dictionary<string, int> { ["a"] = 3, ["b"] = 2, ["c"] = 1 };
        await using var proxy = await TestProxy.StartAsync(TestProxy.Config(ups.Yaml(), ups.Members(n => weights[n]), Strategy("weighted_roundrobin")));

        var counts = new ConcurrentDictionary<string, int>();
        await Parallel.ForAsync(0, 120, new ParallelOptions { MaxDegreeOfParallelism = 8 }, async (_, ct) =>
        {
            using var r = await proxy.Client.GetAsync("/", ct);
            counts.AddOrUpdate(r.UpstreamName(), 1, (_, c) => c + 1);
        });

        Assert.Equal(60, counts["a"]);
        Assert.Equal(40, counts["b"]);
        Assert.Equal(20, counts["c"]);
    }

    [Fact]
    public async Task Random_RoughlyUniform_NotARotation()
    {
        await using var ups = await Three();
        await using var proxy = await TestProxy.StartAsync(TestProxy.Config(ups.Yaml(), ups.Members(), Strategy("random")));

        var order = new List<string>();
        for (var i = 0; i < 300; i++)
        {
            using var r = await proxy.Client.GetAsync("/");
            order.Add(r.UpstreamName());
        }

        // Each share within ~5 sigma of 100 (sigma ≈ 8.2): fails only for a broken generator.
        Assert.All(order.GroupBy(x => x), g => Assert.InRange(g.Count(), 55, 145));
        Assert.Equal(3, order.Distinct().Count());
        // A rotating counter would never pick the same upstream twice in a row.
        Assert.Contains(Enumerable.Range(1, order.Count - 1), i => order[i] == order[i - 1]);
    }

    [Fact]
    public async Task IpHash_StickyPerClientIp_OnlyClientsOfUnavailableMemberMove()
    {
        var parked = 0;
        await using var ups = await Upstreams.StartAsync(
            ("a", ScriptedUpstream.Json("a")),
            ("b", async ctx =>
            {
                if (Volatile.Read(ref parked) == 1)
                {
                    ctx.Response.Headers.RetryAfter = "120";
                    await ScriptedUpstream.Json("b", 429)(ctx);
                    return;
                }
                await ScriptedUpstream.Json("b")(ctx);
            }),
            ("c", ScriptedUpstream.Json("c")));
        await using var proxy = await TestProxy.StartAsync(TestProxy.Config(ups.Yaml(), ups.Members(), Strategy("iphash")));

        var before = new Dictionary<string, string>();
        for (var i = 2; i < 42; i++)
        {
            var ip = $"127.0.0.{i}";
            using var client = Upstreams.ClientFrom(ip, proxy.ForwardUrl());
            var seen = new HashSet<string>();
            for (var k = 0; k < 3; k++)
            {
                using var r = await client.GetAsync("/");
                seen.Add(r.UpstreamName());
            }
            before[ip] = Assert.Single(seen);
        }
        Assert.Equal(3, before.Values.Distinct().Count());

        // "b" starts answering 429: the proxy parks it (and fails its clients over).
        Volatile.Write(ref parked, 1);
        var onB = before.First(kv => kv.Value == "b").Key;
        using (var client = Upstreams.ClientFrom(onB, proxy.ForwardUrl()))
        {
            using var r = await client.GetAsync("/");
            Assert.Equal(HttpStatusCode.OK, r.StatusCode);
        }

        foreach (var (ip, upstream) in before)
        {
            using var client = Upstreams.ClientFrom(ip, proxy.ForwardUrl());
            using var r = await client.GetAsync("/");
            if (upstream == "b")
            {
                Assert.NotEqual("b", r.UpstreamName());
            }
            else
            {
                Assert.Equal(upstream, r.UpstreamName());
            }
        }
    }
}
