using System.Buffers;
using System.Text;
using LLMProxy.Mock;
using LLMProxy.Tests.Infrastructure;

namespace LLMProxy.Tests.Mock;

public sealed class MockHandlerTests
{
    private static MockHandler.ChatRequest Parse(string body) =>
        MockHandler.ParseChatRequest(new ReadOnlySequence<byte>(Encoding.UTF8.GetBytes(body)));

    [Fact]
    public void ParseChatRequest_ModelAndStreamAfterNestedValues_AreFound()
    {
        var chat = Parse("""{"messages":[{"role":"user","content":"{\"model\":\"inner\"}"}],"model":"outer","stream":true}""");

        Assert.Equal("outer", chat.Model.ToString());
        Assert.True(chat.Stream);
    }

    [Fact]
    public void ParseChatRequest_StreamFalseOrMissing_IsNotStreaming()
    {
        Assert.False(Parse("""{"model":"m","stream":false}""").Stream);
        Assert.False(Parse("""{"model":"m"}""").Stream);
    }

    [Fact]
    public void ParseChatRequest_TruncatedJson_KeepsWhatWasReadBeforeTheError()
    {
        var chat = Parse("""{"model":"m","stream":true,"messages":[{"role":""");

        Assert.Equal("m", chat.Model.ToString());
        Assert.True(chat.Stream);
    }

    [Fact]
    public void ParseChatRequest_BodySplitAcrossSegments_IsParsed()
    {
        byte[] bytes = Encoding.UTF8.GetBytes("""{"stream":true,"model":"split-model"}""");
        var chat = MockHandler.ParseChatRequest(Segments.Split(bytes, 20));

        Assert.Equal("split-model", chat.Model.ToString());
        Assert.True(chat.Stream);
        Assert.Equal(bytes.Length, chat.BodyLength);
    }

    [Fact]
    public void Payloads_StreamedWordsConcatenated_EqualNonStreamedContent()
    {
        string content = Encoding.UTF8.GetString(MockPayloads.Content(12));

        Assert.Equal("This is a streamed answer from the LLMProxy mock upstream. This is", content);
    }
}
