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

/// <summary>Config records print their members (a record's generated <c>ToString</c>): whatever formats one — a debugger,
/// an interpolated log argument, an assertion message — must never see a secret.</summary>
public class ConfigRecordFormattingTests
{
    private const string Yaml = """
        httpServer:
          forwards:
            - name: f1
              port: 3000
              defaultGroup: g1
              keys:
                - name: team-a
                  key: "ck-SECRET-client-key-0001"
          admin:
            port: 9100
            token: "admin-SECRET-token-1234"
        cluster:
          redis:
            url: "redis://user:redisSECRETpw@127.0.0.1:6379/0"
        upstreams:
          - name: u1
            url: "https://api.example.com/v1/chat/completions"
            auth:
              type: bearer
              token: "sk-SECRET-bearer-token-9999"
            headers:
              - op: insert
                key: x-api-key
                value: "hdr-SECRET-value-5555"
          - name: u2
            url: "https://api2.example.com/v1?key=querySECRETkey"
            auth:
              type: basic
              username: alice
              password: "basicSECRETpassword"
          - name: u3
            url: "https://user:userinfoSECRET@api3.example.com/v1"
        upstreamGroups:
          - name: g1
            upstreams:
              - name: u1
              - name: u2
              - name: u3
            httpClient:
              proxy:
                url: "http://proxyuser:proxySECRETpw@127.0.0.1:8080"
        """;

    [Fact]
    public void EveryRecordOfAConfig_Formatted_ShowsNoSecret()
    {
        var loaded = ConfigLoader.LoadYaml(Yaml);
        Assert.True(loaded.Success, string.Join("; ", loaded.Errors));
        var formatted = new List<string> { loaded.ToString(), loaded.Config!.ToString() };
        Walk(loaded.Config!, formatted, new HashSet<object>(ReferenceEqualityComparer.Instance));

        // Every kind of secret the config holds was formatted at least once (the walk reached it) ...
        var all = string.Join("\n", formatted);
        foreach (var reached in new[] { "AuthConfig", "HeaderOpConfig", "ClientKeyConfig", "AdminConfig", "RedisConfig", "ProxyServerConfig", "UpstreamConfig" })
        {
            Assert.Contains(reached, all, StringComparison.Ordinal);
        }
        // ... and none shows.
        Assert.DoesNotContain("SECRET", all, StringComparison.Ordinal);
        Assert.Contains("team-a", all, StringComparison.Ordinal);
        Assert.Contains("api2.example.com", all, StringComparison.Ordinal);
    }

    [Fact]
    public void UpstreamDestination_Formatted_HidesTheQueryKey()
    {
        var destination = new LLMProxy.Forwarding.UpstreamDestination("/v1", "?key=querySECRETkey", new Uri("https://api.example.com/v1?key=querySECRETkey"));
        Assert.DoesNotContain("SECRET", destination.ToString(), StringComparison.Ordinal);
        Assert.Contains("api.example.com", destination.ToString(), StringComparison.Ordinal);
    }

    /// <summary>Formats every config object reachable from <paramref name="value"/> through properties and lists.</summary>
    private static void Walk(object value, List<string> formatted, HashSet<object> seen)
    {
        if (!seen.Add(value))
        {
            return;
        }
        foreach (var property in value.GetType().GetProperties(System.Reflection.BindingFlags.Public | System.Reflection.BindingFlags.Instance))
        {
            if (property.GetIndexParameters().Length > 0 || property.GetValue(value) is not { } child)
            {
                continue;
            }
            if (child is System.Collections.IEnumerable items and not string)
            {
                foreach (var item in items)
                {
                    if (item is not null && item.GetType().Namespace == typeof(ProxyConfig).Namespace)
                    {
                        formatted.Add(item.ToString()!);
                        Walk(item, formatted, seen);
                    }
                }
            }
            else if (child.GetType().Namespace == typeof(ProxyConfig).Namespace && !child.GetType().IsEnum)
            {
                formatted.Add(child.ToString()!);
                Walk(child, formatted, seen);
            }
        }
    }
}
