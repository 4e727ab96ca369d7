using System.Reflection;
using LLMProxy.Observability;
using Prometheus;

namespace LLMProxy.Tests.Observability;

public class MetricScopeTests
{
    private static MetricScope Scope() => new MetricScope().AddUpstream("a").AddUpstream("b").AddGroup("g", "roundrobin", ["a"]);

    [Theory]
    [InlineData(null, "a", null, true)]
    [InlineData(null, "b", null, true)]     // an upstream in no group is still configured
    [InlineData(null, "gone", null, false)]
    [InlineData("g", null, null, true)]
    [InlineData("old", null, null, false)]
    [InlineData("g", "a", "roundrobin", true)]
    [InlineData("g", "b", "roundrobin", false)] // b is no longer a member of g
    [InlineData("g", "a", "random", false)]     // g's strategy changed
    public void Contains_LabelValues_CurrentOnlyWhenConfigured(string? group, string? upstream, string? strategy, bool expected) =>
        Assert.Equal(expected, Scope().Contains(group, upstream, strategy));

    [Theory]
    [InlineData("fwd", "", true)]          // no client key
    [InlineData("fwd", "team", true)]
    [InlineData("fwd", "gone", false)]     // a key a reload removed
    [InlineData("other", "team", false)]   // a key of another forward
    [InlineData(null, "team", true)]       // a family without a forward label: a key of some forward
    [InlineData(null, "gone", false)]
    public void Contains_ClientLabel_CurrentOnlyForAConfiguredKey(string? forward, string client, bool expected) =>
        Assert.Equal(expected, Scope().AddClients("fwd", ["team"]).Contains(null, null, null, forward, client));

    /// <summary>
    /// Every family with a group, upstream or client label — found by reflection, so a family added later without a line
    /// in <see cref="ProxyMetrics.RemoveOutside"/> fails here — loses the series of a removed name and keeps the others.
    /// </summary>
    [Fact]
    public void RemoveOutside_EveryFamilyWithGroupUpstreamOrClientLabel_DropsRemovedAndKeepsCurrent()
    {
        var metrics = new ProxyMetrics(includeProcessMetrics: false);
        string[] scoped = ["group", "upstream", "client"];
        var families = typeof(ProxyMetrics).GetProperties()
            .Where(p => typeof(Collector).IsAssignableFrom(p.PropertyType))
            .Select(p => (Name: p.Name, Family: (Collector)p.GetValue(metrics)!))
            .Where(f => f.Family.LabelNames.Intersect(scoped).Any())
            .ToList();
        Assert.True(families.Count >= 10, string.Join(", ", families.Select(f => f.Name)));
        Assert.Contains(families, f => f.Name == nameof(ProxyMetrics.HttpRequests));
        foreach (var (_, family) in families)
        {
            foreach (var (group, upstream, client) in new[] { ("g", "a", ""), ("g", "gone", ""), ("old", "a", ""), ("g", "a", "team"), ("g", "a", "gone") })
            {
                WithLabels(family, family.LabelNames.Select(l => l switch
                {
                    "group" => group, "upstream" => upstream, "client" => client, "strategy" => "roundrobin", "forward" => "fwd", _ => "x",
                }));
            }
        }

        metrics.RemoveOutside(Scope().AddClients("fwd", ["team"]));

        foreach (var (name, family) in families)
        {
            var left = LabelValues(family);
            var hasClient = family.LabelNames.Contains("client");
            var scopedByName = family.LabelNames.Contains("group") || family.LabelNames.Contains("upstream");
            // Kept: the current series, and the current key's; a family labelled by client only keeps both of its own.
            Assert.True(left.Count == (hasClient ? 2 : 1), $"{name}: {string.Join(" | ", left.Select(v => string.Join(",", v)))}");
            Assert.All(left, v => Assert.DoesNotContain("gone", v));
            if (scopedByName)
            {
                Assert.All(left, v => Assert.DoesNotContain("old", v));
            }
        }
    }

    private static void WithLabels(Collector family, IEnumerable<string> values) =>
        family.GetType().GetMethod("WithLabels", [typeof(string[])])!.Invoke(family, [values.ToArray()]);

    private static List<string[]> LabelValues(Collector family) =>
        [.. (IEnumerable<string[]>)family.GetType().GetMethod("GetAllLabelValues", BindingFlags.Public | BindingFlags.Instance)!.Invoke(family, null)!];
}
