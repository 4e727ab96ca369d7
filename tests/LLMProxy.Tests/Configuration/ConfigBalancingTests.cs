using LLMProxy.Configuration;
using static LLMProxy.Tests.Configuration.ConfigTestYaml;

namespace LLMProxy.Tests.Configuration;

/// <summary>(ext) <c>upstreamGroups[].upstreams[].priority</c>, <c>balance.strategy: least_loaded</c> and
/// <c>upstreamGroups[].affinity</c>: what they load to and each rule's error at its exact path.</summary>
public class ConfigBalancingTests
{
    private const string Members = "      - name: u1\n      - name: u2\n";

    private static string WithMembers(string members) => Replace(Members, members);

    private static string OnGroup(string lines) => With(GroupAnchor, string.Concat(lines.TrimEnd('\n').Split('\n').Select(l => "    " + l + "\n")));

    [Fact]
    public void Load_WithoutNewKeys_PriorityZeroNoAffinity()
    {
        var group = LoadValid(Valid).UpstreamGroups[0];

        Assert.All(group.Upstreams, m => Assert.Equal(0, m.Priority));
        Assert.Null(group.Affinity);
    }

    [Fact]
    public void Load_Priorities_KeptPerMember_NegativeAllowed()
    {
        var group = LoadValid(WithMembers("      - name: u1\n        priority: 10\n      - name: u2\n        priority: -1\n")).UpstreamGroups[0];

        Assert.Equal([10, -1], group.Upstreams.Select(m => m.Priority));
    }

    [Theory]
    [InlineData("1000001")]
    [InlineData("high")]
    [InlineData("1.5")]
    public void Load_BadPriority_ErrorAtMember(string value)
    {
        var result = Load(WithMembers($"      - name: u1\n        priority: {value}\n      - name: u2\n"));

        AssertSingleError(result, "upstreamGroups[0].upstreams[0].priority");
    }

    [Fact]
    public void Load_LeastLoaded_IsAKnownStrategy() =>
        Assert.Equal("least_loaded", LoadValid(OnGroup("balance:\n  strategy: LEAST_LOADED")).UpstreamGroups[0].Balance.Strategy);

    [Fact]
    public void Load_AffinitySpecExample_KeysInOrder()
    {
        var group = LoadValid(OnGroup("affinity:\n  keys: [\"header:x-session-id\", \"body:prompt_cache_key\", \"body:user\", \"body:metadata.user_id\"]")).UpstreamGroups[0];

        Assert.Equal(["header:x-session-id", "body:prompt_cache_key", "body:user", "body:metadata.user_id"], group.Affinity!.Keys);
    }

    [Theory]
    [InlineData("body:model", "body:prompt_cache_key")]
    [InlineData("header:", "header")]
    [InlineData("header:x session", "header")]
    [InlineData("cookie:sid", "'header:' or 'body:'")]
    [InlineData("body:metadata", "body:metadata.user_id")]
    public void Load_BadAffinityKey_ErrorAtItem(string key, string message)
    {
        var result = Load(OnGroup($"affinity:\n  keys: [\"body:user\", \"{key}\"]"));

        AssertSingleError(result, "upstreamGroups[0].affinity.keys[1]", message);
    }

    [Fact]
    public void Load_AffinityWithoutKeys_Error()
    {
        AssertSingleError(Load(OnGroup("affinity:\n  keys: []")), "upstreamGroups[0].affinity.keys", "at least one");
        AssertSingleError(Load(OnGroup("affinity: {}")), "upstreamGroups[0].affinity.keys", "required");
    }

    [Fact]
    public void Load_AffinityUnknownSubKey_Error() =>
        AssertError(Load(OnGroup("affinity:\n  keys: [\"body:user\"]\n  key: x")), "upstreamGroups[0].affinity.key");
}
