using System.Text;
using System.Text.Json;
using LLMProxy.Forwarding;

namespace LLMProxy.Tests.Forwarding;

public class ModelRewriteTests
{
    private static byte[] Rewrite(string body, string newModel)
    {
        var bytes = Encoding.UTF8.GetBytes(body);
        return ModelRewrite.Rewrite(bytes, RequestFacts.Read(bytes), newModel);
    }

    /// <summary>Asserts <paramref name="rewritten"/> is <paramref name="original"/> with exactly the model token swapped.</summary>
    private static void AssertOnlyModelTokenChanged(byte[] original, byte[] rewritten, string newModelToken)
    {
        var facts = RequestFacts.Read(original);
        var token = Encoding.UTF8.GetBytes(newModelToken);
        var end = facts.ModelTokenOffset + facts.ModelTokenLength;

        Assert.Equal(original.Length - facts.ModelTokenLength + token.Length, rewritten.Length);
        Assert.True(original.AsSpan(0, facts.ModelTokenOffset).SequenceEqual(rewritten.AsSpan(0, facts.ModelTokenOffset)), "bytes before the model changed");
        Assert.True(token.AsSpan().SequenceEqual(rewritten.AsSpan(facts.ModelTokenOffset, token.Length)), "model token not as expected");
        Assert.True(original.AsSpan(end).SequenceEqual(rewritten.AsSpan(facts.ModelTokenOffset + token.Length)), "bytes after the model changed");
    }

    [Theory]
    [InlineData(RequestFactsTests.OpenAiChat)]
    [InlineData(RequestFactsTests.OpenAiResponses)]
    [InlineData(RequestFactsTests.OpenAiEmbeddings)]
    [InlineData(RequestFactsTests.OpenAiCompletions)]
    [InlineData(RequestFactsTests.AnthropicMessages)]
    public void Rewrite_RealBodies_OnlyTheModelBytesChange(string body)
    {
        var original = Encoding.UTF8.GetBytes(body);

        var rewritten = Rewrite(body, "gpt-4o-2024-08-06");

        AssertOnlyModelTokenChanged(original, rewritten, "\"gpt-4o-2024-08-06\"");
        var after = RequestFacts.Read(rewritten);
        var before = RequestFacts.Read(original);
        Assert.Equal("gpt-4o-2024-08-06", after.Model);
        Assert.Equal((before.Stream, before.MaxOutputTokens, before.IncludeUsage, before.User, before.PromptCacheKey, before.MetadataUserId),
            (after.Stream, after.MaxOutputTokens, after.IncludeUsage, after.User, after.PromptCacheKey, after.MetadataUserId));
    }

    [Fact]
    public void Rewrite_ShorterAndLongerNames_LengthFollows()
    {
        const string body = """{"model":"gpt-4o","stream":true}""";

        Assert.Equal("""{"model":"x","stream":true}""", Encoding.UTF8.GetString(Rewrite(body, "x")));
        Assert.Equal("""{"model":"a-much-longer-deployment-name","stream":true}""", Encoding.UTF8.GetString(Rewrite(body, "a-much-longer-deployment-name")));
    }

    [Fact]
    public void Rewrite_WhitespaceAndKeyOrderAsSent_Kept()
    {
        const string body = "{\r\n  \"stream\" : true ,\n\t\"model\"   :   \"gpt-4o\"  ,\"n\":1.50e+0 }\n";

        Assert.Equal("{\r\n  \"stream\" : true ,\n\t\"model\"   :   \"o1\"  ,\"n\":1.50e+0 }\n", Encoding.UTF8.GetString(Rewrite(body, "o1")));
    }

    [Theory]
    [InlineData("模型-é", "\"模型-é\"")] // non-ASCII sent as UTF-8, not escaped
    [InlineData("a\"b\\c", "\"a\\\"b\\\\c\"")] // quote and backslash escaped
    [InlineData("tab\there", "\"tab\\there\"")]
    [InlineData("gpt+4o<x>&'y'", "\"gpt+4o<x>&'y'\"")] // no HTML-style escaping: a request body is not HTML
    [InlineData("smile-😀", "\"smile-\\uD83D\\uDE00\"")] // outside the BMP: a valid JSON surrogate escape
    public void Rewrite_NamesThatNeedEncoding_ValidJsonThatDecodesToTheName(string newModel, string expectedToken)
    {
        const string body = """{"model":"gpt-4o","user":"u"}""";

        var rewritten = Rewrite(body, newModel);

        AssertOnlyModelTokenChanged(Encoding.UTF8.GetBytes(body), rewritten, expectedToken);
        using var document = JsonDocument.Parse(rewritten);
        Assert.Equal(newModel, document.RootElement.GetProperty("model").GetString());
        Assert.Equal("u", document.RootElement.GetProperty("user").GetString());
    }

    [Fact]
    public void Rewrite_EscapedModelInOriginal_WholeEscapedTokenReplaced()
    {
        const string body = """{"model":"gpt\u002d4o\/x","stream":false}""";

        Assert.Equal("""{"model":"gpt-4o-2024-08-06","stream":false}""", Encoding.UTF8.GetString(Rewrite(body, "gpt-4o-2024-08-06")));
    }

    [Fact]
    public void Rewrite_DuplicateModel_ReplacesTheLastOne()
    {
        const string body = """{"model":"first","model":"second"}""";

        Assert.Equal("""{"model":"first","model":"mapped"}""", Encoding.UTF8.GetString(Rewrite(body, "mapped")));
    }

    [Fact]
    public void Rewrite_BodyWithByteOrderMark_KeepsIt()
    {
        byte[] body = [0xEF, 0xBB, 0xBF, .. """{"model":"a"}"""u8];

        var rewritten = ModelRewrite.Rewrite(body, RequestFacts.Read(body), "bb");

        Assert.Equal([0xEF, 0xBB, 0xBF, .. """{"model":"bb"}"""u8], rewritten);
    }

    [Fact]
    public void Rewrite_PrecomputedToken_SameAsFromName()
    {
        var body = Encoding.UTF8.GetBytes(RequestFactsTests.AnthropicMessages);
        var facts = RequestFacts.Read(body);
        var token = ModelRewrite.EncodeModel("claude-3-5-sonnet-latest");

        Assert.Equal(ModelRewrite.Rewrite(body, facts, "claude-3-5-sonnet-latest"), ModelRewrite.Rewrite(body, facts, token));
        Assert.Equal("\"claude-3-5-sonnet-latest\""u8.ToArray(), token);
    }

    [Fact]
    public void Rewrite_FactsWithoutModelToken_Throws()
    {
        var body = """{"model":5}"""u8.ToArray();

        Assert.Throws<ArgumentException>(() => ModelRewrite.Rewrite(body, RequestFacts.Read(body), "x"));
        Assert.Throws<ArgumentException>(() => ModelRewrite.Rewrite(body, default, "x"));
    }

    [Fact]
    public void Rewrite_FactsFromAnotherBody_Throws()
    {
        var facts = RequestFacts.Read("""{"messages":[],"model":"gpt-4o"}"""u8);

        Assert.Throws<ArgumentException>(() => ModelRewrite.Rewrite("""{"model":"gpt-4o"}"""u8, facts, "x"));
        Assert.Throws<ArgumentException>(() => ModelRewrite.Rewrite("""{"model":1234567890123}"""u8, facts, "x"));
    }

    [Fact]
    public void Rewrite_TokenWithoutQuotes_Throws()
    {
        var body = """{"model":"a"}"""u8.ToArray();

        Assert.Throws<ArgumentException>(() => ModelRewrite.Rewrite(body, RequestFacts.Read(body), "b"u8));
    }
}
