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

    /// <summary>
    /// Every family with a group or upstream label — found by reflection, so a family added later without a line in
    /// <see cref="ProxyMetrics.RemoveOutside"/> fails here — loses the series of a removed name and keeps the others.
    /// </summary>
    [Fact]
    public void RemoveOutside_EveryFamilyWithGroupOrUpstreamLabel_DropsRemovedAndKeepsCurrent()
    {
        var metrics = new ProxyMetrics(includeProcessMetrics: false);
        var families = typeof(ProxyMetrics).GetProperties()
            .Where(p => typeof(Collector).IsAssignableFrom(p.PropertyType))
            .Select(p => (Name: p.Name, Family: (Collector)p.GetValue(metrics)!))
            .Where(f => f.Family.LabelNames.Contains("group") || f.Family.LabelNames.Contains("upstream"))
            .ToList();
        Assert.True(families.Count >= 10, string.Join(", ", families.Select(f => f.Name)));
        foreach (var (_, family) in families)
        {
            WithLabels(family, family.LabelNames.Select(l => l switch { "group" => "g", "upstream" => "a", "strategy" => "roundrobin", _ => "x" }));
            WithLabels(family, family.LabelNames.Select(l => l switch { "group" => "g", "upstream" => "gone", "strategy" => "roundrobin", _ => "x" }));
            WithLabels(family, family.LabelNames.Select(l => l switch { "group" => "old", "upstream" => "a", "strategy" => "roundrobin", _ => "x" }));
        }

        metrics.RemoveOutside(Scope());

        foreach (var (name, family) in families)
        {
            var left = LabelValues(family);
            Assert.True(left.Count == 1, $"{name}: {string.Join(" | ", left.Select(v => string.Join(",", v)))}");
            Assert.DoesNotContain("gone", left[0]);
            Assert.DoesNotContain("old", left[0]);
        }
    }

    private static void WithLabels(Collector family, IEnumerable<string> values) =>
        family.GetType().GetMethod("WithLabels", [typeof(string[])])!.Invoke(family, [values.ToArray()]);

    private static List<string[]> LabelValues(Collector family) =>
        [.. (IEnumerable<string[]>)family.GetType().GetMethod("GetAllLabelValues", BindingFlags.Public | BindingFlags.Instance)!.Invoke(family, null)!];
}
