using System.Text;
using System.Text.Json;
using LLMProxy.Forwarding;

namespace LLMProxy.Tests.Forwarding;

public class RequestFactsTests
{
    // ---- real request bodies -------------------------------------------------------------------

    internal const string OpenAiChat = """
        {
          "model": "gpt-4o",
          "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": [
              {"type": "text", "text": "What is in this image? Reply with a \"model\": name."},
              {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "low"}}
            ]}
          ],
          "tools": [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object",
            "properties": {"model": {"type": "string"}, "max_tokens": {"type": "integer"}}}}}],
          "temperature": 0.2,
          "stream": true,
          "stream_options": {"include_usage": true},
          "max_completion_tokens": 1024,
          "user": "user-1234",
          "prompt_cache_key": "tenant-42/chat",
          "metadata": {"user_id": "not-anthropic-but-read", "trace": {"user_id": "deeper"}}
        }
        """;

    internal const string OpenAiResponses = """
        {"model":"o3-mini","input":[{"role":"user","content":[{"type":"input_text","text":"hi"}]}],"reasoning":{"effort":"low"},"max_output_tokens":2048,"stream":false,"store":false,"prompt_cache_key":"pck","metadata":{"user_id":"u-9"}}
        """;

    internal const string OpenAiEmbeddings = """
        {"input": ["The food was delicious", "and the waiter..."], "model": "text-embedding-3-small", "encoding_format": "float", "user": "embedder"}
        """;

    internal const string OpenAiCompletions = """
        {"model": "gpt-3.5-turbo-instruct", "prompt": "Say this is a test", "max_tokens": 7, "temperature": 0}
        """;

    internal const string AnthropicMessages = """
        {
            "model": "claude-3-5-sonnet-20241022",
            "max_tokens": 1024,
            "system": [{"type": "text", "text": "You are a helpful assistant.", "cache_control": {"type": "ephemeral"}}],
            "messages": [
                {"role": "user", "content": "Hello, Claude"},
                {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_01", "name": "get_weather", "input": {"model": "nested"}}]}
            ],
            "metadata": {"user_id": "13803d75-b4b5-4c3e-b2a2-6f21399b021b"},
            "stream": true
        }
        """;

    private static RequestFacts Read(string json) => RequestFacts.Read(Encoding.UTF8.GetBytes(json));

    /// <summary>The body text of the model token, quotes included.</summary>
    private static string TokenText(string json, RequestFacts facts) =>
        Encoding.UTF8.GetString(Encoding.UTF8.GetBytes(json), facts.ModelTokenOffset, facts.ModelTokenLength);

    [Fact]
    public void Read_OpenAiChat_AllFacts()
    {
        var facts = Read(OpenAiChat);

        Assert.True(facts.IsJsonObject);
        Assert.Equal("gpt-4o", facts.Model);
        Assert.Equal("\"gpt-4o\"", TokenText(OpenAiChat, facts));
        Assert.True(facts.Stream);
        Assert.True(facts.IncludeUsage);
        Assert.Equal(1024, facts.MaxOutputTokens);
        Assert.Equal("user-1234", facts.User);
        Assert.Equal("tenant-42/chat", facts.PromptCacheKey);
        Assert.Equal("not-anthropic-but-read", facts.MetadataUserId);
    }

    [Fact]
    public void Read_OpenAiResponses_MaxOutputTokensAndNoStreamOptions()
    {
        var facts = Read(OpenAiResponses);

        Assert.Equal("o3-mini", facts.Model);
        Assert.False(facts.Stream);
        Assert.Null(facts.IncludeUsage);
        Assert.Equal(2048, facts.MaxOutputTokens);
        Assert.Equal("pck", facts.PromptCacheKey);
        Assert.Equal("u-9", facts.MetadataUserId);
        Assert.Null(facts.User);
    }

    [Fact]
    public void Read_OpenAiEmbeddings_ModelAfterInput()
    {
        var facts = Read(OpenAiEmbeddings);

        Assert.Equal("text-embedding-3-small", facts.Model);
        Assert.Equal("\"text-embedding-3-small\"", TokenText(OpenAiEmbeddings, facts));
        Assert.Null(facts.Stream);
        Assert.Null(facts.MaxOutputTokens);
        Assert.Equal("embedder", facts.User);
    }

    [Fact]
    public void Read_OpenAiCompletions_MaxTokens()
    {
        var facts = Read(OpenAiCompletions);

        Assert.Equal("gpt-3.5-turbo-instruct", facts.Model);
        Assert.Equal(7, facts.MaxOutputTokens);
    }

    [Fact]
    public void Read_AnthropicMessages_AllFactsAndNestedModelIgnored()
    {
        var facts = Read(AnthropicMessages);

        Assert.Equal("claude-3-5-sonnet-20241022", facts.Model);
        Assert.Equal(1024, facts.MaxOutputTokens);
        Assert.True(facts.Stream);
        Assert.Null(facts.IncludeUsage);
        Assert.Equal("13803d75-b4b5-4c3e-b2a2-6f21399b021b", facts.MetadataUserId);
        Assert.Null(facts.User);
        Assert.Null(facts.PromptCacheKey);
    }

    [Theory]
    [InlineData("""{"model":"a","MODEL":"b"}""", true)]
    [InlineData("""{"Model":"b","model":"a"}""", true)]
    [InlineData("""{"mOdEl":5}""", true)]
    [InlineData("""{"model":"a","\u004Dodel":"b"}""", true)]
    [InlineData("""{"model":"a","mod\u0065l":"b"}""", false)] // escaped, but exactly "model": the last one wins
    [InlineData("""{"model":"a","models":"b","modeL_":"c","messages":[{"MODEL":"b"}]}""", false)]
    public void Read_KeyThatIsModelInAnotherCase_Flagged(string json, bool variant)
    {
        var facts = Read(json);
        Assert.True(facts.IsJsonObject);
        Assert.Equal(variant, facts.HasModelVariant);
    }

    [Fact]
    public void Read_EmptyObject_JsonWithoutFacts()
    {
        var facts = Read("{}");

        Assert.True(facts.IsJsonObject);
        Assert.Null(facts.Model);
        Assert.False(facts.HasModelToken);
    }

    [Fact]
    public void Read_ModelOnlyNested_NoModel()
    {
        var facts = Read("""{"messages":[{"model":"x"}],"metadata":{"model":"y"},"stream_options":{"model":"z"}}""");

        Assert.True(facts.IsJsonObject);
        Assert.Null(facts.Model);
    }

    [Fact]
    public void Read_WhitespaceAroundAndByteOrderMark_FactsWithOffsetsIntoTheWholeBody()
    {
        byte[] body = [0xEF, 0xBB, 0xBF, .. "\r\n\t {\"model\" :  \"gpt-4o\" } \n"u8];

        var facts = RequestFacts.Read(body);

        Assert.Equal("gpt-4o", facts.Model);
        Assert.Equal("\"gpt-4o\"", Encoding.UTF8.GetString(body, facts.ModelTokenOffset, facts.ModelTokenLength));
    }

    // ---- not JSON, or not whole ----------------------------------------------------------------

    [Theory]
    [InlineData("")]
    [InlineData("   ")]
    [InlineData("hello")]
    [InlineData("model=gpt-4o&stream=true")]
    [InlineData("--boundary\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\ngpt-4o\r\n--boundary--")]
    [InlineData("[{\"model\":\"gpt-4o\"}]")]
    [InlineData("\"gpt-4o\"")]
    [InlineData("null")]
    [InlineData("42")]
    [InlineData("{\"model\":\"gpt-4o\"")]
    [InlineData("{\"model\":\"gpt-4o\",}")]
    [InlineData("{\"model\":'gpt-4o'}")]
    [InlineData("{model:\"gpt-4o\"}")]
    [InlineData("{\"model\":\"gpt-4o\"} trailing")]
    [InlineData("{\"model\":\"gpt-4o\"}{\"model\":\"o1\"}")]
    [InlineData("{\"model\":\"gpt-4o\" /* comment */}")]
    [InlineData("{\"model\":\"gpt\n4o\"}")] // a raw line break inside a string is not JSON
    public void Read_NotAWholeJsonObject_NoFacts(string body)
    {
        var facts = Read(body);

        Assert.False(facts.IsJsonObject);
        Assert.Null(facts.Model);
        Assert.False(facts.HasModelToken);
        Assert.Null(facts.Stream);
    }

    [Fact]
    public void Read_EveryTruncationOfARealBody_NoFactsAndNoThrow()
    {
        var body = Encoding.UTF8.GetBytes(OpenAiChat.TrimEnd());

        for (var length = 0; length < body.Length; length++)
        {
            var facts = RequestFacts.Read(body.AsSpan(0, length));

            Assert.False(facts.IsJsonObject, $"prefix of {length} bytes");
            Assert.Null(facts.Model);
        }
        Assert.Equal("gpt-4o", RequestFacts.Read(body).Model);
    }

    [Fact]
    public void Read_NestedFarDeeperThanTheBound_NoFacts()
    {
        var body = "{\"model\":\"gpt-4o\",\"messages\":" + new string('[', 5000) + new string(']', 5000) + "}";

        Assert.False(Read(body).IsJsonObject);
    }

    [Fact]
    public void Read_NestedObjectsDeeperThanTheBound_NoFacts()
    {
        var body = "{\"model\":\"gpt-4o\",\"x\":" + string.Concat(Enumerable.Repeat("{\"a\":", 5000)) + "1" + new string('}', 5000) + "}";

        Assert.False(Read(body).IsJsonObject);
    }

    [Fact]
    public void Read_NestedWithinTheBound_FactsRead()
    {
        var depth = RequestFacts.MaxDepth - 1; // the root object is one level
        var body = "{\"x\":" + new string('[', depth) + new string(']', depth) + ",\"model\":\"gpt-4o\"}";

        Assert.Equal("gpt-4o", Read(body).Model);
    }

    // ---- duplicates, escapes, types ------------------------------------------------------------

    [Fact]
    public void Read_DuplicateModel_LastWinsAndTokenIsTheLast()
    {
        const string body = """{"model":"first","messages":[],"model":"second"}""";

        var facts = Read(body);

        Assert.Equal("second", facts.Model);
        Assert.Equal(body.LastIndexOf("\"second\"", StringComparison.Ordinal), facts.ModelTokenOffset);
        Assert.Equal("\"second\"", TokenText(body, facts));
    }

    [Fact]
    public void Read_ModelThenModelOfWrongType_NoModel()
    {
        var facts = Read("""{"model":"gpt-4o","model":5}""");

        Assert.True(facts.IsJsonObject);
        Assert.Null(facts.Model);
        Assert.False(facts.HasModelToken);
    }

    [Fact]
    public void Read_DuplicateStreamOptions_LastObjectWins()
    {
        Assert.Null(Read("""{"stream_options":{"include_usage":true},"stream_options":{}}""").IncludeUsage);
        Assert.False(Read("""{"stream_options":{"include_usage":true,"include_usage":false}}""").IncludeUsage);
    }

    [Fact]
    public void Read_EscapedModel_UnescapedWithTokenAsWritten()
    {
        const string body = """{"model":"gpt\u002d4o"}""";

        var facts = Read(body);

        Assert.Equal("gpt-4o", facts.Model);
        Assert.Equal("\"gpt\\u002d4o\"", TokenText(body, facts));
    }

    [Fact]
    public void Read_EscapedPropertyName_RecognisedAsTheUpstreamWould()
    {
        var facts = Read("""{"mod\u0065l":"gpt-4o","\u0073tream":true}""");

        Assert.Equal("gpt-4o", facts.Model);
        Assert.True(facts.Stream);
    }

    [Fact]
    public void Read_NonAsciiModel_TokenLengthInBytes()
    {
        const string body = """{"model":"模型-é-😀","stream":true}""";

        var facts = Read(body);

        Assert.Equal("模型-é-😀", facts.Model);
        Assert.Equal("\"模型-é-😀\"", TokenText(body, facts));
        Assert.True(facts.Stream);
    }

    [Fact]
    public void Read_KeysAreCaseSensitive_ModelIsNotModel() =>
        Assert.Null(Read("""{"Model":"gpt-4o","MODEL":"x"}""").Model);

    [Theory]
    [InlineData("5")]
    [InlineData("null")]
    [InlineData("true")]
    [InlineData("{\"name\":\"gpt-4o\"}")]
    [InlineData("[\"gpt-4o\"]")]
    public void Read_ModelNotAString_NoModelButOtherFactsRead(string value)
    {
        var facts = Read($$"""{"model":{{value}},"stream":true,"user":"u"}""");

        Assert.True(facts.IsJsonObject);
        Assert.Null(facts.Model);
        Assert.False(facts.HasModelToken);
        Assert.True(facts.Stream);
        Assert.Equal("u", facts.User);
    }

    [Theory]
    [InlineData("\"\\ud800\"")] // lone surrogate
    [InlineData("\"gpt\\n4o\"")] // control character
    [InlineData("\"gpt\\u0000\"")]
    [InlineData("\"gpt\\u0085\"")] // C1 control
    public void Read_ModelUnusableAsName_NoModelButOtherFactsRead(string value)
    {
        var facts = Read($$"""{"model":{{value}},"stream":false}""");

        Assert.True(facts.IsJsonObject);
        Assert.Null(facts.Model);
        Assert.False(facts.HasModelToken);
        Assert.False(facts.Stream);
    }

    [Fact]
    public void Read_ModelAtAndOverTheLengthCap_KeptOrDropped()
    {
        var atCap = new string('m', RequestFacts.MaxModelLength);
        var overCap = atCap + "m";

        Assert.Equal(atCap, Read($$"""{"model":"{{atCap}}"}""").Model);
        var over = Read($$"""{"model":"{{overCap}}","stream":true}""");
        Assert.Null(over.Model);
        Assert.False(over.HasModelToken);
        Assert.True(over.Stream);
    }

    [Fact]
    public void Read_EscapedModelWithinCapAfterUnescaping_Kept()
    {
        // 256 characters written as 1536 escaped bytes: long as written, short as a name.
        var escaped = string.Concat(Enumerable.Repeat("\\u0061", RequestFacts.MaxModelLength));

        Assert.Equal(new string('a', RequestFacts.MaxModelLength), Read($$"""{"model":"{{escaped}}"}""").Model);
    }

    [Fact]
    public void Read_OtherStringsOverTheirCap_Dropped()
    {
        var atCap = new string('u', RequestFacts.MaxStringLength);
        var overCap = atCap + "u";

        var facts = Read("{\"user\":\"" + overCap + "\",\"prompt_cache_key\":\"" + atCap + "\",\"metadata\":{\"user_id\":\"" + overCap + "\"}}");

        Assert.Null(facts.User);
        Assert.Equal(atCap, facts.PromptCacheKey);
        Assert.Null(facts.MetadataUserId);
    }

    [Fact]
    public void Read_HugeStringsElsewhere_FactsReadWithBoundedAllocation()
    {
        var huge = new string('x', 8 * 1024 * 1024);
        var body = Encoding.UTF8.GetBytes($$"""{"messages":[{"role":"user","content":"{{huge}}"}],"{{huge}}":1,"model":"gpt-4o","user":"{{huge}}"}""");
        RequestFacts.Read(body); // warm up

        var before = GC.GetAllocatedBytesForCurrentThread();
        var facts = RequestFacts.Read(body);
        var allocated = GC.GetAllocatedBytesForCurrentThread() - before;

        Assert.Equal("gpt-4o", facts.Model);
        Assert.Null(facts.User);
        Assert.True(allocated < 1024, $"allocated {allocated} bytes");
    }

    [Theory]
    [InlineData("\"true\"")]
    [InlineData("1")]
    [InlineData("null")]
    [InlineData("{}")]
    public void Read_StreamNotABoolean_Null(string value) =>
        Assert.Null(Read($$"""{"stream":{{value}},"model":"m"}""").Stream);

    [Theory]
    [InlineData("{\"max_tokens\":100,\"max_completion_tokens\":200}", 200L)]
    [InlineData("{\"max_output_tokens\":300,\"max_tokens\":100}", 300L)]
    [InlineData("{\"max_tokens\":100,\"max_tokens\":50}", 50L)] // same key: last wins
    [InlineData("{\"max_tokens\":0}", 0L)]
    [InlineData("{\"max_tokens\":9223372036854775807}", long.MaxValue)]
    [InlineData("{\"max_tokens\":-1}", null)]
    [InlineData("{\"max_tokens\":1.5}", null)]
    [InlineData("{\"max_tokens\":1e3}", null)]
    [InlineData("{\"max_tokens\":99999999999999999999}", null)]
    [InlineData("{\"max_tokens\":\"100\"}", null)]
    [InlineData("{\"max_tokens\":null}", null)]
    [InlineData("{\"max_tokens\":[100]}", null)]
    [InlineData("{\"max_tokens\":-1,\"max_completion_tokens\":64}", 64L)]
    public void Read_MaxTokenKeys_LargestValidCount(string body, long? expected) =>
        Assert.Equal(expected, Read(body).MaxOutputTokens);

    [Theory]
    [InlineData("{\"stream_options\":{\"include_usage\":false}}", false)]
    [InlineData("{\"stream_options\":{\"include_usage\":\"true\"}}", null)]
    [InlineData("{\"stream_options\":{\"x\":{\"include_usage\":true}}}", null)]
    [InlineData("{\"stream_options\":true}", null)]
    [InlineData("{\"stream_options\":[{\"include_usage\":true}]}", null)]
    [InlineData("{\"stream_options\":null,\"model\":\"m\"}", null)]
    public void Read_StreamOptions_IncludeUsageOnlyAsBooleanOneLevelIn(string body, bool? expected)
    {
        var facts = Read(body);

        Assert.True(facts.IsJsonObject);
        Assert.Equal(expected, facts.IncludeUsage);
    }

    [Theory]
    [InlineData("{\"metadata\":{\"user_id\":42}}")]
    [InlineData("{\"metadata\":\"user_id\"}")]
    [InlineData("{\"metadata\":{\"inner\":{\"user_id\":\"x\"}}}")]
    [InlineData("{\"user_id\":\"x\"}")]
    public void Read_MetadataUserIdMissingOrNotAString_Null(string body) =>
        Assert.Null(Read(body).MetadataUserId);

    [Fact]
    public void Read_OneFactPerKeyEvenWithManyOtherKeys_AllFound()
    {
        var others = string.Concat(Enumerable.Range(0, 500).Select(i => $"\"k{i}\":{{\"model\":\"no\",\"v\":[{i},\"s\"]}},"));

        var facts = Read("{" + others + "\"model\":\"gpt-4o\",\"stream\":true}");

        Assert.Equal("gpt-4o", facts.Model);
        Assert.True(facts.Stream);
    }

    // ---- fuzz ----------------------------------------------------------------------------------

    /// <summary>Seeded random byte edits of real bodies: Read never throws, and whenever it reports a model token,
    /// that token is a JSON string in the body whose value is the model.</summary>
    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    public void Read_RandomlyDamagedBodies_NeverThrowAndTokenAlwaysMatchesModel(int seed)
    {
        var random = new Random(seed);
        byte[][] samples = [.. new[] { OpenAiChat, OpenAiResponses, OpenAiEmbeddings, OpenAiCompletions, AnthropicMessages }.Select(Encoding.UTF8.GetBytes)];
        byte[] interesting = [.. "{}[]\",:\\u0 \n"u8, 0xEF, 0xBB, 0xBF, 0x80, 0xFF];
        var withModel = 0;

        for (var run = 0; run < 3000; run++)
        {
            var body = samples[random.Next(samples.Length)].ToArray();
            var edits = random.Next(1, 4);
            for (var e = 0; e < edits; e++)
            {
                var at = random.Next(body.Length);
                body[at] = random.Next(2) == 0 ? interesting[random.Next(interesting.Length)] : (byte)random.Next(256);
            }

            var facts = RequestFacts.Read(body);

            if (!facts.HasModelToken) continue;
            withModel++;
            var reader = new Utf8JsonReader(body.AsSpan(facts.ModelTokenOffset, facts.ModelTokenLength));
            Assert.True(reader.Read());
            Assert.Equal(JsonTokenType.String, reader.TokenType);
            Assert.Equal(facts.Model, reader.GetString());
        }
        Assert.True(withModel > 100, $"only {withModel} damaged bodies kept a model");
    }
}
