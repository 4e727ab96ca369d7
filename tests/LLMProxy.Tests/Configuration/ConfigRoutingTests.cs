using LLMProxy.Configuration;
using static LLMProxy.Tests.Configuration.ConfigTestYaml;

namespace LLMProxy.Tests.Configuration;

/// <summary>(ext) <c>httpServer.forwards[].routes[]</c>, <c>upstreams[].models</c> and <c>upstreams[].modelMap</c>:
/// what they load to, and one test per rule with the error at its exact path.</summary>
public class ConfigRoutingTests
{
    private const string Route0 = "httpServer.forwards[0].routes[0]";

    /// <summary>Valid plus a second group g2 (member u2), so routes have somewhere to go.</summary>
    private static readonly string WithG2 = Valid + "  - name: g2\n    upstreams:\n      - name: u2\n";

    /// <summary>WithG2 plus a <c>routes:</c> list on forward f1; each route is YAML at list-item indentation 8.</summary>
    private static string Routes(string items) =>
        WithG2.Replace(ForwardAnchor, ForwardAnchor + "      routes:\n" + Indent(items, 8), StringComparison.Ordinal);

    /// <summary>Valid plus <paramref name="lines"/> under upstream u1 (indentation 4).</summary>
    private static string OnUpstream0(string lines) => With(Upstream0Anchor, Indent(lines, 4));

    private static string Indent(string lines, int spaces) =>
        string.Concat(lines.TrimEnd('\n').Split('\n').Select(l => new string(' ', spaces) + l + "\n"));

    // ---- what a config means without the new keys ----------------------------------------------

    [Fact]
    public void Load_WithoutRoutingKeys_NoRoutesAnyModelNoMapping()
    {
        var config = LoadValid(Valid);

        Assert.Empty(config.HttpServer.Forwards[0].Routes);
        Assert.All(config.Upstreams, u => Assert.Null(u.Models));
        Assert.All(config.Upstreams, u => Assert.Null(u.ModelMap));
    }

    [Fact]
    public void Load_EmptyRoutesList_NoRoutes() =>
        Assert.Empty(LoadValid(WithG2.Replace(ForwardAnchor, ForwardAnchor + "      routes: []\n", StringComparison.Ordinal)).HttpServer.Forwards[0].Routes);

    // ---- routes: values --------------------------------------------------------------------------

    [Fact]
    public void Load_SpecExampleRoutes_KeepOrderAndValues()
    {
        var yaml = Routes("""
            - path: /v1/messages
              group: g2
            - model: "gpt-4o*"
              group: g1
              name: four-o
            - model: "text-embedding-*"
              path: /v1/embeddings
              group: g2
            """);

        var routes = LoadValid(yaml).HttpServer.Forwards[0].Routes;

        Assert.Equal(
            [
                new RouteConfig { Path = "/v1/messages", Group = "g2" },
                new RouteConfig { Name = "four-o", Model = "gpt-4o*", Group = "g1" },
                new RouteConfig { Path = "/v1/embeddings", Model = "text-embedding-*", Group = "g2" },
            ],
            routes);
    }

    [Fact]
    public void Load_RouteGroupFromEnvironment_Expanded()
    {
        var config = LoadValid(Routes("- path: /v1\n  group: \"${ROUTE_GROUP}\""), new Dictionary<string, string> { ["ROUTE_GROUP"] = "g2" });

        Assert.Equal("g2", config.HttpServer.Forwards[0].Routes[0].Group);
    }

    [Theory]
    [InlineData("/")]
    [InlineData("/v1/messages/")]
    [InlineData("/v1/messages:batch")]
    [InlineData("/%7Euser")]
    public void Load_RoutePathForms_Accepted(string path) =>
        Assert.Equal(path, LoadValid(Routes($"- path: \"{path}\"\n  group: g2")).HttpServer.Forwards[0].Routes[0].Path);

    // ---- routes: rules -------------------------------------------------------------------------

    [Fact]
    public void Validate_RouteUnknownGroup_ReportsUndefinedWithSuggestion()
    {
        var result = Load(Routes("- path: /v1/messages\n  group: g2\n- model: gpt-4o\n  group: g3"));

        AssertSingleError(result, "httpServer.forwards[0].routes[1].group", "upstream group 'g3' is not defined (did you mean 'g1'? defined: g1, g2)");
    }

    [Fact]
    public void Validate_RouteWithoutGroup_ReportsRequired() =>
        AssertSingleError(Load(Routes("- path: /v1")), Route0 + ".group", "required");

    [Fact]
    public void Validate_EmptyRoute_ReportsAtTheRoute() =>
        AssertSingleError(Load(Routes("- group: g2")), Route0, "empty route");

    [Fact]
    public void Validate_RouteWithOnlyName_ReportsEmptyRoute() =>
        AssertSingleError(Load(Routes("- name: everything\n  group: g2")), Route0, "give it a path, a model or both");

    [Fact]
    public void Validate_RouteWithNullPathAndModel_ReportsEmptyRoute() =>
        AssertSingleError(Load(Routes("- path:\n  model: ~\n  group: g2")), Route0, "empty route");

    [Theory]
    [InlineData("v1/messages", "must start with '/' (got \"v1/messages\")")]
    [InlineData("\"\"", "must start with '/' (got \"\")")]
    [InlineData("/v1/messages?beta=true", "must be a path without query or fragment ('?' is not allowed)")]
    [InlineData("/v1#x", "'#' is not allowed")]
    [InlineData("\"/v1/ messages\"", "must not contain whitespace or control characters")]
    public void Validate_RouteBadPath_Reports(string path, string message) =>
        AssertSingleError(Load(Routes($"- path: {path}\n  group: g2")), Route0 + ".path", message);

    [Theory]
    [InlineData("\"\"", "must not be empty")]
    [InlineData("\"gpt-[45]o\"", "only * and ? are wildcards; '[' is not allowed")]
    [InlineData("\"{gpt,o1}*\"", "'{' is not allowed")]
    [InlineData("\"gpt\\x01\"", "must not contain control characters")]
    [InlineData("\" gpt-4o\"", "must not start or end with whitespace")]
    public void Validate_RouteBadModelGlob_Reports(string model, string message) =>
        AssertSingleError(Load(Routes($"- model: {model}\n  group: g2")), Route0 + ".model", message);

    [Fact]
    public void Validate_RouteModelTooLong_ReportsLength() =>
        AssertSingleError(Load(Routes($"- model: {new string('m', 257)}\n  group: g2")), Route0 + ".model", "must be at most 256 characters (got 257)");

    [Fact]
    public void Validate_RouteModelNotAString_ReportsType() =>
        AssertSingleError(Load(Routes("- model: [a, b]\n  group: g2")), Route0 + ".model", "must be a string (got a list)");

    [Fact]
    public void Validate_DuplicateRouteName_ReportsSecond()
    {
        var result = Load(Routes("- name: a\n  path: /x\n  group: g2\n- name: b\n  path: /y\n  group: g2\n- name: a\n  path: /z\n  group: g1"));

        AssertSingleError(result, "httpServer.forwards[0].routes[2].name", "duplicate route name 'a' (first defined at httpServer.forwards[0].routes[0].name)");
    }

    [Fact]
    public void Validate_SameRouteNameInTwoForwards_IsAllowed()
    {
        var yaml = Routes("- name: a\n  path: /x\n  group: g2")
            .Replace("upstreams:\n  - name: u1\n",
                "    - name: f2\n      port: 3001\n      defaultGroup: g1\n      routes:\n        - name: a\n          path: /x\n          group: g2\nupstreams:\n  - name: u1\n",
                StringComparison.Ordinal);

        var config = LoadValid(yaml);

        Assert.All(config.HttpServer.Forwards, f => Assert.Equal("a", Assert.Single(f.Routes).Name));
    }

    [Fact]
    public void Validate_RouteNameIsIndexOfUnnamedRoute_ReportsLabelClash()
    {
        var result = Load(Routes("- name: \"1\"\n  path: /x\n  group: g2\n- path: /y\n  group: g2"));

        AssertSingleError(result, Route0 + ".name", "route name '1' is also the label of the unnamed route httpServer.forwards[0].routes[1]");
    }

    [Theory]
    [InlineData("- name: \"1\"\n  path: /x\n  group: g2\n- name: y\n  path: /y\n  group: g2")] // route 1 is named
    [InlineData("- name: \"0\"\n  path: /x\n  group: g2")] // its own index
    [InlineData("- name: \"01\"\n  path: /x\n  group: g2\n- path: /y\n  group: g2")] // label "01" is not "1"
    [InlineData("- name: \"5\"\n  path: /x\n  group: g2")] // no route 5
    public void Validate_NumericRouteNameWithoutClash_IsAllowed(string routes) =>
        LoadValid(Routes(routes));

    [Fact]
    public void Validate_RouteNameBlank_ReportsNotEmpty() =>
        AssertSingleError(Load(Routes("- name: \" \"\n  path: /x\n  group: g2")), Route0 + ".name", "must not be empty");

    [Fact]
    public void Validate_RouteUnknownKey_SuggestsModel() =>
        AssertSingleError(Load(Routes("- models: gpt-4o\n  path: /x\n  group: g2")), Route0 + ".models", "unknown key (did you mean 'model'?)");

    [Fact]
    public void Validate_RouteNotAMapping_Reports() =>
        AssertSingleError(Load(Routes("- /v1/messages")), Route0, "must be a mapping (got a single value)");

    [Fact]
    public void Validate_RoutesNotAList_Reports() =>
        AssertSingleError(Load(WithG2.Replace(ForwardAnchor, ForwardAnchor + "      routes: {path: /x, group: g2}\n", StringComparison.Ordinal)),
            "httpServer.forwards[0].routes", "must be a list (got a mapping)");

    [Fact]
    public void Validate_SeveralBadRoutes_ReportsEveryErrorInFileOrder()
    {
        var result = Load(Routes("""
            - group: g2
            - path: v1
              model: "[x]"
              group: nope
            - name: a
              path: /a
              group: g1
            - name: a
              model: "*"
              group: g1
            """));

        Assert.Equal(
            [
                "httpServer.forwards[0].routes[0]",
                "httpServer.forwards[0].routes[1].path",
                "httpServer.forwards[0].routes[1].model",
                "httpServer.forwards[0].routes[1].group",
                "httpServer.forwards[0].routes[3].name",
            ],
            result.Errors.Select(e => e.Path));
    }

    // ---- upstreams[].models --------------------------------------------------------------------

    [Fact]
    public void Load_UpstreamModels_KeptAsWritten()
    {
        var config = LoadValid(OnUpstream0("models: [\"gpt-4o\", \"gpt-4o-mini\", \"o1*\"]"));

        Assert.Equal(["gpt-4o", "gpt-4o-mini", "o1*"], config.Upstreams[0].Models);
        Assert.Null(config.Upstreams[1].Models);
    }

    [Fact]
    public void Validate_UpstreamModelsEmpty_ReportsServesNothing() =>
        AssertSingleError(Load(OnUpstream0("models: []")), "upstreams[0].models", "must list at least one model glob (omit the key to serve any model)");

    [Fact]
    public void Validate_UpstreamModelsBadGlob_ReportsItem() =>
        AssertSingleError(Load(OnUpstream0("models:\n  - gpt-4o\n  - \"gpt-[4]\"")), "upstreams[0].models[1]", "'[' is not allowed (character classes, alternatives and escapes are not supported) (got \"gpt-[4]\")");

    [Fact]
    public void Validate_UpstreamModelsItemNotString_ReportsType() =>
        AssertSingleError(Load(OnUpstream0("models:\n  - {name: gpt-4o}")), "upstreams[0].models[0]", "must be a string (got a mapping)");

    [Fact]
    public void Validate_UpstreamModelsNotAList_ReportsType() =>
        AssertSingleError(Load(OnUpstream0("models: gpt-4o")), "upstreams[0].models", "must be a list (got a single value)");

    // ---- upstreams[].modelMap ------------------------------------------------------------------

    [Fact]
    public void Load_ModelMap_LooksUpIgnoringCase()
    {
        var config = LoadValid(OnUpstream0("modelMap:\n  gpt-4o: gpt-4o-2024-08-06\n  \"Claude Sonnet\": \"claude-3-5-sonnet-20241022\""));

        var map = config.Upstreams[0].ModelMap;
        Assert.NotNull(map);
        Assert.Equal(2, map.Count);
        Assert.Equal("gpt-4o-2024-08-06", map["GPT-4o"]);
        Assert.Equal("claude-3-5-sonnet-20241022", map["claude sonnet"]);
        Assert.Null(config.Upstreams[1].ModelMap);
    }

    [Fact]
    public void Load_ModelMapValueFromEnvironment_ExpandedKeyLiteral()
    {
        var config = LoadValid(OnUpstream0("modelMap:\n  \"${K}\": \"${DEPLOYMENT}\""), new Dictionary<string, string> { ["DEPLOYMENT"] = "my-4o", ["K"] = "unused" });

        Assert.Equal("my-4o", config.Upstreams[0].ModelMap!["${K}"]);
    }

    [Fact]
    public void Load_ModelMapEmpty_IsNoMapping() =>
        Assert.Null(LoadValid(OnUpstream0("modelMap: {}")).Upstreams[0].ModelMap);

    [Fact]
    public void Load_ModelMapKeysAdmittedByModels_Loads()
    {
        var config = LoadValid(OnUpstream0("models: [\"gpt-4o*\"]\nmodelMap:\n  gpt-4o: gpt-4o-2024-08-06\n  GPT-4O-MINI: gpt-4o-mini-2024-07-18"));

        Assert.Equal(2, config.Upstreams[0].ModelMap!.Count);
    }

    [Fact]
    public void Validate_ModelMapKeyNotAdmittedByModels_ReportsDeadMapping() =>
        AssertSingleError(Load(OnUpstream0("models: [\"gpt-4o*\"]\nmodelMap:\n  o1: o1-2024-12-17")),
            "upstreams[0].modelMap[\"o1\"]", "no entry of upstreams[0].models matches this model");

    [Fact]
    public void Validate_ModelMapWithInvalidModels_ReportsOnlyTheModelsError() =>
        AssertSingleError(Load(OnUpstream0("models: [\"[x]\"]\nmodelMap:\n  o1: o1-2024-12-17")), "upstreams[0].models[0]");

    [Fact]
    public void Validate_ModelMapKeysDifferingOnlyInCase_ReportsSecond() =>
        AssertSingleError(Load(OnUpstream0("modelMap:\n  gpt-4o: a\n  GPT-4o: b")),
            "upstreams[0].modelMap[\"GPT-4o\"]", "duplicate model (keys are compared ignoring case; first defined at upstreams[0].modelMap[\"gpt-4o\"])");

    [Theory]
    [InlineData("\"gpt-4o*\"", "keys are exact model names, not globs")]
    [InlineData("\"gpt-?o\"", "keys are exact model names, not globs")]
    [InlineData("\" gpt\"", "model name must not start or end with whitespace")]
    [InlineData("\"\"", "model name must not be empty")]
    public void Validate_ModelMapBadKey_Reports(string key, string message) =>
        AssertError(Load(OnUpstream0($"modelMap:\n  {key}: x")), $"upstreams[0].modelMap[{key}]", message);

    [Theory]
    [InlineData("\"\"", "must not be empty")]
    [InlineData("\"a\\nb\"", "must not contain control characters")]
    [InlineData("\"x \"", "must not start or end with whitespace")]
    public void Validate_ModelMapBadValue_Reports(string value, string message) =>
        AssertSingleError(Load(OnUpstream0($"modelMap:\n  gpt-4o: {value}")), "upstreams[0].modelMap[\"gpt-4o\"]", message);

    [Fact]
    public void Validate_ModelMapValueNotString_ReportsType() =>
        AssertSingleError(Load(OnUpstream0("modelMap:\n  gpt-4o: [a]")), "upstreams[0].modelMap[\"gpt-4o\"]", "must be a string (got a list)");

    [Fact]
    public void Validate_ModelMapValueEmptyYaml_ReportsType() =>
        AssertSingleError(Load(OnUpstream0("modelMap:\n  gpt-4o:")), "upstreams[0].modelMap[\"gpt-4o\"]", "must be a string (got an empty value)");

    [Fact]
    public void Validate_ModelMapKeyNotScalar_Reports() =>
        AssertSingleError(Load(OnUpstream0("modelMap:\n  ? [a, b]\n  : x")), "upstreams[0].modelMap", "keys must be plain names (got a list)");

    [Fact]
    public void Validate_ModelMapNotAMapping_ReportsType() =>
        AssertSingleError(Load(OnUpstream0("modelMap: [gpt-4o]")), "upstreams[0].modelMap", "must be a mapping (got a list)");

    [Fact]
    public void Validate_UpstreamUnknownKeyNearModels_Suggests() =>
        AssertSingleError(Load(OnUpstream0("modelmap: {}")), "upstreams[0].modelmap", "did you mean 'modelMap'?");

    // ---- reload equality -----------------------------------------------------------------------

    [Fact]
    public void ConfigEquality_RoutingKeysLoadedTwice_SameAndEachChangeSeen()
    {
        static string Yaml(string route, string model, string mapped) =>
            Routes($"- path: {route}\n  group: g2\n- model: \"gpt-4o*\"\n  group: g1")
                .Replace(Upstream0Anchor, Upstream0Anchor + $"    models: [\"{model}\"]\n    modelMap: {{gpt-4o: {mapped}}}\n", StringComparison.Ordinal);
        var config = LoadValid(Yaml("/v1/messages", "gpt-4o*", "gpt-4o-2024-08-06"));

        Assert.True(ConfigEquality.Same(config, LoadValid(Yaml("/v1/messages", "gpt-4o*", "gpt-4o-2024-08-06"))));
        Assert.False(ConfigEquality.Same(config, LoadValid(Yaml("/v1/embeddings", "gpt-4o*", "gpt-4o-2024-08-06"))));
        Assert.False(ConfigEquality.Same(config, LoadValid(Yaml("/v1/messages", "gpt-4*", "gpt-4o-2024-08-06"))));
        Assert.False(ConfigEquality.Same(config, LoadValid(Yaml("/v1/messages", "gpt-4o*", "gpt-4o-2024-11-20"))));
    }

    // ---- summary -------------------------------------------------------------------------------

    [Fact]
    public void Summarize_RoutesAndModelKeys_Counted()
    {
        var yaml = Routes("- path: /v1/messages\n  group: g2\n- model: gpt-4o\n  group: g1")
            .Replace(Upstream0Anchor, Upstream0Anchor + "    models: [\"gpt-4o*\"]\n    modelMap: {gpt-4o: gpt-4o-2024-08-06}\n", StringComparison.Ordinal);

        var summary = ConfigSummary.Summarize(LoadValid(yaml));

        Assert.Contains("f1  0.0.0.0:3000 -> g1  (no ratelimit, 2 route(s))", summary, StringComparison.Ordinal);
        Assert.Contains("1 model glob(s), 1 model mapping(s)", summary, StringComparison.Ordinal);
    }

    // ---- recheck (SPEC §13.4) -----------------------------------------------------------------------

    [Fact]
    public void Recheck_DefaultsToTenMinutes_ZeroMeansNever()
    {
        Assert.Equal(600_000, LoadValid(Valid).Upstreams[0].Recheck);
        Assert.Equal(0, LoadValid(OnUpstream0("recheck: 0")).Upstreams[0].Recheck);
        Assert.Equal(5000, LoadValid(OnUpstream0("recheck: 5000")).Upstreams[0].Recheck);
    }

    [Fact]
    public void Recheck_Negative_ErrorWithItsPath() =>
        AssertSingleError(Load(OnUpstream0("recheck: -1")), "upstreams[0].recheck", "must be at least 0");
}
