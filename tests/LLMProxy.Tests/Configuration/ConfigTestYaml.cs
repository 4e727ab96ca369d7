using LLMProxy.Configuration;

namespace LLMProxy.Tests.Configuration;

/// <summary>A small valid config plus helpers to splice in one change and check the reported errors.</summary>
internal static class ConfigTestYaml
{
    // Anchor lines: each is unique in Valid, and text inserted after it uses the indentation noted.
    public const string HttpServerAnchor = "httpServer:\n";                                      // indent 2
    public const string ForwardAnchor = "      defaultGroup: g1\n";                              // indent 6
    public const string Upstream0Anchor = "    url: \"https://api.example.com/v1/chat/completions\"\n"; // indent 4
    public const string Upstream1Anchor = "    url: \"https://api2.example.com\"\n";             // indent 4
    public const string GroupAnchor = "  - name: g1\n";                                          // indent 4

    public const string Valid = """
        httpServer:
          forwards:
            - name: f1
              port: 3000
              defaultGroup: g1
        upstreams:
          - name: u1
            url: "https://api.example.com/v1/chat/completions"
          - name: u2
            url: "https://api2.example.com"
        upstreamGroups:
          - name: g1
            upstreams:
              - name: u1
              - name: u2

        """;

    /// <summary>Valid with <paramref name="lines"/> inserted after <paramref name="anchor"/>.</summary>
    public static string With(string anchor, string lines)
    {
        Assert.Contains(anchor, Valid, StringComparison.Ordinal);
        var text = lines.EndsWith('\n') ? lines : lines + "\n";
        return Valid.Replace(anchor, anchor + text, StringComparison.Ordinal);
    }

    /// <summary>Valid with one exact piece of text replaced.</summary>
    public static string Replace(string from, string to)
    {
        Assert.Contains(from, Valid, StringComparison.Ordinal);
        return Valid.Replace(from, to, StringComparison.Ordinal);
    }

    public static ConfigLoadResult Load(string yaml, IReadOnlyDictionary<string, string>? env = null) =>
        ConfigLoader.LoadYaml(yaml, name => env is not null && env.TryGetValue(name, out var v) ? v : null);

    public static ProxyConfig LoadValid(string yaml, IReadOnlyDictionary<string, string>? env = null)
    {
        var result = Load(yaml, env);
        Assert.True(result.Success, "expected no errors, got:\n" + Describe(result));
        return result.Config!;
    }

    /// <summary>Asserts the load failed with an error at exactly <paramref name="path"/> (and optional message text).</summary>
    public static ConfigError AssertError(ConfigLoadResult result, string path, string? messageContains = null)
    {
        Assert.False(result.Success);
        Assert.Null(result.Config);
        var match = result.Errors.FirstOrDefault(e =>
            e.Path == path && (messageContains is null || e.Message.Contains(messageContains, StringComparison.Ordinal)));
        Assert.True(match is not null,
            $"expected an error at '{path}'{(messageContains is null ? "" : $" containing '{messageContains}'")}, got:\n{Describe(result)}");
        return match!;
    }

    public static ConfigError AssertSingleError(ConfigLoadResult result, string path, string? messageContains = null)
    {
        var error = AssertError(result, path, messageContains);
        Assert.True(result.Errors.Count == 1, "expected exactly one error, got:\n" + Describe(result));
        return error;
    }

    public static string Describe(ConfigLoadResult result) =>
        result.Errors.Count == 0 ? "(no errors)" : string.Join("\n", result.Errors.Select(e => "  " + e));

    /// <summary>The repository root (where LLMProxy.slnx lives), found by walking up from the test binaries.</summary>
    public static string RepoRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "LLMProxy.slnx"))) return dir.FullName;
        }
        throw new InvalidOperationException("LLMProxy.slnx not found above " + AppContext.BaseDirectory);
    }

    public static string DefaultConfigPath => Path.Combine(RepoRoot(), "config.default.yaml");
}
