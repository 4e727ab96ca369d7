using System.Security.Cryptography;
using System.Text;
using LLMProxy.Configuration;
using static LLMProxy.Tests.Configuration.ConfigTestYaml;

namespace LLMProxy.Tests.Configuration;

/// <summary><c>httpServer.forwards[].keys[]</c> (SPEC §15): what loads, and every mistake reported at its path without
/// ever showing a key.</summary>
public class ConfigClientKeysTests
{
    private const string KeyA = "team-a-secret-key-0001";
    private const string KeyB = "team-b-secret-key-0002";

    private static string Sha(string key) => Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(key)));

    private static string WithKeys(string keys) => With(ForwardAnchor, "      keys:\n" + string.Join('\n', keys.Trim('\n').Split('\n').Select(l => "        " + l)));

    [Fact]
    public void Keys_Valid_LoadWithDefaultsAndEnvExpansion()
    {
        var config = LoadValid(WithKeys($"""
            - name: team_a
              key: "{"${TEAM_A}"}"
              ratelimit: {"{"} perSecond: 5 {"}"}
              tokensPerMinute: 100000
              models: ["gpt-4o-mini", "claude-*"]
            - name: team-b.2
              sha256: "{Sha(KeyB).ToUpperInvariant()}"
            """), new Dictionary<string, string> { ["TEAM_A"] = KeyA });

        var keys = config.HttpServer.Forwards[0].Keys;
        Assert.Equal(2, keys.Count);
        Assert.Equal(KeyA, keys[0].Key);
        Assert.Equal(5, keys[0].Ratelimit!.PerSecond);
        Assert.Equal(5, keys[0].Ratelimit!.EffectiveBurst); // burst defaults to perSecond
        Assert.Equal(100000, keys[0].TokensPerMinute);
        Assert.Equal(["gpt-4o-mini", "claude-*"], keys[0].Models!);
        Assert.Null(keys[1].Key);
        Assert.Equal(Sha(KeyB), keys[1].Sha256); // normalised to lower case
        Assert.Null(keys[1].Ratelimit);
        Assert.Null(keys[1].TokensPerMinute);
        Assert.Null(keys[1].Models);
        Assert.Empty(LoadValid(Valid).HttpServer.Forwards[0].Keys); // absent = no keys
    }

    [Fact]
    public void Keys_EveryMistake_ReportedAtItsPath_AndNoKeyEchoed()
    {
        const string Short = "short-key";
        const string Spaced = "a key with spaces inside";
        var result = Load(WithKeys($"""
            - key: "{KeyA}"
            - name: "bad name"
              key: "{KeyB}"
              sha256: "{Sha(KeyB)}"
            - name: dup
            - name: dup
              key: "{Short}"
            - name: spaced
              key: "{Spaced}"
            - name: hex
              sha256: "abc"
            - name: again
              sha256: "{Sha(KeyA)}"
            - name: limits
              key: "team-c-secret-key-0003"
              ratelimit: {"{"} perSecond: 0, burst: 0 {"}"}
              tokensPerMinute: 0
              models: []
            - name: glob
              key: "team-d-secret-key-0004"
              models: ["gpt[4]"]
              rateLimit: 5
            """));

        AssertError(result, "httpServer.forwards[0].keys[0].name", "required");
        AssertError(result, "httpServer.forwards[0].keys[1].name", "letters, digits");
        AssertError(result, "httpServer.forwards[0].keys[1]", "exactly one of key and sha256");
        AssertError(result, "httpServer.forwards[0].keys[2]", "exactly one of key and sha256");
        AssertError(result, "httpServer.forwards[0].keys[3].name", "duplicate key name 'dup' (first defined at httpServer.forwards[0].keys[2].name)");
        AssertError(result, "httpServer.forwards[0].keys[3].key", "16 to 1024 characters");
        AssertError(result, "httpServer.forwards[0].keys[4].key", "visible ASCII without spaces");
        AssertError(result, "httpServer.forwards[0].keys[5].sha256", "64 hex digits");
        AssertError(result, "httpServer.forwards[0].keys[6].sha256", "the same key as httpServer.forwards[0].keys[0].key");
        AssertError(result, "httpServer.forwards[0].keys[7].ratelimit.perSecond", "at least 1");
        AssertError(result, "httpServer.forwards[0].keys[7].ratelimit.burst", "at least 1");
        AssertError(result, "httpServer.forwards[0].keys[7].tokensPerMinute", "between 1 and");
        AssertError(result, "httpServer.forwards[0].keys[7].models", "at least one model glob");
        AssertError(result, "httpServer.forwards[0].keys[8].models[0]");
        AssertError(result, "httpServer.forwards[0].keys[8].rateLimit", "did you mean 'ratelimit'");
        foreach (var secret in new[] { KeyA, KeyB, Short, Spaced, Sha(KeyA), Sha(KeyB) })
        {
            Assert.DoesNotContain(result.Errors, e => e.ToString().Contains(secret, StringComparison.Ordinal));
        }
    }

    [Fact]
    public void Keys_EmptyList_IsAnError_NotAnOpenForward() =>
        AssertSingleError(Load(With(ForwardAnchor, "      keys: []")), "httpServer.forwards[0].keys", "at least one key");

    [Fact]
    public void Keys_MissingEnvironmentVariable_NamesTheVariableOnly()
    {
        var error = AssertSingleError(Load(WithKeys("- name: a\n  key: \"prefix-${NO_SUCH_KEY_VAR}\"")), "httpServer.forwards[0].keys[0].key");
        Assert.Contains("NO_SUCH_KEY_VAR", error.Message);
        Assert.DoesNotContain("prefix", error.Message);
    }

    [Fact]
    public void Keys_SameNameOnTwoForwards_Allowed() =>
        LoadValid(Valid.Replace("      defaultGroup: g1\n", "      defaultGroup: g1\n      keys:\n        - name: a\n          key: \"" + KeyA + "\"\n")
            .Replace("httpServer:\n  forwards:\n", "httpServer:\n  forwards:\n    - name: f0\n      port: 3001\n      defaultGroup: g1\n      keys:\n        - name: a\n          key: \"" + KeyA + "\"\n"));

    [Fact]
    public void Summary_ShowsKeyNamesOnly()
    {
        var config = LoadValid(WithKeys($"- name: team_a\n  key: \"{KeyA}\"\n- name: team_b\n  sha256: \"{Sha(KeyB)}\""));
        var summary = ConfigSummary.Summarize(config);
        Assert.Contains("client keys: team_a, team_b", summary);
        Assert.DoesNotContain(KeyA, summary);
        Assert.DoesNotContain(KeyA[^4..], summary);
        Assert.DoesNotContain(Sha(KeyB), summary);
    }
}
