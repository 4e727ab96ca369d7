using System.Text;
using LLMProxy.Configuration;
using static LLMProxy.Tests.Configuration.ConfigTestYaml;

namespace LLMProxy.Tests.Configuration;

/// <summary>The loader is bounded: hostile YAML (alias bombs, cycles, huge files, huge counts) is refused with
/// one clear error, and the error shows which budget stopped the work — no timing guards needed.</summary>
public class ConfigLoaderLimitsTests
{
    /// <summary>Root-level keys that make any config an alias bomb whose last alias is a mapping key.</summary>
    internal static string LaughsAsKey => Laughs(i => $"l{i}: &a{i} [ALIASES]") + "? *a9\n: x\n";

    /// <summary>Nine levels of nine aliases each: under 500 bytes, 9^9 (387 million) nodes once expanded.</summary>
    internal static string Laughs(Func<int, string> line)
    {
        var s = new StringBuilder("l0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
        for (var i = 1; i <= 9; i++)
        {
            s.Append(line(i).Replace("ALIASES", string.Join(", ", Enumerable.Repeat($"*a{i - 1}", 9)), StringComparison.Ordinal)).Append('\n');
        }
        return s.ToString();
    }

    [Fact]
    public void LoadYaml_BillionLaughsAsValues_RefusedByNodeBudget()
    {
        var yaml = Laughs(i => $"l{i}: &a{i} [ALIASES]");
        Assert.True(yaml.Length < 1024);

        var error = AssertSingleError(Load(yaml), "", "more than 100000 nodes");

        Assert.StartsWith("configuration refused at line ", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void LoadYaml_BillionLaughsAsMappingKey_RefusedBeforeKeyIsHashed()
    {
        // YamlDotNet hashes a mapping key by walking it: this file used to hang the loader for minutes.
        AssertSingleError(Load(LaughsAsKey), "", "more than 100000 nodes");
    }

    [Fact]
    public void LoadYaml_BillionLaughsAsUpstreams_RefusedBeforeReading() =>
        AssertSingleError(Load(Laughs(i => $"l{i}: &a{i} [ALIASES]") + "upstreams: *a9\n"), "", "more than 100000 nodes");

    [Fact]
    public void LoadYaml_BillionLaughsThroughMergeKeys_RefusedByNodeBudget()
    {
        // Each level merges nine copies of the one below: merges go through aliases, so the guard charges them as it
        // charges any alias, and the document is refused before a merge is walked.
        var s = new StringBuilder("l0: &a0 {k0: lol, k1: lol, k2: lol, k3: lol, k4: lol, k5: lol, k6: lol, k7: lol, k8: lol}\n");
        for (var i = 1; i <= 9; i++)
        {
            s.Append($"l{i}: &a{i} {{<<: [{string.Join(", ", Enumerable.Repeat($"*a{i - 1}", 9))}]}}\n");
        }
        var yaml = Valid + s + "cluster:\n  <<: *a9\n";

        AssertSingleError(Load(yaml), "", "more than 100000 nodes");
    }

    [Theory]
    [InlineData("? &a [*a]\n: x\n")]
    [InlineData("a: &x [1, *x]\n")]
    [InlineData("upstreams: &x [{name: u1, url: *x}]\n")]
    [InlineData("httpServer: &s\n  forwards:\n    - *s\n")]
    public void LoadYaml_AliasInsideItsOwnAnchor_RefusedAsCycle(string yaml) =>
        // Each of these overflowed the stack (YamlDotNet's key hashing or the reader), killing the process.
        AssertSingleError(Load(yaml), "", "refers to a node that contains it (a cycle)");

    [Fact]
    public void LoadYaml_ListWithTooManyItems_Refused()
    {
        var yaml = "upstreams: [" + string.Join(",", Enumerable.Repeat("1", ConfigLimits.MaxEntries + 1)) + "]\n";

        AssertSingleError(Load(yaml), "", "a list has more than 10000 entries");
    }

    [Fact]
    public void LoadYaml_MappingWithTooManyKeys_Refused()
    {
        var yaml = string.Concat(Enumerable.Range(0, ConfigLimits.MaxEntries + 1).Select(i => $"k{i}: 1\n"));

        AssertSingleError(Load(yaml), "", "a mapping has more than 10000 entries");
    }

    [Fact]
    public void LoadYaml_TooManyAliases_Refused()
    {
        var yaml = "a: &a 1\nb: [" + string.Join(",", Enumerable.Repeat("*a", ConfigLimits.MaxAliases + 1)) + "]\n";

        AssertSingleError(Load(yaml), "", "more than 1000 aliases");
    }

    [Fact]
    public void LoadYaml_AliasesRepeatingLongText_RefusedByTextBudget()
    {
        // 11 aliases of a 100,000-character scalar: a small file that would make the reader scan 1.1 million characters.
        var yaml = $"a: &t \"{new string('x', 100_000)}\"\nb: [{string.Join(",", Enumerable.Repeat("*t", 11))}]\n";

        AssertSingleError(Load(yaml), "", "more than 1048576 characters of text");
    }

    [Fact]
    public void LoadYaml_AliasNestingBeyondDepthLimit_Refused()
    {
        // Each part is 40 levels deep, which is fine alone; the alias puts one inside the other.
        var deep = new string('[', 40) + "1" + new string(']', 40);
        var yaml = $"a: &d {deep}\nb: {new string('[', 39)}*d{new string(']', 39)}\n";

        AssertSingleError(Load(yaml), "", "nesting is deeper than 64 levels (counting what aliases repeat)");
    }

    [Fact]
    public void LoadYaml_SharedBlocksThroughAliases_StillLoad()
    {
        var yaml = With(Upstream0Anchor, "    breaker: &shared\n      threshold: 0.25\n      minRequests: 3")
            .Replace(Upstream1Anchor, Upstream1Anchor + "    breaker: *shared\n", StringComparison.Ordinal);

        var config = LoadValid(yaml);

        Assert.Equal(config.Upstreams[0].Breaker, config.Upstreams[1].Breaker);
    }

    [Fact]
    public void LoadYaml_OverSizeLimit_RefusedWithoutParsing()
    {
        // Would be a YAML syntax error if it were parsed.
        var yaml = "upstreams: \"unterminated" + new string('x', ConfigLimits.MaxSize);

        var error = AssertSingleError(Load(yaml), "", "larger than 1 MiB");

        Assert.DoesNotContain("invalid YAML", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void LoadFile_ExactlyAtSizeLimit_Loads()
    {
        var padding = ConfigLimits.MaxSize - Encoding.UTF8.GetByteCount(Valid) - 2;
        var text = Valid + "#" + new string('x', padding) + "\n";
        Assert.Equal(ConfigLimits.MaxSize, Encoding.UTF8.GetByteCount(text));

        var result = WithFile(text, ConfigLoader.LoadFile);

        Assert.True(result.Success, Describe(result));
    }

    [Fact]
    public void LoadFile_OneByteOverSizeLimit_RefusedUnread()
    {
        var text = Valid + "#" + new string('x', ConfigLimits.MaxSize - Encoding.UTF8.GetByteCount(Valid)) + "\n";

        var error = AssertSingleError(WithFile(text, ConfigLoader.LoadFile), "");

        Assert.Contains("is larger than 1 MiB (the limit) and was not read", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void LoadFile_EndlessDevice_RefusedAfterReadingOnePastTheLimit()
    {
        // /dev/zero (Linux, like every target of this proxy) never ends and reports no length: the read must stop by itself.
        var error = AssertSingleError(ConfigLoader.LoadFile("/dev/zero"), "");

        Assert.Contains("larger than 1 MiB", error.Message, StringComparison.Ordinal);
    }

    private static ConfigLoadResult WithFile(string text, Func<string, Func<string, string?>?, ConfigLoadResult> load)
    {
        var path = Path.Combine(Path.GetTempPath(), $"llmproxy-limits-{Guid.NewGuid():N}.yaml");
        File.WriteAllText(path, text, new UTF8Encoding(false));
        try
        {
            return load(path, _ => null);
        }
        finally
        {
            File.Delete(path);
        }
    }
}
