using System.Buffers;
using System.Text;
using LLMProxy.Mock;

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
        var first = new Segment(bytes.AsMemory(0, 20));
        var last = first.Append(bytes.AsMemory(20));

        var chat = MockHandler.ParseChatRequest(new ReadOnlySequence<byte>(first, 0, last, last.Memory.Length));

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

    private sealed class Segment : ReadOnlySequenceSegment<byte>
    {
        public Segment(ReadOnlyMemory<byte> memory) => Memory = memory;

        public Segment Append(ReadOnlyMemory<byte> memory)
        {
            var next = new Segment(memory) { RunningIndex = RunningIndex + Memory.Length };
            Next = next;
            return next;
        }
    }
}
