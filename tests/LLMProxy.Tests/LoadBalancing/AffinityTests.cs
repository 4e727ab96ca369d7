using LLMProxy.LoadBalancing;
using static LLMProxy.Tests.LoadBalancing.BalancerTestKit;

namespace LLMProxy.Tests.LoadBalancing;

/// <summary>Prompt-cache affinity (SPEC §13.5): a session key hashed by weighted rendezvous over the members.</summary>
public class AffinityTests
{
    private static readonly string[] Keys = [.. Enumerable.Range(0, 2000).Select(i => $"session-{i}")];

    private static int Pick(Rendezvous r, string key, bool[]? eligible = null) =>
        r.Select(eligible ?? All(r.Count), StableHash.OfString(key));

    [Fact]
    public void StableHash_OfKey_IsAFixedFunction_NotPerProcess() =>
        // FNV-1a over UTF-16LE then fmix64, computed independently: another process (or instance) gets the same.
        Assert.Equal(0xb0e11f897f990061UL, StableHash.OfString("session-42"));

    [Fact]
    public void SameKey_SameMember_AcrossSeparatelyBuiltGroups_AnyMemberOrder()
    {
        var members = Members(1, 1, 1, 1);
        var one = new Rendezvous(members, weighted: true);
        var two = new Rendezvous([.. members], weighted: true);
        var reversed = new Rendezvous([.. members.Reverse()], weighted: true);

        foreach (var key in Keys)
        {
            var a = Pick(one, key);
            Assert.Equal(a, Pick(two, key));
            Assert.Equal(members[a].Name, members.Reverse().ElementAt(Pick(reversed, key)).Name);
        }
    }

    [Fact]
    public void MemberUnavailable_OnlyItsKeysMove_ToTheirNextInOrder_AndReturn()
    {
        var r = new Rendezvous(Members(1, 1, 1, 1), weighted: true);
        var before = Keys.Select(k => Pick(r, k)).ToArray();
        bool[] without2 = [true, true, false, true];

        for (var i = 0; i < Keys.Length; i++)
        {
            var after = Pick(r, Keys[i], without2);
            if (before[i] != 2)
            {
                Assert.Equal(before[i], after);
            }
            else
            {
                Assert.NotEqual(2, after);
            }
            // Back again: the original member.
            Assert.Equal(before[i], Pick(r, Keys[i]));
        }
        // The moved keys spread over the others rather than all landing on one.
        Assert.Equal(3, Keys.Where((_, i) => before[i] == 2).Select(k => Pick(r, k, without2)).Distinct().Count());
    }

    [Fact]
    public void Weights_GiveProportionalShares()
    {
        var r = new Rendezvous(Members(3, 1), weighted: true);
        var toFirst = Keys.Count(k => Pick(r, k) == 0);

        // Expected 1500 of 2000.
        Assert.InRange(toFirst, 1400, 1600);
    }

    [Fact]
    public void NoEligible_MinusOne() => Assert.Equal(-1, Pick(new Rendezvous(Members(1, 1), weighted: true), "k", [false, false]));

    [Theory]
    [InlineData("header:x-session-id", "Header", "x-session-id")]
    [InlineData("HEADER:X-Session-Id", "Header", "X-Session-Id")]
    [InlineData("body:prompt_cache_key", "PromptCacheKey", null)]
    [InlineData("body:user", "User", null)]
    [InlineData("body:metadata.user_id", "MetadataUserId", null)]
    public void Parse_Valid(string text, string source, string? header)
    {
        Assert.True(AffinityKey.TryParse(text, out var key, out _));
        Assert.Equal(new AffinityKey(Enum.Parse<AffinitySource>(source), header), key);
    }

    [Theory]
    [InlineData("")]
    [InlineData("header:")]
    [InlineData("header:a b")]
    [InlineData("header:a:b")]
    [InlineData("body:model")]
    [InlineData("body:User")]
    [InlineData("query:sid")]
    public void Parse_Invalid(string text) => Assert.False(AffinityKey.TryParse(text, out _, out _));
}
