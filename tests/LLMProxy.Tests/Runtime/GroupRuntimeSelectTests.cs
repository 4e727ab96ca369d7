using System.Net;
using LLMProxy.Configuration;
using LLMProxy.LoadBalancing;
using LLMProxy.Observability;
using LLMProxy.Resilience;
using LLMProxy.Runtime;
using Microsoft.Extensions.Time.Testing;

namespace LLMProxy.Tests.Runtime;

/// <summary>How a group chooses its member (SPEC §13.3, §13.5): priority tiers, least_loaded over the live in-flight
/// counts, and affinity — over real upstream runtimes on fake time (nothing is sent).</summary>
public sealed class GroupRuntimeSelectTests : IDisposable
{
    private static readonly BreakerConfig OneFailureOpens = new() { Threshold = 0.5, Cooldown = 1000, MaxRequests = 1, Interval = 10_000, MinRequests = 1 };
    private static readonly BalancingContext Anyone = new(IPAddress.Loopback);

    private readonly FakeTimeProvider _time = new();
    private readonly List<GroupRuntime> _groups = [];

    public void Dispose()
    {
        foreach (var g in _groups)
        {
            g.Dispose();
        }
    }

    /// <summary>A group over members "name:weight:priority".</summary>
    private GroupRuntime Group(string strategy, string[] members, AffinityConfig? affinity = null)
    {
        var parsed = members.Select(m => m.Split(':')).Select(p => new GroupMemberConfig { Name = p[0], Weight = int.Parse(p[1]), Priority = int.Parse(p[2]) }).ToList();
        var upstreams = parsed.ToDictionary(m => m.Name,
            m => new UpstreamRuntime(new UpstreamConfig { Name = m.Name, Url = "http://127.0.0.1:1", Breaker = OneFailureOpens }, _time));
        var config = new UpstreamGroupConfig { Name = "g", Upstreams = parsed, Balance = new BalanceConfig { Strategy = strategy }, Affinity = affinity };
        var group = new GroupRuntime(config, upstreams, new ProxyMetrics(includeProcessMetrics: false));
        _groups.Add(group);
        return group;
    }

    private static string Pick(GroupRuntime group, string? affinityKey = null)
    {
        using var lease = group.Select(Anyone, default, out var reason, affinityKey);
        Assert.True(lease is not null, $"no member: {reason}");
        lease.Record(AttemptVerdict.Success);
        return lease.Upstream.Name;
    }

    private static void Break(GroupRuntime group, string name)
    {
        var index = Array.FindIndex(group.Members, m => m.Name == name);
        // Enough failures to outweigh the successes it had (threshold 0.5).
        for (var i = 0; i < 100 && group.Members[index].Check() == Unavailability.None; i++)
        {
            using var lease = group.Members[index].TryLease(index, group.MemberMetrics[index])!;
            lease.Record(AttemptVerdict.Failure);
        }
        Assert.Equal(Unavailability.BreakerOpen, group.Members[index].Check());
    }

    [Theory]
    [InlineData("roundrobin")]
    [InlineData("weighted_roundrobin")]
    [InlineData("random")]
    [InlineData("iphash")]
    [InlineData("least_loaded")]
    public void EveryStrategy_OnlyTheHighestTier_UntilItIsAllDown_ThenBack(string strategy)
    {
        var group = Group(strategy, ["backup:1:0", "a:1:5", "b:1:5", "last:1:-3"]);

        var picks = Enumerable.Range(0, 20).Select(_ => Pick(group)).ToList();
        Assert.All(picks, p => Assert.Contains(p, new[] { "a", "b" }));

        Break(group, "a");
        Assert.All(Enumerable.Range(0, 10).Select(_ => Pick(group)), p => Assert.Equal("b", p));

        Break(group, "b");
        Assert.All(Enumerable.Range(0, 10).Select(_ => Pick(group)), p => Assert.Equal("backup", p));

        Break(group, "backup");
        Assert.Equal("last", Pick(group));

        // The cool-down ends: the top tier is half-open and takes traffic again (its successful trials close it).
        _time.Advance(TimeSpan.FromMilliseconds(1001));
        Assert.All(Enumerable.Range(0, 10).Select(_ => Pick(group)), p => Assert.Contains(p, new[] { "a", "b" }));
    }

    [Fact]
    public void RoundRobin_WithinTheTier_StrictRotation()
    {
        var group = Group("roundrobin", ["a:1:1", "x:1:0", "b:1:1", "c:1:1"]);

        var picks = Enumerable.Range(0, 9).Select(_ => Pick(group)).ToList();

        Assert.Equal(3, picks.Take(3).Distinct().Count());
        Assert.All(picks.GroupBy(p => p), g => Assert.Equal(3, g.Count()));
        Assert.DoesNotContain("x", picks);
    }

    [Fact]
    public void TriedMembers_Excluded_AcrossTiers()
    {
        var group = Group("roundrobin", ["a:1:1", "b:1:0"]);

        var tried = default(MemberSet);
        tried.Add(0);
        using var lease = group.Select(Anyone, tried, out _);

        Assert.Equal("b", lease!.Upstream.Name);
    }

    [Fact]
    public void LeastLoaded_ReadsTheMembersInFlight()
    {
        var group = Group("least_loaded", ["a:1:0", "b:1:0"]);

        using var busy = group.Select(Anyone, default, out _);
        Assert.Equal("a", busy!.Upstream.Name); // both idle: index order
        Assert.Equal(1, group.Members[0].InFlight);

        Assert.Equal("b", Pick(group));
        using var busy2 = group.Select(Anyone, default, out _);
        Assert.Equal("b", busy2!.Upstream.Name);
        // 1 and 1 in flight: tie, index order again.
        Assert.Equal("a", Pick(group));
    }

    [Fact]
    public void Affinity_SameKeySameMember_AcrossSeparatelyBuiltGroups_MovesWhileDown_Returns()
    {
        var affinity = new AffinityConfig { Keys = ["header:x-session-id"] };
        string[] members = ["a:1:0", "b:1:0", "c:1:0", "d:2:0"];
        var one = Group("roundrobin", members, affinity);
        var two = Group("roundrobin", members, affinity);

        var keys = Enumerable.Range(0, 40).Select(i => $"conv-{i}").ToArray();
        var home = keys.ToDictionary(k => k, k => Pick(one, k));
        Assert.All(keys, k => Assert.Equal(home[k], Pick(two, k)));
        Assert.All(keys, k => Assert.Equal(home[k], Pick(one, k))); // sticky, unlike the round robin underneath

        var key = keys.First(k => home[k] == "b");
        Break(one, "b");
        var moved = Pick(one, key);
        Assert.NotEqual("b", moved);
        Assert.Equal(moved, Pick(one, key)); // the next in rendezvous order keeps it while b is down
        Assert.All(keys.Where(k => home[k] != "b"), k => Assert.Equal(home[k], Pick(one, k)));

        _time.Advance(TimeSpan.FromMilliseconds(1001));
        Assert.Equal("b", Pick(one, key));
    }

    [Fact]
    public void Affinity_RespectsTiers()
    {
        var group = Group("roundrobin", ["a:1:1", "b:1:0", "c:1:0"], new AffinityConfig { Keys = ["body:user"] });

        Assert.All(Enumerable.Range(0, 20), i => Assert.Equal("a", Pick(group, $"user-{i}")));
        Break(group, "a");
        Assert.All(Enumerable.Range(0, 20), i => Assert.NotEqual("a", Pick(group, $"user-{i}")));
    }
}
