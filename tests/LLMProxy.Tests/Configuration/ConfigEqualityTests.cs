using LLMProxy.Configuration;
using static LLMProxy.Tests.Configuration.ConfigTestYaml;

namespace LLMProxy.Tests.Configuration;

public class ConfigEqualityTests
{
    private static UpstreamConfig Upstream(params HeaderOpConfig[] headers) =>
        new() { Name = "u1", Url = "https://api.example.com", Headers = [.. headers] };

    private static HeaderOpConfig Header(string key, string value) => new() { Op = HeaderOp.Replace, Key = key, Value = value };

    [Fact]
    public void Same_SameContentInNewListInstances_IsSame()
    {
        var a = Upstream(Header("x-a", "1"), Header("x-b", "2"));
        var b = Upstream(Header("x-a", "1"), Header("x-b", "2"));

        Assert.NotEqual(a, b); // the record's own Equals compares the lists by reference
        Assert.True(ConfigEquality.Same(a, b));
    }

    [Fact]
    public void Same_ListItemChangedInContent_IsNotSame() =>
        Assert.False(ConfigEquality.Same(Upstream(Header("x-a", "1")), Upstream(Header("x-a", "2"))));

    [Fact]
    public void Same_ListItemAddedOrReordered_IsNotSame()
    {
        var one = Upstream(Header("x-a", "1"));
        var two = Upstream(Header("x-a", "1"), Header("x-b", "2"));
        var reordered = Upstream(Header("x-b", "2"), Header("x-a", "1"));

        Assert.False(ConfigEquality.Same(one, two));
        Assert.False(ConfigEquality.Same(two, one));
        Assert.False(ConfigEquality.Same(two, reordered));
    }

    [Fact]
    public void Same_DefaultListAndEqualListFromFile_IsSame()
    {
        var defaults = new RetryConfig();
        var read = new RetryConfig { StatusCodes = new List<int> { 429, 500, 502, 503, 504 } };

        Assert.True(ConfigEquality.Same(defaults, read));
        Assert.False(ConfigEquality.Same(defaults, read with { StatusCodes = new List<int> { 429 } }));
    }

    [Fact]
    public void Same_NestedRecordOrNullBlockChanged_IsNotSame()
    {
        var plain = Upstream();

        Assert.False(ConfigEquality.Same(plain, plain with { Breaker = new BreakerConfig() }));
        Assert.True(ConfigEquality.Same(plain with { Breaker = new BreakerConfig() }, plain with { Breaker = new BreakerConfig() }));
        Assert.False(ConfigEquality.Same(plain with { Breaker = new BreakerConfig() }, plain with { Breaker = new BreakerConfig { Threshold = 0.6 } }));
    }

    [Fact]
    public void Same_DictionariesByKeyAndValue()
    {
        var a = new Dictionary<string, IReadOnlyList<int>> { ["x"] = [1, 2], ["y"] = [3] };
        var b = new Dictionary<string, IReadOnlyList<int>> { ["y"] = new List<int> { 3 }, ["x"] = new List<int> { 1, 2 } };

        Assert.True(ConfigEquality.Same(a, b));
        Assert.False(ConfigEquality.Same(a, new Dictionary<string, IReadOnlyList<int>> { ["x"] = [1, 2], ["y"] = [4] }));
        Assert.False(ConfigEquality.Same(a, new Dictionary<string, IReadOnlyList<int>> { ["x"] = [1, 2] }));
    }

    [Fact]
    public void Same_SameFileLoadedTwice_WholeConfigIsSame()
    {
        var first = LoadValid(Valid);
        var second = LoadValid(Valid);

        Assert.True(ConfigEquality.Same(first, second));
        Assert.False(ConfigEquality.Same(first, LoadValid(Valid.Replace("name: u2", "name: u3", StringComparison.Ordinal))));
    }
}
