using System.Text;
using LLMProxy.Routing;

namespace LLMProxy.Tests.Routing;

public class ModelGlobTests
{
    [Theory]
    [InlineData("gpt-4o", "gpt-4o")]
    [InlineData("gpt-4o", "GPT-4O")]
    [InlineData("gpt-4o*", "gpt-4o")]
    [InlineData("gpt-4o*", "gpt-4o-mini")]
    [InlineData("gpt-4o*", "GPT-4o-2024-08-06")]
    [InlineData("*", "")]
    [InlineData("*", "anything at all")]
    [InlineData("**", "x")]
    [InlineData("text-embedding-*", "text-embedding-3-small")]
    [InlineData("*-mini", "gpt-4o-mini")]
    [InlineData("claude-*-sonnet*", "claude-3-5-sonnet-20241022")]
    [InlineData("claude-*-sonnet*", "claude-3-7-sonnet")]
    [InlineData("gpt-?o", "gpt-4o")]
    [InlineData("gpt-?o*", "gpt-4o-mini")]
    [InlineData("???", "abc")]
    [InlineData("a*b*c", "abc")]
    [InlineData("a*b*c", "aXbYbZc")]
    [InlineData("a*ab", "aaab")]
    [InlineData("*a?c*", "xxabbabcyy")]
    [InlineData("openai/gpt-4o", "OpenAI/GPT-4o")]
    [InlineData("é*", "É-model")]
    public void IsMatch_MatchingModel_ReturnsTrue(string pattern, string model) =>
        Assert.True(ModelGlob.Parse(pattern).IsMatch(model));

    [Theory]
    [InlineData("gpt-4o", "gpt-4o-mini")]
    [InlineData("gpt-4o", "gpt-4")]
    [InlineData("gpt-4o", "")]
    [InlineData("gpt-4o*", "gpt-4")]
    [InlineData("gpt-4o*", "xgpt-4o")]
    [InlineData("*-mini", "gpt-4o-mini-2024")]
    [InlineData("gpt-?o", "gpt-o")]
    [InlineData("gpt-?o", "gpt-40o")]
    [InlineData("???", "ab")]
    [InlineData("???", "abcd")]
    [InlineData("a*b*c", "acb")]
    [InlineData("a*a", "a")] // head and tail may not share the one character
    [InlineData("ab*ba", "aba")]
    [InlineData("*x*y*", "yx")]
    [InlineData("straße*", "STRASSE")] // ordinal-ignore-case is one character for one: ß never equals SS
    public void IsMatch_NonMatchingModel_ReturnsFalse(string pattern, string model) =>
        Assert.False(ModelGlob.Parse(pattern).IsMatch(model));

    [Theory]
    [InlineData("gpt-4o", true)]
    [InlineData("gpt-4o*", false)]
    [InlineData("gpt-?o", false)]
    public void IsLiteral_Pattern_TrueOnlyWithoutWildcards(string pattern, bool literal) =>
        Assert.Equal(literal, ModelGlob.Parse(pattern).IsLiteral);

    [Theory]
    [InlineData("", "must not be empty")]
    [InlineData(" gpt-4o", "must not start or end with whitespace")]
    [InlineData("gpt-4o\t", "must not start or end with whitespace")]
    [InlineData("gpt\n4o", "must not contain control characters")]
    [InlineData("gpt\u00014o", "must not contain control characters")]
    [InlineData("gpt-[45]o", "'[' is not allowed")]
    [InlineData("gpt-4o]", "']' is not allowed")]
    [InlineData("{gpt,o1}*", "'{' is not allowed")]
    [InlineData("gpt\\*", "'\\' is not allowed")]
    public void Validate_InvalidPattern_ExplainsWhy(string pattern, string expected)
    {
        var error = ModelGlob.Validate(pattern);

        Assert.NotNull(error);
        Assert.Contains(expected, error, StringComparison.Ordinal);
        Assert.Throws<ArgumentException>(() => ModelGlob.Parse(pattern));
    }

    [Fact]
    public void Validate_LoneSurrogate_ReportsInvalidUnicode()
    {
        // Built at run time: a lone surrogate does not survive the trip through attribute metadata.
        Assert.Contains("lone surrogate", ModelGlob.Validate("gpt" + (char)0xD800 + "x"), StringComparison.Ordinal);
        Assert.Contains("lone surrogate", ModelGlob.NameProblem("gpt" + (char)0xDC00), StringComparison.Ordinal);
    }

    [Fact]
    public void Validate_Null_IsEmpty() => Assert.Equal("must not be empty", ModelGlob.Validate(null));

    [Fact]
    public void Validate_LongerThanMax_ReportsLength()
    {
        Assert.Null(ModelGlob.Validate(new string('a', ModelGlob.MaxLength)));
        Assert.Equal("must be at most 256 characters (got 257)", ModelGlob.Validate(new string('a', ModelGlob.MaxLength + 1)));
    }

    [Theory]
    [InlineData("gpt-4o")]
    [InlineData("accounts/fireworks/models/llama-v3p1-8b-instruct")]
    [InlineData("claude-3-5-sonnet@20240620")]
    [InlineData("llama3:8b")]
    [InlineData("模型-😀")]
    public void Validate_RealModelNames_Accepted(string name)
    {
        Assert.Null(ModelGlob.Validate(name));
        Assert.Null(ModelGlob.NameProblem(name));
        Assert.True(ModelGlob.Parse(name).IsMatch(name));
    }

    [Fact]
    public void NameProblem_BracketsInExactName_Allowed() =>
        Assert.Null(ModelGlob.NameProblem("model[1]"));

    [Fact]
    public void IsMatch_AfterWarmUp_DoesNotAllocate()
    {
        var globs = new[] { ModelGlob.Parse("gpt-4o"), ModelGlob.Parse("claude-*-sonnet*"), ModelGlob.Parse("*a?c*"), ModelGlob.Parse("*") };
        const string model = "claude-3-5-sonnet-20241022";
        foreach (var glob in globs) glob.IsMatch(model);

        var before = GC.GetAllocatedBytesForCurrentThread();
        var matches = 0;
        for (var i = 0; i < 1000; i++)
        {
            foreach (var glob in globs) matches += glob.IsMatch(model) ? 1 : 0;
        }
        var allocated = GC.GetAllocatedBytesForCurrentThread() - before;

        Assert.Equal(2000, matches);
        Assert.Equal(0, allocated);
    }

    [Fact]
    public void IsMatch_ManyStarsAgainstLongText_StaysFast()
    {
        // The classic exponential case for backtracking matchers; here each part is placed once.
        var glob = ModelGlob.Parse(string.Concat(Enumerable.Repeat("a*", 60)) + "b");
        var text = new string('a', 10_000);

        var started = System.Diagnostics.Stopwatch.StartNew();
        Assert.False(glob.IsMatch(text));
        Assert.True(started.Elapsed < TimeSpan.FromSeconds(1));
    }

    /// <summary>Property: on random patterns and texts over a small alphabet (so matches are common), the
    /// compiled glob agrees with a textbook dynamic-programming matcher.</summary>
    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    public void IsMatch_RandomPatterns_AgreesWithReferenceMatcher(int seed)
    {
        var random = new Random(seed);
        const string patternAlphabet = "abAB-**??";
        const string textAlphabet = "abAB-";
        for (var run = 0; run < 5000; run++)
        {
            var pattern = RandomText(random, patternAlphabet, random.Next(1, 9));
            var text = random.Next(4) == 0 ? MatchingText(random, pattern, textAlphabet) : RandomText(random, textAlphabet, random.Next(0, 12));

            var expected = ReferenceMatch(pattern, text);

            Assert.True(expected == ModelGlob.Parse(pattern).IsMatch(text), $"pattern '{pattern}' text '{text}' expected {expected}");
        }
    }

    private static string RandomText(Random random, string alphabet, int length)
    {
        var s = new StringBuilder(length);
        for (var i = 0; i < length; i++) s.Append(alphabet[random.Next(alphabet.Length)]);
        return s.ToString();
    }

    /// <summary>A text built from the pattern itself, so the matching side of the property is exercised often.</summary>
    private static string MatchingText(Random random, string pattern, string alphabet)
    {
        var s = new StringBuilder();
        foreach (var c in pattern)
        {
            if (c == '*') s.Append(RandomText(random, alphabet, random.Next(0, 4)));
            else if (c == '?') s.Append(alphabet[random.Next(alphabet.Length)]);
            else s.Append(random.Next(2) == 0 ? char.ToUpperInvariant(c) : char.ToLowerInvariant(c));
        }
        return s.ToString();
    }

    private static bool ReferenceMatch(string pattern, string text)
    {
        // matches[i, j]: pattern[..i] matches text[..j]
        var matches = new bool[pattern.Length + 1, text.Length + 1];
        matches[0, 0] = true;
        for (var i = 1; i <= pattern.Length; i++)
        {
            var p = pattern[i - 1];
            for (var j = 0; j <= text.Length; j++)
            {
                matches[i, j] = p == '*'
                    ? matches[i - 1, j] || (j > 0 && matches[i, j - 1])
                    : j > 0 && matches[i - 1, j - 1] && (p == '?' || char.ToUpperInvariant(p) == char.ToUpperInvariant(text[j - 1]));
            }
        }
        return matches[pattern.Length, text.Length];
    }
}
