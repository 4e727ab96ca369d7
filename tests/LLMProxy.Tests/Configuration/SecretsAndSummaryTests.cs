using LLMProxy.Configuration;
using static LLMProxy.Tests.Configuration.ConfigTestYaml;

namespace LLMProxy.Tests.Configuration;

public class SecretsAndSummaryTests
{
    [Theory]
    [InlineData("sk-abcdefgh1234abcd", "sk-…abcd")]
    [InlineData("123456789012", "123…9012")]
    [InlineData("12345678901", "****")]
    [InlineData("short", "****")]
    [InlineData("", "****")]
    [InlineData(null, "****")]
    public void Redact_Secret_ShowsAtMostPrefixAndSuffix(string? secret, string expected) =>
        Assert.Equal(expected, Secrets.Redact(secret));

    [Fact]
    public void Summarize_ValidConfig_ListsForwardsGroupsAndUpstreamsWithoutSecrets()
    {
        var yaml = With(Upstream0Anchor, "    auth:\n      type: bearer\n      token: sk-proj-SECRETSECRET-wxyz\n    breaker: {}")
            .Replace("https://api2.example.com", "https://user:pw-SECRET@api2.example.com/v1?key=SECRETQ", StringComparison.Ordinal)
            .Replace(GroupAnchor, GroupAnchor + "    balance:\n      strategy: weighted_roundrobin\n", StringComparison.Ordinal)
            .Replace("httpServer:\n", "httpServer:\n  admin:\n    port: 9100\n    token: admin-SECRET-token-1234\n", StringComparison.Ordinal);
        var config = LoadValid(yaml);

        var summary = ConfigSummary.Summarize(config);

        Assert.Contains("f1  0.0.0.0:3000 -> g1", summary, StringComparison.Ordinal);
        Assert.Contains("admin: 0.0.0.0:9100", summary, StringComparison.Ordinal);
        Assert.Contains("g1  weighted_roundrobin  [u1×1, u2×1]", summary, StringComparison.Ordinal);
        Assert.Contains("u1  https://api.example.com  (bearer sk-…wxyz, breaker 0.5)", summary, StringComparison.Ordinal);
        Assert.Contains("u2  https://api2.example.com  (no auth)", summary, StringComparison.Ordinal);
        Assert.DoesNotContain("SECRET", summary, StringComparison.Ordinal);
    }

    [Fact]
    public void Summarize_DefaultConfigFile_ProducesShortText()
    {
        var config = ConfigLoader.LoadFile(DefaultConfigPath, _ => null).Config!;

        var summary = ConfigSummary.Summarize(config);

        Assert.InRange(summary.Split('\n', StringSplitOptions.RemoveEmptyEntries).Length, 5, 20);
        Assert.DoesNotContain("YOUR_API_KEY_HERE", summary, StringComparison.Ordinal);
    }
}
