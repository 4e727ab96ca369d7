using LLMProxy.Configuration;
using static LLMProxy.Tests.Configuration.ConfigTestYaml;

namespace LLMProxy.Tests.Configuration;

/// <summary>One test per validation rule: each breaks exactly one rule of a valid config and expects
/// the error at the exact path.</summary>
public class ConfigValidationRuleTests
{
    private const string SecondForward = "    - name: f2\n      port: 3001\n      defaultGroup: g1\n";

    private static string WithSecondForward(string forward) =>
        Replace("upstreams:\n  - name: u1\n", forward + "upstreams:\n  - name: u1\n");

    /// <summary>Forwards f1 and f2 both on port 3000 with the given addresses.</summary>
    private static string TwoForwardsOnPort3000(string first, string second) =>
        Replace("      port: 3000\n", $"      port: 3000\n      address: \"{first}\"\n")
            .Replace("upstreams:\n  - name: u1\n",
                $"    - name: f2\n      port: 3000\n      address: \"{second}\"\n      defaultGroup: g1\nupstreams:\n  - name: u1\n",
                StringComparison.Ordinal);

    // ---- names -------------------------------------------------------------------------------

    [Fact]
    public void Validate_ForwardNameBlank_ReportsNotEmpty() =>
        AssertSingleError(Load(Replace("- name: f1", "- name: \"  \"")), "httpServer.forwards[0].name", "must not be empty");

    [Fact]
    public void Validate_UpstreamNameEmpty_ReportsNotEmpty()
    {
        var result = Load(Replace("  - name: u2\n", "  - name: \"\"\n"));

        AssertError(result, "upstreams[1].name", "must not be empty");
    }

    [Fact]
    public void Validate_GroupNameEmpty_ReportsNotEmpty()
    {
        var result = Load(Replace(GroupAnchor, "  - name: ''\n"));

        AssertError(result, "upstreamGroups[0].name", "must not be empty");
    }

    [Fact]
    public void Validate_DuplicateForwardName_ReportsSecond()
    {
        var result = Load(WithSecondForward(SecondForward.Replace("f2", "f1", StringComparison.Ordinal)));

        AssertSingleError(result, "httpServer.forwards[1].name", "duplicate forward name 'f1' (first defined at httpServer.forwards[0].name)");
    }

    [Fact]
    public void Validate_DuplicateUpstreamName_ReportsSecond()
    {
        var result = Load(Replace("  - name: u2\n    url", "  - name: u1\n    url").Replace("      - name: u2\n", "", StringComparison.Ordinal));

        AssertSingleError(result, "upstreams[1].name", "duplicate upstream name 'u1'");
    }

    [Fact]
    public void Validate_DuplicateGroupName_ReportsSecond()
    {
        var result = Load(Valid + "  - name: g1\n    upstreams:\n      - name: u1\n");

        AssertSingleError(result, "upstreamGroups[1].name", "duplicate upstream group name 'g1'");
    }

    [Fact]
    public void Validate_SameNameAcrossKinds_IsAllowed() =>
        LoadValid(Replace("- name: f1", "- name: g1"));

    // ---- ports and listeners -----------------------------------------------------------------

    [Theory]
    [InlineData("0")]
    [InlineData("65536")]
    [InlineData("-1")]
    public void Validate_ForwardPortOutOfRange_ReportsRange(string port)
    {
        var error = AssertSingleError(Load(Replace("port: 3000", "port: " + port)), "httpServer.forwards[0].port");

        Assert.Equal($"must be between 1 and 65535 (got {port})", error.Message);
    }

    [Fact]
    public void Validate_AdminPortOutOfRange_ReportsRange() =>
        AssertSingleError(Load(With(HttpServerAnchor, "  admin:\n    port: 70000")), "httpServer.admin.port", "must be between 1 and 65535 (got 70000)");

    [Fact]
    public void Validate_TwoForwardsSamePort_ReportsClash()
    {
        var result = Load(WithSecondForward(SecondForward.Replace("3001", "3000", StringComparison.Ordinal)));

        AssertSingleError(result, "httpServer.forwards[1].port", "clashes with forward 'f1'");
    }

    [Fact]
    public void Validate_ForwardOnDefaultAdminPort_ReportsClash()
    {
        var result = Load(Replace("port: 3000", "port: 9000"));

        AssertSingleError(result, "httpServer.admin.port", "port 9000 (the default)");
    }

    [Fact]
    public void Validate_ForwardOnExplicitAdminPort_ReportsClash()
    {
        var result = Load(With(HttpServerAnchor, "  admin:\n    port: 3000"));

        AssertSingleError(result, "httpServer.admin.port", "clashes with forward 'f1'");
    }

    [Fact]
    public void Validate_SamePortDifferentSpecificAddresses_IsAllowed()
    {
        var config = LoadValid(TwoForwardsOnPort3000("127.0.0.1", "127.0.0.2"));

        Assert.Equal(["127.0.0.1", "127.0.0.2"], config.HttpServer.Forwards.Select(f => f.Address));
    }

    [Theory]
    [InlineData("0.0.0.0", "127.0.0.1")]
    [InlineData("::", "10.0.0.1")]
    [InlineData("localhost", "127.0.0.1")]
    [InlineData("localhost", "::1")]
    [InlineData("10.0.0.1", "10.0.0.1")]
    public void Validate_SamePortOverlappingAddresses_ReportsClash(string first, string second)
    {
        var yaml = TwoForwardsOnPort3000(first, second);

        AssertSingleError(Load(yaml), "httpServer.forwards[1].port", "clashes");
    }

    // ---- references ----------------------------------------------------------------------------

    [Fact]
    public void Validate_DefaultGroupUndefined_ReportsWithDefinedGroups()
    {
        var result = Load(Replace("defaultGroup: g1", "defaultGroup: g2"));

        var error = AssertSingleError(result, "httpServer.forwards[0].defaultGroup", "upstream group 'g2' is not defined");
        Assert.Contains("defined: g1", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Validate_GroupMemberUndefined_ReportsWithHint()
    {
        var result = Load(Replace("      - name: u2\n", "      - name: u3\n"));

        AssertSingleError(result, "upstreamGroups[0].upstreams[1].name", "upstream 'u3' is not defined (did you mean 'u1'?");
    }

    [Fact]
    public void Validate_GroupWithoutMembers_ReportsAtLeastOne()
    {
        var result = Load(Replace("    upstreams:\n      - name: u1\n      - name: u2\n", "    upstreams: []\n"));

        AssertSingleError(result, "upstreamGroups[0].upstreams", "must contain at least one upstream");
    }

    [Fact]
    public void Validate_GroupMembersMissing_ReportsRequired()
    {
        var result = Load(Replace("    upstreams:\n      - name: u1\n      - name: u2\n", ""));

        AssertSingleError(result, "upstreamGroups[0].upstreams", "required");
    }

    [Fact]
    public void Validate_DuplicateGroupMember_ReportsSecond()
    {
        var result = Load(Replace("      - name: u2\n", "      - name: u2\n      - name: u1\n"));

        AssertSingleError(result, "upstreamGroups[0].upstreams[2].name", "listed more than once");
    }

    // ---- url -----------------------------------------------------------------------------------

    [Theory]
    [InlineData("/v1/chat/completions")]
    [InlineData("api.openai.com/v1")]
    [InlineData("ftp://example.com/file")]
    [InlineData("file:///etc/passwd")]
    public void Validate_UrlNotAbsoluteHttp_Reports(string url)
    {
        var result = Load(Replace("https://api2.example.com", url));

        AssertSingleError(result, "upstreams[1].url", "must be an absolute http or https URL");
    }

    [Fact]
    public void Validate_UrlWithCredentials_DoesNotEchoThem()
    {
        var result = Load(Replace("https://api2.example.com", "ftp://user:hunter2pass@example.com"));

        var error = AssertSingleError(result, "upstreams[1].url");
        Assert.DoesNotContain("hunter2pass", error.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("ftp://user:p@SECRET@api.example.com/v1?key=SECRET", "\"ftp://***@api.example.com/v1?…\"")]
    [InlineData("ftp://user:p?SECRET@api.example.com/v1", "\"ftp://***@api.example.com/v1\"")]
    [InlineData("ftp://user:p/SECRET@api.example.com", "\"ftp://***@api.example.com\"")]
    [InlineData("htps://api.example.com/v1?api_key=SECRET&x=1", "\"htps://api.example.com/v1?…\"")]
    [InlineData("htps://api.example.com/v1#SECRET", "\"htps://api.example.com/v1#…\"")]
    public void Validate_InvalidUrl_ErrorNeverShowsUserInfoQueryOrFragment(string url, string shown)
    {
        var upstream = AssertSingleError(Load(Replace("https://api2.example.com", url)), "upstreams[1].url", "must be an absolute http or https URL");
        var proxy = AssertSingleError(Load(With(GroupAnchor, $"    httpClient:\n      proxy:\n        url: \"{url}\"")), "upstreamGroups[0].httpClient.proxy.url");

        foreach (var error in new[] { upstream, proxy })
        {
            Assert.Contains($"(got {shown})", error.Message, StringComparison.Ordinal);
            Assert.DoesNotContain("SECRET", error.ToString(), StringComparison.Ordinal);
        }
    }

    // ---- auth ----------------------------------------------------------------------------------

    [Fact]
    public void Validate_BearerWithoutToken_ReportsTokenRequired() =>
        AssertSingleError(Load(With(Upstream0Anchor, "    auth:\n      type: bearer")), "upstreams[0].auth.token", "required when auth.type is bearer");

    [Fact]
    public void Validate_BearerWithEmptyToken_ReportsNotEmpty() =>
        AssertSingleError(Load(With(Upstream0Anchor, "    auth:\n      type: bearer\n      token: \"\"")), "upstreams[0].auth.token", "must not be empty");

    [Fact]
    public void Validate_BasicWithoutUsername_ReportsUsernameRequired() =>
        AssertSingleError(Load(With(Upstream0Anchor, "    auth:\n      type: basic\n      password: pw")), "upstreams[0].auth.username", "required when auth.type is basic");

    [Fact]
    public void Validate_BasicWithoutPassword_ReportsPasswordRequired() =>
        AssertSingleError(Load(With(Upstream0Anchor, "    auth:\n      type: basic\n      username: me")), "upstreams[0].auth.password", "required when auth.type is basic");

    [Fact]
    public void Validate_BasicUsernameWithColon_Reports() =>
        AssertSingleError(Load(With(Upstream0Anchor, "    auth:\n      type: basic\n      username: a:b\n      password: pw")), "upstreams[0].auth.username", "':'");

    [Theory]
    [InlineData("sk-SECRET-\\u00e9", "character 11 is U+00E9")]
    [InlineData("sk-SECRET-\\n", "character 11 is U+000A (a line break)")]
    [InlineData("sk-SECRET-\\u200b", "character 11 is U+200B")]
    public void Validate_BearerTokenNotPrintableAscii_ReportsPositionNeverToken(string token, string where)
    {
        var error = AssertSingleError(Load(With(Upstream0Anchor, $"    auth:\n      type: bearer\n      token: \"{token}\"")), "upstreams[0].auth.token", "printable ASCII");

        Assert.Contains(where, error.Message, StringComparison.Ordinal);
        Assert.DoesNotContain("SECRET", error.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("username")]
    [InlineData("password")]
    public void Validate_BasicCredentialWithControlCharacter_ReportsPositionNeverValue(string key)
    {
        var yaml = With(Upstream0Anchor, "    auth:\n      type: basic\n      username: me\n      password: pw")
            .Replace($"{key}: {(key == "username" ? "me" : "pw")}", $"{key}: \"SECRET\\r\"", StringComparison.Ordinal);

        var error = AssertSingleError(Load(yaml), $"upstreams[0].auth.{key}", "control characters");

        Assert.Contains("character 7 is U+000D (a line break)", error.Message, StringComparison.Ordinal);
        Assert.DoesNotContain("SECRET", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Validate_BasicCredentialsNonAscii_AreAccepted()
    {
        // Basic credentials travel base64-encoded (UTF-8, as the reference sends them), so any printable text works.
        var auth = LoadValid(With(Upstream0Anchor, "    auth:\n      type: basic\n      username: \"j\\u00fcrgen\"\n      password: \"p\\u00e4ss\"")).Upstreams[0].Auth;

        Assert.Equal(("jürgen", "päss"), (auth.Username, auth.Password));
    }

    [Fact]
    public void Validate_AuthTypeUnknown_ListsAllowedValues() =>
        AssertSingleError(Load(With(Upstream0Anchor, "    auth:\n      type: oauth")), "upstreams[0].auth.type", "must be one of none, bearer, basic");

    [Fact]
    public void Validate_AuthTypeDifferentCase_IsAccepted() =>
        Assert.Equal(AuthType.Bearer, LoadValid(With(Upstream0Anchor, "    auth:\n      type: Bearer\n      token: t")).Upstreams[0].Auth.Type);

    [Fact]
    public void Validate_BasicWithBoth_LoadsCredentials()
    {
        var auth = LoadValid(With(Upstream0Anchor, "    auth:\n      type: basic\n      username: me\n      password: pw")).Upstreams[0].Auth;

        Assert.Equal((AuthType.Basic, "me", "pw"), (auth.Type, auth.Username, auth.Password));
    }

    // ---- headers -------------------------------------------------------------------------------

    [Theory]
    [InlineData("insert")]
    [InlineData("replace")]
    public void Validate_HeaderOpWithoutValue_ReportsValueRequired(string op) =>
        AssertSingleError(Load(With(Upstream0Anchor, $"    headers:\n      - op: {op}\n        key: X-A")),
            "upstreams[0].headers[0].value", $"required when op is {op}");

    [Fact]
    public void Validate_HeaderRemoveWithoutValue_IsAllowed()
    {
        var header = Assert.Single(LoadValid(With(Upstream0Anchor, "    headers:\n      - op: remove\n        key: X-A")).Upstreams[0].Headers);

        Assert.Equal((HeaderOp.Remove, "X-A", (string?)null), (header.Op, header.Key, header.Value));
    }

    [Fact]
    public void Validate_HeaderKeyEmpty_ReportsNotEmpty() =>
        AssertSingleError(Load(With(Upstream0Anchor, "    headers:\n      - op: remove\n        key: \"\"")), "upstreams[0].headers[0].key", "must not be empty");

    [Fact]
    public void Validate_HeaderKeyInvalidCharacters_Reports() =>
        AssertSingleError(Load(With(Upstream0Anchor, "    headers:\n      - op: remove\n        key: \"X A:\"")), "upstreams[0].headers[0].key", "valid HTTP header name");

    [Fact]
    public void Validate_HeaderOpMissing_ReportsRequired() =>
        AssertSingleError(Load(With(Upstream0Anchor, "    headers:\n      - key: X-A\n        value: v")), "upstreams[0].headers[0].op", "required");

    [Fact]
    public void Validate_HeaderOpUnknown_ListsAllowedValues() =>
        AssertSingleError(Load(With(Upstream0Anchor, "    headers:\n      - op: append\n        key: X-A\n        value: v")),
            "upstreams[0].headers[0].op", "must be one of insert, replace, remove (got \"append\")");

    [Fact]
    public void Validate_HeaderValueWithLineBreak_Reports() =>
        AssertSingleError(Load(With(Upstream0Anchor, "    headers:\n      - op: insert\n        key: X-A\n        value: \"a\\r\\nX-Evil: 1\"")),
            "upstreams[0].headers[0].value", "line breaks");

    [Theory]
    [InlineData("cl\\u00e9-SECRET", "character 3 is U+00E9")]
    [InlineData("SECRET\\u200b", "character 7 is U+200B")]
    [InlineData("SECRET\\x01", "character 7 is U+0001 (a control character)")]
    [InlineData("SECRET\\x7f", "character 7 is U+007F (a control character)")]
    public void Validate_HeaderValueNotPrintableAscii_ReportsPositionNeverValue(string value, string where)
    {
        var error = AssertSingleError(Load(With(Upstream0Anchor, $"    headers:\n      - op: replace\n        key: x-api-key\n        value: \"{value}\"")),
            "upstreams[0].headers[0].value", "must be printable ASCII");

        Assert.Contains(where, error.Message, StringComparison.Ordinal);
        Assert.DoesNotContain("SECRET", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Validate_HeaderValueWithTabAndSymbols_IsAccepted() =>
        Assert.Equal("a\tb ~!\"", LoadValid(With(Upstream0Anchor, "    headers:\n      - op: insert\n        key: X-A\n        value: \"a\\tb ~!\\\"\"")).Upstreams[0].Headers[0].Value);

    [Theory]
    [InlineData("X(A)")]
    [InlineData("X-A:")]
    [InlineData("X/A")]
    [InlineData("\\u00c4-Header")]
    public void Validate_HeaderKeyNotRfc9110Token_Reports(string key) =>
        AssertSingleError(Load(With(Upstream0Anchor, $"    headers:\n      - op: remove\n        key: \"{key}\"")), "upstreams[0].headers[0].key", "RFC 9110 token");

    [Theory]
    [InlineData("insert", "Host", "from the upstream url")]
    [InlineData("replace", "content-length", "from the request body")]
    [InlineData("replace", "Transfer-Encoding", "hop-by-hop")]
    [InlineData("insert", "Connection", "hop-by-hop")]
    [InlineData("replace", "Upgrade", "hop-by-hop")]
    [InlineData("insert", "keep-alive", "hop-by-hop")]
    [InlineData("replace", "TE", "hop-by-hop")]
    [InlineData("remove", "Transfer-Encoding", "hop-by-hop")]
    public void Validate_HeaderRuleOnProxyManagedHeader_ReportsWhy(string op, string key, string why)
    {
        var value = op == "remove" ? "" : "\n        value: x";

        var error = AssertSingleError(Load(With(Upstream0Anchor, $"    headers:\n      - op: {op}\n        key: {key}{value}")), "upstreams[0].headers[0].key");

        Assert.Contains($"{key} cannot be changed by a header rule", error.Message, StringComparison.Ordinal);
        Assert.Contains(why, error.Message, StringComparison.Ordinal);
    }

    // ---- breaker -------------------------------------------------------------------------------

    [Fact]
    public void Validate_BreakerThresholdAboveOne_ReportsExactMessage()
    {
        var error = AssertSingleError(Load(With(Upstream1Anchor, "    breaker:\n      threshold: 2")), "upstreams[1].breaker.threshold");

        Assert.Equal("upstreams[1].breaker.threshold: must be between 0.01 and 1.0 (got 2)", error.ToString());
    }

    [Fact]
    public void Validate_BreakerThresholdBelowMinimum_Reports() =>
        AssertSingleError(Load(With(Upstream1Anchor, "    breaker:\n      threshold: 0.001")), "upstreams[1].breaker.threshold", "between 0.01 and 1.0");

    [Theory]
    [InlineData("cooldown")]
    [InlineData("interval")]
    [InlineData("maxRequests")]
    [InlineData("minRequests")]
    public void Validate_BreakerCountBelowOne_Reports(string key) =>
        AssertSingleError(Load(With(Upstream0Anchor, $"    breaker:\n      {key}: 0")), $"upstreams[0].breaker.{key}", "must be at least 1 (got 0)");

    [Fact]
    public void Validate_BreakerEmptyBlock_GetsDefaults() =>
        Assert.Equal(new BreakerConfig(), LoadValid(With(Upstream0Anchor, "    breaker: {}")).Upstreams[0].Breaker);

    // ---- rate limits ---------------------------------------------------------------------------

    [Theory]
    [InlineData("perSecond")]
    [InlineData("burst")]
    public void Validate_ForwardRatelimitBelowOne_Reports(string key) =>
        AssertSingleError(Load(With(ForwardAnchor, $"      ratelimit:\n        {key}: 0")), $"httpServer.forwards[0].ratelimit.{key}", "must be at least 1");

    [Theory]
    [InlineData("perSecond")]
    [InlineData("burst")]
    [InlineData("requestsPerMinute")]
    [InlineData("maxConcurrent")]
    public void Validate_UpstreamRatelimitBelowOne_Reports(string key) =>
        AssertSingleError(Load(With(Upstream0Anchor, $"    ratelimit:\n      {key}: 0")), $"upstreams[0].ratelimit.{key}", "must be at least 1");

    [Fact]
    public void Validate_UpstreamTokensPerMinuteBelowOne_ReportsItsRange() =>
        AssertSingleError(Load(With(Upstream0Anchor, "    ratelimit:\n      tokensPerMinute: 0")), "upstreams[0].ratelimit.tokensPerMinute", "must be between 1 and 1000000000000");

    [Fact]
    public void Validate_ForwardRatelimitEmptyBlock_GetsDefaults() =>
        Assert.Equal(new RateLimitConfig { PerSecond = 100, Burst = 200 }, LoadValid(With(ForwardAnchor, "      ratelimit: {}")).HttpServer.Forwards[0].Ratelimit);

    [Fact]
    public void Validate_UpstreamRatelimitWithoutBurst_BurstEqualsPerSecond()
    {
        var limit = LoadValid(With(Upstream0Anchor, "    ratelimit:\n      perSecond: 7")).Upstreams[0].Ratelimit!;

        Assert.Equal((7, (int?)null, 7), (limit.PerSecond, limit.Burst, limit.EffectiveBurst));
    }

    [Theory]
    [InlineData("requestsPerMinute", "abc")]
    [InlineData("tokensPerMinute", "1.5")]
    [InlineData("tokensPerMinute", "1000000000001")]
    [InlineData("maxConcurrent", "[1]")]
    public void Validate_UpstreamBudgetNotAnInteger_ReportsAtItsPath(string key, string value) =>
        AssertSingleError(Load(With(Upstream0Anchor, $"    ratelimit:\n      {key}: {value}")), $"upstreams[0].ratelimit.{key}");

    [Fact]
    public void Validate_UpstreamBudgets_ReadBesidePerSecond()
    {
        var limit = LoadValid(With(Upstream0Anchor,
            "    ratelimit:\n      requestsPerMinute: 500\n      tokensPerMinute: 200000\n      maxConcurrent: 8")).Upstreams[0].Ratelimit!;

        Assert.Equal((100, 500, 200_000L, 8), (limit.PerSecond, limit.RequestsPerMinute, limit.TokensPerMinute, limit.MaxConcurrent));
        var plain = LoadValid(With(Upstream0Anchor, "    ratelimit:\n      perSecond: 7")).Upstreams[0].Ratelimit!;
        Assert.Equal(((int?)null, (long?)null, (int?)null), (plain.RequestsPerMinute, plain.TokensPerMinute, plain.MaxConcurrent));
    }

    // ---- weight and strategy -------------------------------------------------------------------

    [Fact]
    public void Validate_WeightBelowOne_Reports() =>
        AssertSingleError(Load(Replace("      - name: u2\n", "      - name: u2\n        weight: 0\n")), "upstreamGroups[0].upstreams[1].weight", "must be between 1 and");

    [Fact]
    public void Validate_StrategyUnknown_ListsAllowedValues() =>
        AssertSingleError(Load(With(GroupAnchor, "    balance:\n      strategy: leastconn")), "upstreamGroups[0].balance.strategy",
            "must be one of roundrobin, weighted_roundrobin, random, iphash, least_loaded (got \"leastconn\")");

    [Theory]
    [InlineData("round_robin", "roundrobin")]
    [InlineData("weighted-roundrobin", "weighted_roundrobin")]
    [InlineData("ip_hash", "iphash")]
    public void Validate_StrategyNearMiss_SuggestsRegisteredName(string text, string suggested) =>
        AssertSingleError(Load(With(GroupAnchor, $"    balance:\n      strategy: {text}")), "upstreamGroups[0].balance.strategy",
            $"must be one of roundrobin, weighted_roundrobin, random, iphash, least_loaded (got \"{text}\"); did you mean '{suggested}'?");

    [Fact]
    public void Validate_StrategyNotAString_Reports() =>
        AssertSingleError(Load(With(GroupAnchor, "    balance:\n      strategy: [roundrobin]")), "upstreamGroups[0].balance.strategy",
            "must be a string");

    [Fact]
    public void Validate_StrategyAbsent_IsRoundRobin() =>
        Assert.Equal("roundrobin", LoadValid(With(GroupAnchor, "    balance: {}")).UpstreamGroups[0].Balance.Strategy);

    [Theory]
    [InlineData("roundrobin", "roundrobin")]
    [InlineData("Weighted_RoundRobin", "weighted_roundrobin")]
    [InlineData("random", "random")]
    [InlineData("IPHASH", "iphash")]
    public void Validate_StrategyAnyCase_StoredAsRegisteredName(string text, string expected) =>
        Assert.Equal(expected, LoadValid(With(GroupAnchor, $"    balance:\n      strategy: {text}")).UpstreamGroups[0].Balance.Strategy);

    // ---- timeouts and pools --------------------------------------------------------------------

    [Theory]
    [InlineData("      timeout:\n        idle: -1", "httpServer.forwards[0].timeout.idle")]
    [InlineData("      timeout:\n        read: -1", "httpServer.forwards[0].timeout.read")]
    [InlineData("      timeout:\n        write: -1", "httpServer.forwards[0].timeout.write")]
    public void Validate_ForwardTimeoutNegative_Reports(string lines, string path) =>
        AssertSingleError(Load(With(ForwardAnchor, lines)), path, "must be at least 0 (got -1)");

    [Fact]
    public void Validate_TimeoutsZero_UseTheDefaults_AsInTheReference()
    {
        // The reference's SetDefaults turns a 0 timeout into its default.
        var yaml = With(ForwardAnchor, "      timeout: {idle: 0, read: 0, write: 0}")
            .Replace(HttpServerAnchor, HttpServerAnchor + "  admin:\n    timeout: {idle: 0, read: 0, write: 0}\n", StringComparison.Ordinal)
            .Replace(GroupAnchor, GroupAnchor + "    httpClient:\n      timeout: {connect: 0, request: 0, idle: 0}\n", StringComparison.Ordinal);

        var config = LoadValid(yaml);

        Assert.Equal(new ServerTimeoutConfig(), config.HttpServer.Forwards[0].Timeout);
        Assert.Equal(new ServerTimeoutConfig(), config.HttpServer.Admin.Timeout);
        Assert.Equal(new ClientTimeoutConfig(), config.UpstreamGroups[0].HttpClient.Timeout);
        Assert.Equal((60000, 30000, 30000), (config.HttpServer.Forwards[0].Timeout.Idle, config.HttpServer.Forwards[0].Timeout.Read, config.HttpServer.Forwards[0].Timeout.Write));
        Assert.Equal((10000, 300000, 60000), (config.UpstreamGroups[0].HttpClient.Timeout.Connect, config.UpstreamGroups[0].HttpClient.Timeout.Request, config.UpstreamGroups[0].HttpClient.Timeout.Idle));
    }

    [Fact]
    public void Validate_ConnectZero_UsesTheDefaults_AsInTheReference()
    {
        var connect = LoadValid(With(GroupAnchor, "    httpClient:\n      connect: {idleTotal: 0, idlePerHost: 0, maxPerHost: 0}")).UpstreamGroups[0].HttpClient.Connect;

        Assert.Equal((100, 10, 50), (connect.IdleTotal, connect.IdlePerHost, connect.MaxPerHost));
    }

    [Fact]
    public void Validate_EmptyStrings_UseTheDefaults_AsInTheReference()
    {
        var yaml = With(ForwardAnchor, "      address: \"\"")
            .Replace(HttpServerAnchor, HttpServerAnchor + "  admin:\n    address: ''\n", StringComparison.Ordinal)
            .Replace(Upstream0Anchor, Upstream0Anchor + "    auth:\n      type: \"\"\n", StringComparison.Ordinal)
            .Replace(GroupAnchor, GroupAnchor + "    httpClient:\n      agent: \"\"\n", StringComparison.Ordinal);

        var config = LoadValid(yaml);

        Assert.Equal(("0.0.0.0", "0.0.0.0"), (config.HttpServer.Forwards[0].Address, config.HttpServer.Admin.Address));
        Assert.Equal(AuthType.None, config.Upstreams[0].Auth.Type);
        Assert.Equal("LLMProxy/1.0", config.UpstreamGroups[0].HttpClient.Agent);
    }

    [Theory]
    [InlineData("      timeout:\n        idle: 3000000000", "httpServer.forwards[0].timeout.idle", "must be at most 2147483647 (got 3000000000)")]
    [InlineData("      maxConnections: 99999999999999999999999", "httpServer.forwards[0].maxConnections", "must be at most 2147483647 (got 99999999999999999999999)")]
    [InlineData("      maxConnections: -99999999999999999999999", "httpServer.forwards[0].maxConnections", "must be at least 1 (got -99999999999999999999999)")]
    [InlineData("      maxRequestBodySize: 99999999999999999999999", "httpServer.forwards[0].maxRequestBodySize", "must be at most 9223372036854775807 (got 99999999999999999999999)")]
    public void Validate_NumberBeyondTypeOnKeyWithoutUpperBound_NamesTheBoundItBroke(string lines, string path, string message) =>
        Assert.Equal(message, AssertSingleError(Load(With(ForwardAnchor, lines)), path).Message);

    [Fact]
    public void Validate_AdminTimeoutNegative_Reports() =>
        AssertSingleError(Load(With(HttpServerAnchor, "  admin:\n    timeout:\n      write: -1")), "httpServer.admin.timeout.write", "must be at least 0");

    [Theory]
    [InlineData("connect")]
    [InlineData("request")]
    [InlineData("idle")]
    public void Validate_ClientTimeoutNegative_Reports(string key) =>
        AssertSingleError(Load(With(GroupAnchor, $"    httpClient:\n      timeout:\n        {key}: -1")), $"upstreamGroups[0].httpClient.timeout.{key}", "must be at least 0");

    [Fact]
    public void Validate_KeepaliveZero_IsAllowedAndDisables() =>
        Assert.Equal(0, LoadValid(With(GroupAnchor, "    httpClient:\n      keepalive: 0")).UpstreamGroups[0].HttpClient.Keepalive);

    [Fact]
    public void Validate_KeepaliveAboveKernelLimit_ReportsRangeAndWhy()
    {
        // 32767999 would become TCP_KEEPIDLE 32767 s, too; 32768000 is 32768 s, which Linux refuses on every connect.
        var error = AssertSingleError(Load(With(GroupAnchor, "    httpClient:\n      keepalive: 32768000")), "upstreamGroups[0].httpClient.keepalive",
            "must be between 0 and 32767000 (got 32768000)");

        Assert.Contains("32767 s", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Validate_KeepaliveAtKernelLimit_IsAccepted() =>
        Assert.Equal(32_767_000, LoadValid(With(GroupAnchor, "    httpClient:\n      keepalive: 32767000")).UpstreamGroups[0].HttpClient.Keepalive);

    [Fact]
    public void Validate_KeepaliveNegative_Reports() =>
        AssertSingleError(Load(With(GroupAnchor, "    httpClient:\n      keepalive: -1")), "upstreamGroups[0].httpClient.keepalive", "must be between 0 and 32767000 (got -1)");

    [Theory]
    [InlineData("idleTotal")]
    [InlineData("idlePerHost")]
    [InlineData("maxPerHost")]
    public void Validate_ConnectNegative_Reports(string key) =>
        AssertSingleError(Load(With(GroupAnchor, $"    httpClient:\n      connect:\n        {key}: -1")), $"upstreamGroups[0].httpClient.connect.{key}", "must be at least 0");

    [Fact]
    public void Validate_AgentBlank_Reports() =>
        AssertSingleError(Load(With(GroupAnchor, "    httpClient:\n      agent: \"  \"")), "upstreamGroups[0].httpClient.agent", "must not be blank");

    [Theory]
    [InlineData("LLMProxy/\\u00e9")]
    [InlineData("LLMProxy\\r\\nX-Evil: 1")]
    public void Validate_AgentNotPrintableAscii_Reports(string agent) =>
        AssertSingleError(Load(With(GroupAnchor, $"    httpClient:\n      agent: \"{agent}\"")), "upstreamGroups[0].httpClient.agent", "must be printable ASCII");

    [Fact]
    public void Validate_EveryUnsendableHeaderValue_ReportedTogetherWithPaths()
    {
        var yaml = With(Upstream0Anchor, "    auth:\n      type: bearer\n      token: \"t\\u00e9\"\n    headers:\n      - op: insert\n        key: Host\n        value: h\n      - op: insert\n        key: X-B\n        value: \"\\n\"")
            .Replace(GroupAnchor, GroupAnchor + "    httpClient:\n      agent: \"\\u00e9\"\n", StringComparison.Ordinal);

        var result = Load(yaml);

        Assert.Equal(["upstreams[0].auth.token", "upstreams[0].headers[0].key", "upstreams[0].headers[1].value", "upstreamGroups[0].httpClient.agent"],
            result.Errors.Select(e => e.Path));
    }

    // ---- proxy ---------------------------------------------------------------------------------

    [Theory]
    [InlineData("http://proxy:8080")]
    [InlineData("https://proxy")]
    [InlineData("socks5://127.0.0.1:1080")]
    [InlineData("socks5h://proxy:1080")]
    [InlineData("socks4://proxy:1080")]
    public void Validate_ProxyUrlSupportedScheme_IsAccepted(string url) =>
        Assert.Equal(url, LoadValid(With(GroupAnchor, $"    httpClient:\n      proxy:\n        url: \"{url}\"")).UpstreamGroups[0].HttpClient.Proxy!.Url);

    [Theory]
    [InlineData("ftp://proxy:21")]
    [InlineData("proxy:8080")]
    [InlineData("/relative")]
    public void Validate_ProxyUrlBadScheme_Reports(string url) =>
        AssertSingleError(Load(With(GroupAnchor, $"    httpClient:\n      proxy:\n        url: \"{url}\"")), "upstreamGroups[0].httpClient.proxy.url", "socks5h");

    [Fact]
    public void Validate_ProxyWithoutUrl_ReportsRequired() =>
        AssertSingleError(Load(With(GroupAnchor, "    httpClient:\n      proxy: {}")), "upstreamGroups[0].httpClient.proxy.url", "required");

    // ---- addresses and listener extensions -----------------------------------------------------

    [Theory]
    [InlineData("0.0.0.0")]
    [InlineData("127.0.0.1")]
    [InlineData("::")]
    [InlineData("::1")]
    [InlineData("localhost")]
    public void Validate_AddressIpOrLocalhost_IsAccepted(string address) =>
        Assert.Equal(address, LoadValid(With(ForwardAnchor, $"      address: \"{address}\"")).HttpServer.Forwards[0].Address);

    [Theory]
    [InlineData("example.com")]
    [InlineData("10.1")]
    [InlineData("300.1.1.1")]
    public void Validate_ForwardAddressNotIp_Reports(string address) =>
        AssertSingleError(Load(With(ForwardAnchor, $"      address: \"{address}\"")), "httpServer.forwards[0].address", "must be an IP address or \"localhost\"");

    [Fact]
    public void Validate_AdminAddressNotIp_Reports() =>
        AssertSingleError(Load(With(HttpServerAnchor, "  admin:\n    address: any")), "httpServer.admin.address", "must be an IP address");

    [Fact]
    public void Validate_TrustedProxyInvalid_ReportsItemPath()
    {
        var result = Load(With(ForwardAnchor, "      trustedProxies: [\"10.0.0.0/8\", \"not-a-cidr\", \"::1\", \"1.2.3.4/33\"]"));

        AssertError(result, "httpServer.forwards[0].trustedProxies[1]", "must be an IP address or CIDR");
        AssertError(result, "httpServer.forwards[0].trustedProxies[3]", "must be an IP address or CIDR");
        Assert.Equal(2, result.Errors.Count);
    }

    [Fact]
    public void Validate_TrustedProxiesValid_AreKept() =>
        Assert.Equal(["10.0.0.0/8", "192.168.1.7", "fd00::/8"],
            LoadValid(With(ForwardAnchor, "      trustedProxies:\n        - 10.0.0.0/8\n        - 192.168.1.7\n        - fd00::/8")).HttpServer.Forwards[0].TrustedProxies);

    [Fact]
    public void Validate_MaxRequestBodySizeBelowOne_Reports() =>
        AssertSingleError(Load(With(ForwardAnchor, "      maxRequestBodySize: 0")), "httpServer.forwards[0].maxRequestBodySize", "must be at least 1");

    [Fact]
    public void Validate_MaxRequestBodySizeAboveInt_IsAccepted() =>
        Assert.Equal(5_000_000_000L, LoadValid(With(ForwardAnchor, "      maxRequestBodySize: 5000000000")).HttpServer.Forwards[0].MaxRequestBodySize);

    [Theory]
    [InlineData("0", "must be at least 1")]
    [InlineData("-5", "must be at least 1")]
    [InlineData("many", "must be an integer")]
    public void Validate_MaxConnectionsNotAPositiveInteger_ReportsPath(string value, string message) =>
        AssertSingleError(Load(With(ForwardAnchor, "      maxConnections: " + value)), "httpServer.forwards[0].maxConnections", message);

    [Fact]
    public void Validate_MaxConnectionsOne_IsAccepted() =>
        Assert.Equal(1, LoadValid(With(ForwardAnchor, "      maxConnections: 1")).HttpServer.Forwards[0].MaxConnections);

    [Fact]
    public void Validate_ShutdownTimeoutNegative_Reports() =>
        AssertSingleError(Load(With(HttpServerAnchor, "  shutdownTimeout: -1")), "httpServer.shutdownTimeout", "must be at least 0");

    [Fact]
    public void Validate_ShutdownTimeoutZero_IsAllowed() =>
        Assert.Equal(0, LoadValid(With(HttpServerAnchor, "  shutdownTimeout: 0")).HttpServer.ShutdownTimeout);

    [Fact]
    public void Validate_AdminTokenEmpty_Reports() =>
        AssertSingleError(Load(With(HttpServerAnchor, "  admin:\n    token: \"\"")), "httpServer.admin.token", "must not be empty");

    // ---- retry ---------------------------------------------------------------------------------

    [Theory]
    [InlineData("0")]
    [InlineData("11")]
    public void Validate_RetryAttemptsOutOfRange_Reports(string attempts) =>
        AssertSingleError(Load(With(GroupAnchor, $"    retry:\n      attempts: {attempts}")), "upstreamGroups[0].retry.attempts", $"must be between 1 and 10 (got {attempts})");

    [Fact]
    public void Validate_RetryStatusCodeOutOfRange_ReportsItemPath()
    {
        var result = Load(With(GroupAnchor, "    retry:\n      statusCodes: [429, 99, 600, x]"));

        AssertError(result, "upstreamGroups[0].retry.statusCodes[1]", "must be between 100 and 599 (got 99)");
        AssertError(result, "upstreamGroups[0].retry.statusCodes[2]", "must be between 100 and 599 (got 600)");
        AssertError(result, "upstreamGroups[0].retry.statusCodes[3]", "must be an integer");
        Assert.Equal(3, result.Errors.Count);
    }

    [Fact]
    public void Validate_RetryBackoffNegative_Reports() =>
        AssertSingleError(Load(With(GroupAnchor, "    retry:\n      backoff: -5")), "upstreamGroups[0].retry.backoff", "must be at least 0");

    [Fact]
    public void Validate_RetryBlock_LoadsValues()
    {
        var retry = LoadValid(With(GroupAnchor, "    retry:\n      attempts: 2\n      statusCodes: [503]\n      backoff: 50")).UpstreamGroups[0].Retry;

        Assert.Equal((2, 50), (retry.Attempts, retry.Backoff));
        Assert.Equal([503], retry.StatusCodes);
    }
}
