using LLMProxy.Configuration;
using static LLMProxy.Tests.Configuration.ConfigTestYaml;

namespace LLMProxy.Tests.Configuration;

public class ConfigEnvAndSecretsTests
{
    private const string Secret = "sk-VERYSECRET-0123456789abcdef";

    private static readonly Dictionary<string, string> Env = new()
    {
        ["OPENAI_KEY"] = Secret,
        ["HOST"] = "api.example.org",
        ["PORT"] = "3100",
        ["EMPTY"] = "",
    };

    [Fact]
    public void LoadYaml_EnvReferences_AreExpandedInAnyScalar()
    {
        var yaml = With(Upstream0Anchor, "    auth:\n      type: bearer\n      token: \"${OPENAI_KEY}\"")
            .Replace("https://api2.example.com", "https://${HOST}/v1", StringComparison.Ordinal)
            .Replace("port: 3000", "port: ${PORT}", StringComparison.Ordinal);

        var config = LoadValid(yaml, Env);

        Assert.Equal(Secret, config.Upstreams[0].Auth.Token);
        Assert.Equal("https://api.example.org/v1", config.Upstreams[1].Url);
        Assert.Equal(3100, config.HttpServer.Forwards[0].Port);
    }

    [Fact]
    public void LoadYaml_EnvMissing_ReportsVariableAtPath()
    {
        var result = Load(With(Upstream0Anchor, "    auth:\n      type: bearer\n      token: \"${OPENAI_KEY}\""), env: null);

        var error = AssertSingleError(result, "upstreams[0].auth.token");
        Assert.Equal("upstreams[0].auth.token: environment variable OPENAI_KEY is not set", error.ToString());
    }

    [Fact]
    public void LoadYaml_SeveralEnvMissing_NamesEach()
    {
        var result = Load(Replace("https://api2.example.com", "https://${A_HOST}:${A_PORT}"), Env);

        AssertSingleError(result, "upstreams[1].url", "environment variables A_HOST, A_PORT are not set");
    }

    [Fact]
    public void LoadYaml_EnvSetButEmpty_IsEmptyString()
    {
        var result = Load(With(Upstream0Anchor, "    auth:\n      type: bearer\n      token: \"${EMPTY}\""), Env);

        AssertSingleError(result, "upstreams[0].auth.token", "must not be empty");
    }

    [Fact]
    public void LoadYaml_DoubleDollarBrace_IsLiteral()
    {
        var config = LoadValid(With(Upstream0Anchor, "    headers:\n      - op: insert\n        key: X-T\n        value: \"a$${NOT_A_VAR}b$c\""));

        Assert.Equal("a${NOT_A_VAR}b$c", config.Upstreams[0].Headers[0].Value);
    }

    [Theory]
    [InlineData("${unterminated")]
    [InlineData("${}")]
    [InlineData("${1ABC}")]
    [InlineData("${A B}")]
    public void LoadYaml_MalformedEnvReference_Reports(string value)
    {
        var result = Load(With(Upstream0Anchor, $"    auth:\n      type: bearer\n      token: \"{value}\""), Env);

        AssertSingleError(result, "upstreams[0].auth.token", "invalid environment variable reference");
    }

    [Fact]
    public void LoadYaml_DefaultEnv_UsesProcessEnvironment()
    {
        var name = "LLMPROXY_TEST_" + Guid.NewGuid().ToString("N");
        Environment.SetEnvironmentVariable(name, "from-process");
        try
        {
            var yaml = With(Upstream0Anchor, $"    auth:\n      type: bearer\n      token: \"${{{name}}}\"");

            var result = ConfigLoader.LoadYaml(yaml);

            Assert.True(result.Success, Describe(result));
            Assert.Equal("from-process", result.Config!.Upstreams[0].Auth.Token);
        }
        finally
        {
            Environment.SetEnvironmentVariable(name, null);
        }
    }

    [Fact]
    public void LoadYaml_ManyErrors_ReportsAllInDocumentOrder()
    {
        var yaml = """
            httpServer:
              forwards:
                - name: f1
                  port: abc
                  defaultGroup: nope
                  rateLimit: {}
              admin:
                port: 0
            upstreams:
              - name: u1
                url: "ftp://x"
                auth:
                  type: bearer
                breaker:
                  threshold: 2
              - name: u1
            upstreamGroups:
              - name: g1
                upstreams:
                  - name: u9
                    weight: 0
                balance:
                  strategy: fastest
            """;

        var result = Load(yaml);

        string[] expected =
        [
            "httpServer.forwards[0].port",
            "httpServer.forwards[0].defaultGroup",
            "httpServer.forwards[0].rateLimit",
            "httpServer.admin.port",
            "upstreams[0].url",
            "upstreams[0].auth.token",
            "upstreams[0].breaker.threshold",
            "upstreams[1].name",
            "upstreams[1].url",
            "upstreamGroups[0].upstreams[0].name",
            "upstreamGroups[0].upstreams[0].weight",
            "upstreamGroups[0].balance.strategy",
        ];
        Assert.True(expected.SequenceEqual(result.Errors.Select(e => e.Path)), "got:\n" + Describe(result));
        Assert.Null(result.Config);
        Assert.All(result.Errors, e => Assert.False(string.IsNullOrWhiteSpace(e.Message)));
    }

    public static TheoryData<string> BadConfigsAroundSecrets => new()
    {
        // secrets where a mapping, enum or other type is expected
        With(Upstream0Anchor, $"    auth: \"{Secret}\""),
        With(Upstream0Anchor, $"    auth:\n      type: \"{Secret}\""),
        With(Upstream0Anchor, $"    auth:\n      type: bearer\n      token: [\"{Secret}\"]"),
        With(Upstream0Anchor, $"    auth:\n      type: basic\n      username: \"{Secret}:x\"\n      password: \"{Secret}\""),
        With(Upstream0Anchor, $"    auth:\n      type: basic\n      username: u\n      password: \"{Secret}\\n\""),
        With(Upstream0Anchor, $"    auth:\n      type: bearer\n      token: \"{Secret}\"\n      tokn: \"{Secret}\""),
        With(Upstream0Anchor, $"    auth:\n      type: bearer\n      token: \"{Secret}\"\n      password: {{x: \"{Secret}\"}}"),
        With(Upstream0Anchor, $"    auth:\n      type: bearer\n      token: \"{Secret}${{MISSING}}\""),
        With(HttpServerAnchor, $"  admin:\n    token: \"{Secret}\\r\\n\"\n    port: 0"),
        With(HttpServerAnchor, $"  admin:\n    token: [\"{Secret}\"]"),
        Replace("https://api2.example.com", $"https://user:{Secret}@/"),
        Replace("https://api2.example.com", $"ftp://user:{Secret}@host"),
        With(GroupAnchor, $"    httpClient:\n      proxy:\n        url: \"ftp://u:{Secret}@proxy\""),
        // a completely broken document that contains the secret
        $"upstreams:\n  - auth: {{token: \"{Secret}\"\n",
    };

    [Theory]
    [MemberData(nameof(BadConfigsAroundSecrets))]
    public void LoadYaml_InvalidConfigAroundSecret_NeverEchoesSecret(string yaml)
    {
        var result = Load(yaml, Env);

        Assert.False(result.Success);
        Assert.NotEmpty(result.Errors);
        Assert.All(result.Errors, e => Assert.DoesNotContain("VERYSECRET", e.ToString(), StringComparison.Ordinal));
    }
}
