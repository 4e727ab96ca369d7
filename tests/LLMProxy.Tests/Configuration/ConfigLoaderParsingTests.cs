using LLMProxy.Configuration;
using static LLMProxy.Tests.Configuration.ConfigTestYaml;

namespace LLMProxy.Tests.Configuration;

/// <summary>File access, YAML syntax, document shape, types and unknown keys.</summary>
public class ConfigLoaderParsingTests
{
    [Fact]
    public void LoadFile_MissingFile_ReturnsOneErrorNamingTheFile()
    {
        var path = Path.Combine(Path.GetTempPath(), "llmproxy-no-such-dir", "config.yaml");

        var result = ConfigLoader.LoadFile(path);

        var error = AssertSingleError(result, "");
        Assert.Contains(path, error.Message, StringComparison.Ordinal);
        Assert.Contains("not found", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void LoadFile_Directory_ReturnsOneError()
    {
        var result = ConfigLoader.LoadFile(Path.GetTempPath());

        var error = AssertSingleError(result, "");
        Assert.Contains("cannot read config file", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void LoadFile_ValidFile_ReturnsConfig()
    {
        var path = Path.Combine(Path.GetTempPath(), $"llmproxy-test-{Guid.NewGuid():N}.yaml");
        File.WriteAllText(path, Valid);
        try
        {
            var result = ConfigLoader.LoadFile(path);

            Assert.True(result.Success, Describe(result));
            Assert.Equal("f1", result.Config!.HttpServer.Forwards[0].Name);
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Fact]
    public void LoadYaml_SyntaxError_ReturnsErrorWithLineAndColumn()
    {
        var result = Load("httpServer:\n  forwards:\n    - name: \"unterminated\n");

        var error = AssertSingleError(result, "");
        Assert.Contains("invalid YAML at line", error.Message, StringComparison.Ordinal);
        Assert.Contains("column", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void LoadYaml_BadMappingIndentation_ReturnsErrorWithLine()
    {
        var result = Load("httpServer:\n  forwards: x\n   port: 3\n");

        var error = AssertSingleError(result, "");
        Assert.Contains("line 3", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void LoadYaml_UnclosedFlowSequence_ReturnsErrorInsteadOfThrowing()
    {
        // YamlDotNet throws InvalidOperationException (not YamlException) for this input.
        var result = Load("upstreams: [1, 2\nupstreamGroups: 3");

        var error = AssertSingleError(result, "");
        Assert.Contains("invalid YAML", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void LoadYaml_AbsurdNesting_ReturnsErrorInsteadOfOverflowingTheStack()
    {
        // 200k levels overflow YamlDotNet's recursive node loader (a crash no catch can stop).
        const int depth = 200_000;
        var result = Load("httpServer: " + new string('[', depth) + new string(']', depth));

        AssertSingleError(result, "", "nesting is deeper than 64 levels");
    }

    [Fact]
    public void LoadYaml_DuplicateKey_ReturnsError()
    {
        var result = Load(Replace("      port: 3000\n", "      port: 3000\n      port: 3001\n"));

        var error = AssertSingleError(result, "");
        Assert.Contains("Duplicate key", error.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("")]
    [InlineData("# only a comment\n")]
    public void LoadYaml_EmptyDocument_ReturnsError(string yaml)
    {
        var error = AssertSingleError(Load(yaml), "");

        Assert.Contains("empty", error.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("- a\n- b\n")]
    [InlineData("just text\n")]
    [InlineData("~\n")]
    public void LoadYaml_RootNotMapping_ReturnsError(string yaml)
    {
        var error = AssertSingleError(Load(yaml), "");

        Assert.Contains("must be a mapping", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void LoadYaml_TwoDocuments_ReturnsError()
    {
        var result = Load(Valid + "---\n" + Valid);

        AssertSingleError(result, "", "only one YAML document");
    }

    [Fact]
    public void LoadYaml_EmptyMapping_ReportsEachTopLevelSectionRequired()
    {
        var result = Load("{}");

        AssertError(result, "httpServer", "required");
        AssertError(result, "upstreams", "required");
        AssertError(result, "upstreamGroups", "required");
        Assert.Equal(3, result.Errors.Count);
    }

    [Fact]
    public void LoadYaml_ForwardsMissing_ReportsRequired()
    {
        var result = Load(Replace("  forwards:\n    - name: f1\n      port: 3000\n      defaultGroup: g1\n", "  shutdownTimeout: 1\n"));

        AssertError(result, "httpServer.forwards", "required");
    }

    [Fact]
    public void LoadYaml_ForwardsEmpty_ReportsAtLeastOne()
    {
        var result = Load(Replace("  forwards:\n    - name: f1\n      port: 3000\n      defaultGroup: g1\n", "  forwards: []\n"));

        AssertError(result, "httpServer.forwards", "at least one forward");
    }

    [Fact]
    public void LoadYaml_UpstreamsEmpty_ReportsAtLeastOne()
    {
        var result = Load("httpServer:\n  forwards:\n    - {name: f, port: 1, defaultGroup: g}\nupstreams: []\nupstreamGroups: []\n");

        AssertError(result, "upstreams", "at least one upstream");
        AssertError(result, "upstreamGroups", "at least one upstream group");
    }

    [Fact]
    public void LoadYaml_MisCasedKey_ReportsUnknownKeyWithHint()
    {
        var result = Load(With(ForwardAnchor, "      rateLimit:\n        perSecond: 5"));

        var error = AssertSingleError(result, "httpServer.forwards[0].rateLimit", "unknown key");
        Assert.Contains("did you mean 'ratelimit'?", error.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("max_requests", "maxRequests")]
    [InlineData("treshold", "threshold")]
    [InlineData("cooldwn", "cooldown")]
    public void LoadYaml_MisspelledKey_SuggestsClosestKey(string typo, string expected)
    {
        var result = Load(With(Upstream0Anchor, $"    breaker:\n      {typo}: 3"));

        AssertSingleError(result, $"upstreams[0].breaker.{typo}", $"did you mean '{expected}'?");
    }

    [Fact]
    public void LoadYaml_UnrelatedUnknownKey_ListsExpectedKeys()
    {
        var result = Load(With(HttpServerAnchor, "  bananas: 1"));

        AssertSingleError(result, "httpServer.bananas", "expected one of: forwards, admin, shutdownTimeout");
    }

    [Theory]
    [InlineData("\"a\\nhttpServer: fine\"", "httpServer.\"a\\nhttpServer: fine\"")]
    [InlineData("\"rate limit\"", "httpServer.\"rate limit\"")]
    [InlineData("\"\"", "httpServer.\"\"")]
    [InlineData("\"\\u202eevil\"", "httpServer.\"\\u202eevil\"")]
    public void LoadYaml_UnknownKeyThatIsNotAPlainName_ShownQuotedAndEscapedInPath(string key, string path)
    {
        var error = AssertSingleError(Load(With(HttpServerAnchor, $"  {key}: 1")), path, "unknown key");

        Assert.DoesNotContain('\n', error.ToString());
    }

    [Fact]
    public void LoadYaml_HugeUnknownKey_ShortPathNoSuggestionWork()
    {
        // An explicit key ("? key") may be longer than the 1024 characters YAML allows an implicit one.
        var key = new string('k', 200_000);

        var error = AssertSingleError(Load(With(HttpServerAnchor, $"  ? {key}\n  : 1")), "httpServer.\"" + new string('k', 57) + "...\"", "unknown key");

        Assert.True(error.ToString().Length < 200, error.ToString());
    }

    [Fact]
    public void LoadYaml_NamesWithControlCharacters_EveryErrorPrintsOnOneLine()
    {
        var result = Load(Replace("      - name: u2\n", "      - name: \"u1\\r\\nfake: line\\x1b[31m\"\n"));

        var error = AssertError(result, "upstreamGroups[0].upstreams[1].name", "is not defined");
        Assert.Contains("u1\\r\\nfake: line\\x1b[31m", error.Message, StringComparison.Ordinal);
        Assert.All(result.Errors, e => Assert.DoesNotMatch("[\\x00-\\x1f]", e.ToString()));
    }

    [Fact]
    public void LoadYaml_RequiredUrlMissing_ReportsRequired()
    {
        var result = Load(Replace(Upstream0Anchor, ""));

        AssertSingleError(result, "upstreams[0].url", "required");
    }

    [Theory]
    [InlineData("name")]
    [InlineData("port")]
    [InlineData("defaultGroup")]
    public void LoadYaml_RequiredForwardKeyMissing_ReportsRequired(string key)
    {
        var line = key switch { "name" => "    - name: f1\n", "port" => "      port: 3000\n", _ => ForwardAnchor };
        var replacement = key == "name" ? "    - address: \"0.0.0.0\"\n" : "";

        var result = Load(Replace(line, replacement));

        AssertError(result, $"httpServer.forwards[0].{key}", "required");
    }

    [Fact]
    public void LoadYaml_PortNotInteger_ReportsTypeWithValue()
    {
        var result = Load(Replace("port: 3000", "port: abc"));

        var error = AssertSingleError(result, "httpServer.forwards[0].port");
        Assert.Equal("must be an integer (got \"abc\")", error.Message);
    }

    [Fact]
    public void LoadYaml_ThresholdNotNumber_ReportsType()
    {
        var result = Load(With(Upstream0Anchor, "    breaker:\n      threshold: half"));

        AssertSingleError(result, "upstreams[0].breaker.threshold", "must be a number (got \"half\")");
    }

    [Fact]
    public void LoadYaml_MappingGivenAsScalar_ReportsMappingExpected()
    {
        var result = Load(With(Upstream0Anchor, "    breaker: on"));

        AssertSingleError(result, "upstreams[0].breaker", "must be a mapping");
    }

    [Fact]
    public void LoadYaml_ListGivenAsMapping_ReportsListExpected()
    {
        var result = Load(Replace("  forwards:\n    - name: f1\n      port: 3000\n      defaultGroup: g1\n",
            "  forwards:\n    name: f1\n"));

        AssertSingleError(result, "httpServer.forwards", "must be a list (got a mapping)");
    }

    [Fact]
    public void LoadYaml_ListItemEmpty_ReportsMappingExpected()
    {
        var result = Load(Replace("      - name: u2\n", "      -\n"));

        AssertSingleError(result, "upstreamGroups[0].upstreams[1]", "must be a mapping");
    }

    [Fact]
    public void LoadYaml_StringGivenAsList_ReportsStringExpected()
    {
        var result = Load(Replace("    - name: f1\n", "    - name: [f1]\n"));

        AssertError(result, "httpServer.forwards[0].name", "must be a string (got a list)");
    }

    [Fact]
    public void LoadYaml_PortOverflowingDigits_ReportsRangeNotType()
    {
        var result = Load(Replace("port: 3000", "port: 99999999999999999999999"));

        AssertSingleError(result, "httpServer.forwards[0].port", "must be between 1 and 65535");
    }

    [Fact]
    public void LoadYaml_QuotedNumber_IsAccepted()
    {
        var config = LoadValid(Replace("port: 3000", "port: \"3001\""));

        Assert.Equal(3001, config.HttpServer.Forwards[0].Port);
    }

    [Fact]
    public void LoadYaml_NullValueForOptionalKey_UsesDefault()
    {
        var config = LoadValid(With(ForwardAnchor, "      address:\n      ratelimit: ~"));

        Assert.Equal("0.0.0.0", config.HttpServer.Forwards[0].Address);
        Assert.Null(config.HttpServer.Forwards[0].Ratelimit);
    }

    [Fact]
    public void LoadYaml_AnchorsAndAliases_AreResolved()
    {
        var yaml = With(Upstream0Anchor, "    breaker: &shared\n      threshold: 0.25")
            .Replace(Upstream1Anchor, Upstream1Anchor + "    breaker: *shared\n", StringComparison.Ordinal);

        var config = LoadValid(yaml);

        Assert.Equal(0.25, config.Upstreams[0].Breaker!.Threshold);
        Assert.Equal(0.25, config.Upstreams[1].Breaker!.Threshold);
    }

    [Fact]
    public void LoadYaml_MergeKeys_MergeLikeTheReference_WrittenKeysWin()
    {
        // As gopkg.in/yaml.v3 (the reference's parser) reads it: keys written beside <<: override merged ones, and in a
        // merge list the earlier mapping wins.
        var config = LoadValid("""
            httpServer:
              forwards:
                - name: f1
                  port: 3000
                  defaultGroup: g1
            upstreams:
              - &base
                name: u1
                url: "https://api.example.com/v1/chat/completions"
                breaker: &breaker
                  threshold: 0.25
                  cooldown: 5000
              - <<: *base
                name: u2
                breaker:
                  <<: [{cooldown: 7000}, *breaker]
                  maxRequests: 2
            upstreamGroups:
              - name: g1
                upstreams:
                  - name: u1
                  - name: u2
            """);

        var u2 = config.Upstreams[1];
        Assert.Equal(("u2", "https://api.example.com/v1/chat/completions"), (u2.Name, u2.Url));
        Assert.Equal((0.25, 7000, 2), (u2.Breaker!.Threshold, u2.Breaker.Cooldown, u2.Breaker.MaxRequests));
        Assert.Equal(("u1", 5000), (config.Upstreams[0].Name, config.Upstreams[0].Breaker!.Cooldown));
    }

    [Fact]
    public void LoadYaml_MergedUnknownKey_ReportedAtTheMergingMapping()
    {
        var yaml = With(Upstream0Anchor, "    breaker: &b\n      threshold: 0.5")
            .Replace(Upstream1Anchor, Upstream1Anchor + "    ratelimit:\n      <<: *b\n", StringComparison.Ordinal);

        AssertSingleError(Load(yaml), "upstreams[1].ratelimit.threshold", "unknown key");
    }

    [Theory]
    [InlineData("    <<: *url", "a single value")]
    [InlineData("    <<: *models", "a list")]
    [InlineData("    <<: [*url]", "a list")]
    [InlineData("    <<:", "an empty value")]
    public void LoadYaml_MergeOfNonMapping_ReportsPath(string merge, string got)
    {
        var yaml = Replace(Upstream0Anchor, "    url: &url \"https://api.example.com/v1/chat/completions\"\n    models: &models [\"*\"]\n")
            .Replace(Upstream1Anchor, Upstream1Anchor + merge + "\n", StringComparison.Ordinal);

        AssertSingleError(Load(yaml), "upstreams[1].\"<<\"", $"a merge key takes a mapping or a list of mappings, e.g. <<: *base (got {got})");
    }
}
